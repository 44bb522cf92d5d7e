// Serving profiles from synthetic gguf_info and hardware_info values: the model shape and its
// fallbacks, the KV cache formula against hand computations, the compute estimate against
// llama.cpp's reported buffer sizes, the three statuses (a low_memory change must fit when
// applied and be the largest that does), and the pick rule.

#include "store/profiles.h"
#include "synthetic_model.h"

#include <gtest/gtest.h>

#include <string>

using namespace inferbox;
using namespace inferbox::synthetic;

namespace {

const model_profile &get(const profile_set &set, const std::string &name) {
    auto i = find_profile(set, name);
    if (!i) {
        throw std::runtime_error("no profile " + name);
    }
    return set.profiles[*i];
}

} // namespace

TEST(profiles, shape_reads_metadata_and_defaults) {
    model_shape m = model_shape_of(make_model({}), cpu_isa{});
    EXPECT_TRUE(m.problem.empty()) << m.problem;
    EXPECT_EQ(m.n_ctx_train, 8192u);
    EXPECT_EQ(m.n_layer, 32u);
    EXPECT_EQ(m.n_embd_head_k, 128u); // 4096 / 32
    EXPECT_EQ(m.n_embd_k_gqa(), 1024u);
    EXPECT_EQ(m.n_embd_v_gqa(), 1024u);
    EXPECT_EQ(m.n_ff, 14336u);
    EXPECT_EQ(m.n_vocab, 128256u);
    EXPECT_EQ(m.weight_bytes, 4 * gib);

    // key_length / value_length override n_embd / n_head; a missing head_count_kv means MHA.
    model_spec s;
    s.n_head_kv = 0;
    gguf_info g = make_model(s);
    g.metadata.emplace("llama.attention.key_length", u32(192));
    g.metadata.emplace("llama.attention.value_length", u32(96));
    m = model_shape_of(g, cpu_isa{});
    EXPECT_EQ(m.n_head_kv, 32u);
    EXPECT_EQ(m.n_embd_k_gqa(), 192u * 32);
    EXPECT_EQ(m.n_embd_v_gqa(), 96u * 32);
}

TEST(profiles, shape_fallbacks_for_missing_metadata) {
    model_spec s;
    s.n_ff             = 0;
    s.n_vocab          = 0;
    gguf_info        g = make_model(s);
    gguf_tensor_info up;
    up.name   = "blk.0.ffn_up.weight";
    up.n_dims = 2;
    up.dims   = {4096, 11008, 1, 1};
    gguf_tensor_info embd;
    embd.name   = "token_embd.weight";
    embd.n_dims = 2;
    embd.dims   = {4096, 32000, 1, 1};
    g.tensors.push_back(up);
    g.tensors.push_back(embd);
    const model_shape m = model_shape_of(g, cpu_isa{});
    EXPECT_TRUE(m.problem.empty()) << m.problem;
    EXPECT_EQ(m.n_ff, 11008u);
    EXPECT_EQ(m.n_vocab, 32000u);

    // Keys llama.cpp requires make the model incompatible, naming the key.
    s         = model_spec{};
    s.n_layer = 0;
    EXPECT_NE(model_shape_of(make_model(s), cpu_isa{}).problem.find("llama.block_count"), std::string::npos);
    s       = model_spec{};
    s.n_ctx = 0;
    EXPECT_NE(model_shape_of(make_model(s), cpu_isa{}).problem.find("llama.context_length"), std::string::npos);
    s              = model_spec{};
    s.architecture = "";
    EXPECT_NE(model_shape_of(make_model(s), cpu_isa{}).problem.find("general.architecture"), std::string::npos);
    s              = model_spec{};
    s.architecture = "not-a-real-arch";
    EXPECT_NE(model_shape_of(make_model(s), cpu_isa{}).problem.find("not-a-real-arch"), std::string::npos);
    EXPECT_TRUE(is_known_architecture("llama"));
    EXPECT_TRUE(is_known_architecture("qwen2"));
    EXPECT_FALSE(is_known_architecture("clip"));
    EXPECT_FALSE(is_known_architecture(""));
}

TEST(profiles, kv_cells_follow_llama_cpp_padding) {
    EXPECT_EQ(kv_cells(4096, 1), 4096u);
    EXPECT_EQ(kv_cells(100, 1), 256u);   // padded to 256
    EXPECT_EQ(kv_cells(1000, 4), 4096u); // n_ctx 4000 → 4096, per stream 1024
    EXPECT_EQ(kv_cells(100, 3), 768u);   // n_ctx 300 → 512, per stream 170 → 256, × 3
    EXPECT_EQ(kv_cells(512, 8), 4096u);
    EXPECT_EQ(kv_cells(0, 0), 256u); // non-positive values count as 1
}

TEST(profiles, kv_cache_bytes_match_a_hand_computation) {
    const model_shape m = model_shape_of(make_model({}), cpu_isa{});
    // 2 (K and V) × 32 layers × 4096 cells × 1024 (8 KV heads × 128) × 2 bytes (f16) = 512 MiB.
    EXPECT_EQ(kv_cache_bytes(m, 4096, 1, kv_cache_type::f16), 2ull * 32 * 4096 * 1024 * 2);
    EXPECT_EQ(kv_cache_bytes(m, 4096, 1, kv_cache_type::f16), 512 * mib);
    // q8_0: 34 bytes per 32 elements.
    EXPECT_EQ(kv_cache_bytes(m, 4096, 1, kv_cache_type::q8_0), 2ull * 32 * 4096 * 1024 * 34 / 32);
    // 4 slots of 2048: 8192 cells.
    EXPECT_EQ(kv_cache_bytes(m, 2048, 4, kv_cache_type::f16), 1 * gib);
    // f32: 4 bytes an element, twice f16.
    EXPECT_EQ(kv_cache_bytes(m, 4096, 1, kv_cache_type::f32), 1 * gib);

    // The stories260K shape: 5 layers, 4 KV heads of 8 → llama.cpp reports 0.31 MiB at 512 cells.
    model_spec s;
    s.n_layer              = 5;
    s.n_embd               = 64;
    s.n_head               = 8;
    s.n_head_kv            = 4;
    const model_shape tiny = model_shape_of(make_model(s), cpu_isa{});
    EXPECT_EQ(kv_cache_bytes(tiny, 512, 1, kv_cache_type::f16), 327680u); // 0.3125 MiB

    // Recurrent models keep no KV cache.
    s                       = model_spec{};
    s.architecture          = "mamba";
    const model_shape mamba = model_shape_of(make_model(s), cpu_isa{});
    EXPECT_TRUE(mamba.recurrent);
    EXPECT_EQ(kv_cache_bytes(mamba, 4096, 1, kv_cache_type::f16), 0u);
}

TEST(profiles, compute_estimate_matches_llama_cpp_buffers) {
    // The synthetic model of docs/profiles.md (896 wide, FFN 4864, 14 heads, 512-token vocabulary):
    // llama.cpp reports a 36.01 MiB compute buffer at ubatch 512, 512 cells, flash attention on,
    // and 129.26 MiB at 4096 cells without flash attention.
    const model_spec  s{.n_ctx        = 4096,
                        .n_embd       = 896,
                        .n_layer      = 24,
                        .n_head       = 14,
                        .n_head_kv    = 2,
                        .n_ff         = 4864,
                        .n_vocab      = 512,
                        .weight_bytes = 236 * mib};
    const model_shape m = model_shape_of(make_model(s), cpu_isa{});
    profile_settings  p;
    p.n_ctx_slot = 512;
    p.n_batch    = 512;
    p.n_ubatch   = 512;
    // Beside llama.cpp's compute buffer: the CPU backend's work buffer (the FFN activations
    // converted, or without flash attention and with an f16 V cache the KQ probabilities
    // converted, whichever is larger) and the logits for one slot.
    const auto extra = [](const profile_settings &x) {
        const uint64_t kq_f16 = x.flash_attn ? 0 : uint64_t(512) * 2 * 14 * uint64_t(x.n_ctx_slot);
        return std::max<uint64_t>(uint64_t(512) * 2 * 4864, kq_f16) + uint64_t(512) * 4;
    };
    const auto graph_and_kq = [&](const profile_settings &x) { return estimate_memory(m, x).compute - extra(x); };
    EXPECT_NEAR(double(graph_and_kq(p)) / mib, 36.01, 0.05);
    p.n_ctx_slot = 4096;
    p.flash_attn = false;
    EXPECT_NEAR(double(graph_and_kq(p)) / mib, 129.26, 129.26 * 0.03);

    // Without flash attention, an f16 V cache has the KQ probabilities converted to f16 for the V
    // product (the work buffer), and from some length on that outweighs the KV it saves over f32:
    // measured as 810 against 625 MiB resident at 16384 tokens (docs/benchmarks.md, "Long
    // contexts").
    profile_settings f16_off = p, f32_off = p;
    f16_off.n_ctx_slot = f32_off.n_ctx_slot = 16384;
    f32_off.kv_type                         = kv_cache_type::f32;
    EXPECT_EQ(estimate_memory(m, f16_off).compute - estimate_memory(m, f32_off).compute,
              uint64_t(512) * 2 * 14 * 16384 - uint64_t(512) * 2 * 4864); // the larger conversion replaces the FFN's
    model_spec four      = s;                                             // the 4-layer model of that measurement
    four.n_layer         = 4;
    const model_shape m4 = model_shape_of(make_model(four), cpu_isa{});
    EXPECT_GT(estimate_memory(m4, f16_off).total(), estimate_memory(m4, f32_off).total());

    // The batch is clamped to the KV cells, the ubatch to the batch (as llama.cpp does).
    profile_settings small = p;
    small.n_ctx_slot       = 256;
    small.flash_attn       = true;
    profile_settings same  = small;
    same.n_batch           = 256;
    same.n_ubatch          = 256;
    EXPECT_EQ(estimate_memory(m, small).compute, estimate_memory(m, same).compute);
}

TEST(profiles, estimate_is_monotone_and_adds_up) {
    const model_shape m = model_shape_of(make_model({}), cpu_isa{});
    profile_settings  s;
    s.n_ctx_slot            = 2048;
    const memory_estimate a = estimate_memory(m, s);
    EXPECT_EQ(a.total(), a.weights + a.kv_cache + a.compute + a.overhead);
    EXPECT_EQ(a.weights, 4 * gib);
    s.n_ctx_slot            = 4096;
    const memory_estimate b = estimate_memory(m, s);
    EXPECT_GT(b.total(), a.total());
    s.parallel              = 4;
    const memory_estimate c = estimate_memory(m, s);
    EXPECT_GT(c.total(), b.total());
    s.kv_type = kv_cache_type::q8_0;
    EXPECT_LT(estimate_memory(m, s).total(), c.total());
}

TEST(profiles, repacked_tensors_count_as_page_cache) {
    gguf_info        g = make_model({});
    gguf_tensor_info q4;
    q4.name               = "blk.0.ffn_up.weight";
    q4.n_dims             = 2;
    q4.dims               = {4096, 14336, 1, 1};
    q4.type               = 12; // Q4_K: repacked with AVX2 when the rows are a multiple of 8
    q4.n_bytes            = 100 * mib;
    gguf_tensor_info embd = q4;
    embd.name             = "token_embd.weight"; // read with get_rows: never repacked
    gguf_tensor_info odd  = q4;
    odd.name              = "blk.0.attn_q.weight";
    odd.dims              = {4096, 4100, 1, 1}; // rows not a multiple of 8
    g.tensors             = {q4, embd, odd};
    cpu_isa avx2;
    avx2.avx  = true;
    avx2.avx2 = true;
    EXPECT_EQ(model_shape_of(g, avx2).repacked_bytes, 100 * mib);
    EXPECT_EQ(model_shape_of(g, cpu_isa{}).repacked_bytes, 0u);

    model_shape      m = model_shape_of(g, avx2);
    profile_settings s;
    s.n_ctx_slot      = 1024;
    memory_estimate e = estimate_memory(m, s);
    EXPECT_EQ(e.page_cache, 100 * mib);
    EXPECT_EQ(e.peak_rss(), e.total() + 100 * mib);
    s.use_mlock = true; // pinned file pages are no longer reclaimable
    EXPECT_EQ(estimate_memory(m, s).total(), e.total() + 100 * mib);
}

TEST(profiles, budget_keeps_a_margin) {
    memory_budget b = cpu_memory_budget(make_hardware(64 * gib, 128 * gib));
    EXPECT_EQ(b.available, 64 * gib);
    EXPECT_EQ(b.margin, 2 * gib); // 5 % of 128 GiB, capped at 2 GiB
    EXPECT_EQ(b.bytes, 62 * gib);
    b = cpu_memory_budget(make_hardware(3 * gib, 4 * gib));
    EXPECT_EQ(b.margin, 256 * mib); // 5 % of 4 GiB is less than the 256 MiB floor
    EXPECT_EQ(b.bytes, 3 * gib - 256 * mib);
    b = cpu_memory_budget(make_hardware(100 * mib, 4 * gib));
    EXPECT_EQ(b.bytes, 0u);
}

TEST(profiles, all_runnable_with_plenty_of_memory) {
    const profile_set set = list_profiles(make_model({}), make_hardware());
    EXPECT_EQ(set.budget.bytes, 62 * gib);
    for (const char *name : {"cpu-latency-ctx8192", "cpu-latency-ctx8192-kvq8", "cpu-latency-ctx2048",
                             "cpu-latency-ctx2048-kvq8", "cpu-throughput-p4-ctx4096", "cpu-throughput-p4-ctx2048",
                             "cpu-throughput-p8-ctx4096", "cpu-throughput-p8-ctx2048"}) {
        const model_profile &p = get(set, name);
        EXPECT_EQ(p.status, profile_status::runnable) << name << ": " << p.detail;
        EXPECT_TRUE(p.detail.empty());
        EXPECT_EQ(p.settings.n_gpu_layers, 0);
        // Flash attention on at every length, f16 KV unless the profile is a q8_0 one.
        EXPECT_TRUE(p.settings.flash_attn) << name;
        EXPECT_NE(p.settings.kv_type, kv_cache_type::f32) << name;
        EXPECT_TRUE(p.settings.use_mmap);
    }
    EXPECT_FALSE(find_profile(set, "cpu-latency-ctx32768")); // above the trained context
    const model_profile &lat = get(set, "cpu-latency-ctx8192");
    EXPECT_EQ(lat.settings.n_threads, 8); // physical cores
    EXPECT_EQ(lat.settings.parallel, 1);
    const model_profile &thr = get(set, "cpu-throughput-p8-ctx2048");
    EXPECT_EQ(thr.settings.n_threads, 16);
    EXPECT_EQ(thr.settings.parallel, 8);
    EXPECT_EQ(thr.flavour, profile_flavour::throughput);

    const model_profile &gpu = get(set, "gpu-latency-ctx8192");
    EXPECT_EQ(gpu.status, profile_status::incompatible);
    EXPECT_NE(gpu.detail.find("no GPU"), std::string::npos);
    EXPECT_EQ(gpu.settings.n_gpu_layers, 33);
    EXPECT_TRUE(gpu.settings.flash_attn); // off the CPU it stays on

    auto pick = pick_profile(set);
    ASSERT_TRUE(pick) << pick.err().message;
    EXPECT_EQ(set.profiles[pick->index].name, "cpu-latency-ctx8192");
    EXPECT_FALSE(pick->adjusted);
    EXPECT_NE(pick->reason.find("cpu-latency-ctx8192"), std::string::npos);
    EXPECT_EQ(pick->reason.find('\n'), std::string::npos);

    auto tp = pick_profile(set, pick_goal::throughput);
    ASSERT_TRUE(tp);
    EXPECT_EQ(set.profiles[tp->index].name, "cpu-throughput-p8-ctx4096");
}

TEST(profiles, low_memory_change_fits_when_applied) {
    const gguf_info     g  = make_model({});
    const hardware_info hw = make_hardware();
    const model_shape   m  = model_shape_of(g, hw.isa);
    profile_settings    s;
    s.n_threads  = 8;
    s.n_ctx_slot = 8192;
    // A budget between the 2048- and 8192-token estimates.
    profile_settings at_2048 = s;
    at_2048.n_ctx_slot       = 2048;
    const uint64_t  budget   = (estimate_memory(m, at_2048).total() + estimate_memory(m, s).total()) / 2;
    profile_options o;
    o.budget_bytes        = budget;
    const profile_set set = list_profiles(g, hw, o);

    const model_profile &p = get(set, "cpu-latency-ctx8192");
    ASSERT_EQ(p.status, profile_status::low_memory) << p.detail;
    ASSERT_TRUE(p.fit);
    ASSERT_TRUE(p.fit_memory);
    EXPECT_EQ(p.detail, "--ctx-size " + std::to_string(p.fit->n_ctx_slot));
    EXPECT_EQ(p.fit->parallel, 1);
    // The change fits when applied, and it is the largest (multiple of 256) that does.
    EXPECT_LE(estimate_memory(m, *p.fit).total(), budget);
    EXPECT_EQ(p.fit_memory->total(), estimate_memory(m, *p.fit).total());
    profile_settings bigger = *p.fit;
    bigger.n_ctx_slot += 256;
    EXPECT_GT(estimate_memory(m, bigger).total(), budget);
    EXPECT_GE(p.fit->n_ctx_slot, 2048);
    EXPECT_LT(p.fit->n_ctx_slot, 8192);
    EXPECT_EQ(get(set, "cpu-latency-ctx2048").status, profile_status::runnable);

    // Throughput gives up slots first.
    const model_profile &t = get(set, "cpu-throughput-p8-ctx4096");
    ASSERT_EQ(t.status, profile_status::low_memory) << t.detail;
    ASSERT_TRUE(t.fit);
    EXPECT_EQ(t.detail, "--parallel " + std::to_string(t.fit->parallel));
    EXPECT_EQ(t.fit->n_ctx_slot, 4096);
    EXPECT_LE(estimate_memory(m, *t.fit).total(), budget);
    profile_settings more = *t.fit;
    more.parallel += 1;
    EXPECT_GT(estimate_memory(m, more).total(), budget);
}

TEST(profiles, throughput_falls_back_to_context_when_one_slot_is_too_many) {
    const gguf_info     g  = make_model({});
    const hardware_info hw = make_hardware();
    const model_shape   m  = model_shape_of(g, hw.isa);
    profile_settings    one;
    one.n_ctx_slot = 1024; // 1024 cells: 1 slot × 4096 needs more, 4 slots × 256 about the same
    profile_options o;
    o.budget_bytes           = estimate_memory(m, one).total() + 64 * mib;
    const profile_set    set = list_profiles(g, hw, o);
    const model_profile &t   = get(set, "cpu-throughput-p4-ctx4096");
    ASSERT_EQ(t.status, profile_status::low_memory) << t.detail;
    ASSERT_TRUE(t.fit);
    EXPECT_EQ(t.fit->parallel, 4);
    EXPECT_EQ(t.detail, "--ctx-size " + std::to_string(t.fit->n_ctx_slot));
    EXPECT_LE(estimate_memory(m, *t.fit).total(), *o.budget_bytes);
}

TEST(profiles, throughput_can_need_both_changes) {
    const gguf_info     g  = make_model({});
    const hardware_info hw = make_hardware();
    const model_shape   m  = model_shape_of(g, hw.isa);
    // A budget where 1 slot × 256 fits, 1 slot × 4096 does not, and 4 slots × 256 does not either:
    // neither change alone is enough.
    profile_settings one;
    one.n_ctx_slot        = 256;
    one.n_batch           = 1024;
    profile_settings four = one;
    four.parallel         = 4;
    const uint64_t lo     = estimate_memory(m, one).total();
    const uint64_t hi     = estimate_memory(m, four).total();
    ASSERT_LT(lo, hi);
    profile_options o;
    o.budget_bytes         = lo;
    const profile_set    s = list_profiles(g, hw, o);
    const model_profile &t = get(s, "cpu-throughput-p4-ctx4096");
    ASSERT_EQ(t.status, profile_status::low_memory) << t.detail;
    ASSERT_TRUE(t.fit);
    EXPECT_EQ(t.fit->parallel, 1);
    EXPECT_EQ(t.fit->n_ctx_slot, 256);
    EXPECT_EQ(t.detail, "--parallel 1 --ctx-size 256");
    EXPECT_LE(estimate_memory(m, *t.fit).total(), lo);
}

TEST(profiles, incompatible_reasons) {
    // Weights larger than the budget.
    profile_options o;
    o.budget_bytes  = 3 * gib;
    profile_set set = list_profiles(make_model({}), make_hardware(), o);
    for (const auto &p : set.profiles) {
        EXPECT_EQ(p.status, profile_status::incompatible) << p.name;
    }
    EXPECT_NE(get(set, "cpu-latency-ctx8192").detail.find("weights alone"), std::string::npos);
    auto pick = pick_profile(set);
    ASSERT_FALSE(pick);
    EXPECT_EQ(pick.err().code, "no_profile_fits");
    EXPECT_NE(pick.err().message.find("budget"), std::string::npos);
    EXPECT_NE(pick.err().message.find("weights"), std::string::npos);

    // Weights fit, but not even the smallest context: the numbers are in the reason.
    const model_shape m = model_shape_of(make_model({}), cpu_isa{});
    profile_settings  tiny;
    tiny.n_ctx_slot = 256;
    o.budget_bytes  = estimate_memory(m, tiny).total() - 1;
    set             = list_profiles(make_model({}), make_hardware(), o);
    EXPECT_EQ(get(set, "cpu-latency-ctx2048").status, profile_status::incompatible);
    EXPECT_NE(get(set, "cpu-latency-ctx2048").detail.find("--ctx-size 256 needs"), std::string::npos);

    // Unknown or missing architecture.
    model_spec s;
    s.architecture = "";
    set            = list_profiles(make_model(s), make_hardware());
    for (const auto &p : set.profiles) {
        EXPECT_EQ(p.status, profile_status::incompatible) << p.name;
        EXPECT_NE(p.detail.find("general.architecture"), std::string::npos);
    }
    pick = pick_profile(set);
    ASSERT_FALSE(pick);
    EXPECT_NE(pick.err().message.find("general.architecture"), std::string::npos);

    // q8_0 KV with heads not divisible by 32 (stories260K: head size 8).
    s           = model_spec{};
    s.n_embd    = 64;
    s.n_head    = 8;
    s.n_head_kv = 4;
    s.n_ctx     = 512;
    set         = list_profiles(make_model(s), make_hardware());
    EXPECT_EQ(get(set, "cpu-latency-ctx512").status, profile_status::runnable);
    const model_profile &q8 = get(set, "cpu-latency-ctx512-kvq8");
    EXPECT_EQ(q8.status, profile_status::incompatible);
    EXPECT_NE(q8.detail.find("divisible by 32"), std::string::npos);
}

TEST(profiles, pick_prefers_context_then_f16) {
    const gguf_info     g  = make_model({});
    const hardware_info hw = make_hardware();
    const model_shape   m  = model_shape_of(g, hw.isa);
    // A budget where ctx 8192 fits with q8_0 KV but not with f16.
    profile_settings f16;
    f16.n_ctx_slot      = 8192;
    profile_settings q8 = f16;
    q8.kv_type          = kv_cache_type::q8_0;
    const uint64_t lo   = estimate_memory(m, q8).total();
    const uint64_t hi   = estimate_memory(m, f16).total();
    ASSERT_LT(lo, hi);
    profile_options o;
    o.budget_bytes        = (lo + hi) / 2;
    const profile_set set = list_profiles(g, hw, o);
    EXPECT_EQ(get(set, "cpu-latency-ctx8192").status, profile_status::low_memory);
    EXPECT_EQ(get(set, "cpu-latency-ctx8192-kvq8").status, profile_status::runnable);
    auto pick = pick_profile(set);
    ASSERT_TRUE(pick);
    EXPECT_EQ(set.profiles[pick->index].name, "cpu-latency-ctx8192-kvq8");
    EXPECT_EQ(pick->settings.kv_type, kv_cache_type::q8_0);
}

TEST(profiles, pick_applies_a_fit_when_nothing_runs_as_listed) {
    const gguf_info     g  = make_model({});
    const hardware_info hw = make_hardware();
    const model_shape   m  = model_shape_of(g, hw.isa);
    profile_settings    s;
    s.n_ctx_slot = 1024;
    s.kv_type    = kv_cache_type::q8_0;
    profile_options o;
    o.budget_bytes        = estimate_memory(m, s).total(); // below every listed context (≥ 2048)
    const profile_set set = list_profiles(g, hw, o);
    for (const auto &p : set.profiles) {
        EXPECT_NE(p.status, profile_status::runnable) << p.name;
    }
    auto pick = pick_profile(set);
    ASSERT_TRUE(pick) << pick.err().message;
    EXPECT_TRUE(pick->adjusted);
    EXPECT_LE(pick->memory.total(), *o.budget_bytes);
    EXPECT_EQ(pick->memory.total(), estimate_memory(m, pick->settings).total());
    EXPECT_GE(pick->settings.n_ctx_slot, 1024); // q8_0 at 1024 fits by construction
    EXPECT_NE(pick->reason.find("--ctx-size"), std::string::npos);
}

TEST(profiles, throughput_goal_falls_back_to_latency) {
    const gguf_info     g  = make_model({});
    const hardware_info hw = make_hardware();
    const model_shape   m  = model_shape_of(g, hw.isa);
    profile_settings    s;
    s.n_ctx_slot = 2048;
    profile_options o;
    o.budget_bytes        = estimate_memory(m, s).total(); // 1 × 2048 fits; 4 × 2048 does not
    const profile_set set = list_profiles(g, hw, o);
    for (const auto &p : set.profiles) {
        if (p.flavour == profile_flavour::throughput) {
            EXPECT_NE(p.status, profile_status::runnable) << p.name;
        }
    }
    auto tp = pick_profile(set, pick_goal::throughput);
    ASSERT_TRUE(tp) << tp.err().message;
    EXPECT_EQ(set.profiles[tp->index].name, "cpu-latency-ctx2048");
    EXPECT_NE(tp->reason.find("no throughput profile fits"), std::string::npos) << tp->reason;
}

TEST(profiles, gpu_profile_with_a_device) {
    hardware_info hw = make_hardware();
    hw.gpus.push_back({"Test GPU", "CUDA", 24 * gib, 20 * gib});
    profile_set          set = list_profiles(make_model({}), hw);
    const model_profile &gpu = get(set, "gpu-latency-ctx8192");
    EXPECT_EQ(gpu.status, profile_status::runnable) << gpu.detail;
    auto pick = pick_profile(set);
    ASSERT_TRUE(pick);
    EXPECT_EQ(set.profiles[pick->index].name, "gpu-latency-ctx8192");
    EXPECT_TRUE(pick->settings.gpu);

    // A device too small for the weights.
    hw.gpus[0].free_bytes  = 2 * gib;
    hw.gpus[0].total_bytes = 4 * gib;
    set                    = list_profiles(make_model({}), hw);
    EXPECT_EQ(get(set, "gpu-latency-ctx8192").status, profile_status::incompatible);
    EXPECT_NE(get(set, "gpu-latency-ctx8192").detail.find("GPU memory budget"), std::string::npos);
    pick = pick_profile(set);
    ASSERT_TRUE(pick);
    EXPECT_FALSE(pick->settings.gpu);
}

TEST(profiles, unknown_hardware_means_no_memory) {
    const profile_set set = list_profiles(make_model({}), hardware_info{});
    EXPECT_EQ(set.budget.bytes, 0u);
    for (const auto &p : set.profiles) {
        EXPECT_EQ(p.status, profile_status::incompatible) << p.name;
        EXPECT_GE(p.settings.n_threads, 1);
    }
}

TEST(profiles, mlock_only_when_the_limit_covers_the_weights) {
    hardware_info hw = make_hardware();
    hw.memlock_limit = 8 * mib;
    EXPECT_FALSE(get(list_profiles(make_model({}), hw), "cpu-latency-ctx8192").settings.use_mlock);
    hw.memlock_limit = UINT64_MAX;
    profile_set set  = list_profiles(make_model({}), hw);
    EXPECT_TRUE(get(set, "cpu-latency-ctx8192").settings.use_mlock);
    EXPECT_FALSE(get(set, "cpu-throughput-p4-ctx4096").settings.use_mlock);
}

TEST(profiles, ladder_for_a_long_context_model) {
    model_spec s;
    s.n_ctx               = 131072;
    const profile_set set = list_profiles(make_model(s), make_hardware());
    for (const char *name : {"cpu-latency-ctx131072", "cpu-latency-ctx32768", "cpu-latency-ctx8192",
                             "cpu-latency-ctx2048", "cpu-throughput-p4-ctx4096", "cpu-throughput-p8-ctx2048"}) {
        EXPECT_TRUE(find_profile(set, name)) << name;
    }
    // 131072 tokens of KV for this shape is 16 GiB at f16. serve's auto settles f16 with flash
    // attention on the CPU at every length.
    const model_profile &longest = get(set, "cpu-latency-ctx131072");
    EXPECT_EQ(longest.settings.kv_type, kv_cache_type::f16);
    EXPECT_TRUE(longest.settings.flash_attn);
    EXPECT_EQ(longest.memory.kv_cache, 16 * gib);
    const model_profile &shortest = get(set, "cpu-latency-ctx2048");
    EXPECT_EQ(shortest.settings.kv_type, kv_cache_type::f16);
    EXPECT_TRUE(shortest.settings.flash_attn);
    // The q8_0 rung keeps q8_0, with flash attention.
    const model_profile &q8 = get(set, "cpu-latency-ctx131072-kvq8");
    EXPECT_EQ(q8.settings.kv_type, kv_cache_type::q8_0);
    EXPECT_TRUE(q8.settings.flash_attn);
    auto pick = pick_profile(set);
    ASSERT_TRUE(pick);
    EXPECT_EQ(set.profiles[pick->index].name, "cpu-latency-ctx131072");
}

TEST(profiles, names) {
    EXPECT_EQ(profile_flavour_name(profile_flavour::latency), "latency");
    EXPECT_EQ(profile_flavour_name(profile_flavour::throughput), "throughput");
    EXPECT_EQ(kv_cache_type_name(kv_cache_type::q8_0), "q8_0");
    EXPECT_EQ(kv_cache_type_name(kv_cache_type::f32), "f32");
    EXPECT_DOUBLE_EQ(kv_cache_type_size(kv_cache_type::f32), 4.0);
    EXPECT_EQ(profile_status_name(profile_status::low_memory), "low_memory");
    EXPECT_DOUBLE_EQ(kv_cache_type_size(kv_cache_type::f16), 2.0);
}

namespace {

// A model of 32 layers (4 GiB of blk.* tensors) plus a 512 MiB embedding, as the RPC tests use.
gguf_info make_split_model() {
    gguf_info        g = make_model({});
    gguf_tensor_info embd;
    embd.name       = "token_embd.weight";
    embd.n_dims     = 2;
    embd.dims       = {4096, 128256, 1, 1};
    embd.type       = 1;
    embd.n_bytes    = 512 * mib;
    embd.n_elements = embd.n_bytes / 2;
    g.tensors.push_back(embd);
    g.tensor_bytes += embd.n_bytes;
    return g;
}

hardware_info with_workers(hardware_info hw, std::initializer_list<uint64_t> free_each) {
    int i = 0;
    for (const uint64_t f : free_each) {
        hw.remote.push_back({"RPC" + std::to_string(i), "10.0.0." + std::to_string(i + 1) + ":50052", f, f});
        ++i;
    }
    return hw;
}

} // namespace

TEST(profiles, no_rpc_profiles_without_workers) {
    const profile_set set = list_profiles(make_split_model(), make_hardware());
    for (const auto &p : set.profiles) {
        EXPECT_FALSE(p.settings.rpc) << p.name;
    }
    EXPECT_EQ(rpc_layer_split(set.model, make_hardware(), set.budget, profile_settings{}), 0);
}

TEST(profiles, rpc_split_moves_layers_weights_and_kv_to_the_workers) {
    const model_shape m = model_shape_of(make_split_model(), cpu_isa{});
    EXPECT_EQ(m.layer_bytes, 4 * gib);
    profile_settings s;
    s.n_ctx_slot              = 8192;
    const memory_estimate all = estimate_memory(m, s);
    s.rpc                     = true;
    s.n_gpu_layers            = 8; // a quarter of the layers
    const memory_estimate e   = estimate_memory(m, s);
    EXPECT_EQ(e.weights, all.weights - gib);
    EXPECT_EQ(e.kv_cache, all.kv_cache - all.kv_cache / 4);
    EXPECT_EQ(e.remote, gib + all.kv_cache / 4);
    EXPECT_EQ(e.compute, all.compute);
    EXPECT_EQ(e.total() + e.remote, all.total());
    // More than the layers: the output layer still stays here.
    s.n_gpu_layers = 1000;
    EXPECT_EQ(estimate_memory(m, s).weights, all.weights - 4 * gib);
}

TEST(profiles, a_model_too_big_for_this_machine_fits_with_workers) {
    const gguf_info     g     = make_split_model();
    const hardware_info small = make_hardware(3 * gib, 4 * gib); // budget 3 GiB - 256 MiB
    const profile_set   alone = list_profiles(g, small);
    // Alone, the weights (4.5 GiB) exceed the budget whatever the context.
    EXPECT_EQ(get(alone, "cpu-latency-ctx8192").status, profile_status::incompatible);
    EXPECT_FALSE(pick_profile(alone));

    const hardware_info hw  = with_workers(small, {8 * gib, 8 * gib});
    const profile_set   set = list_profiles(g, hw);
    const auto         &rpc = get(set, "rpc-latency-ctx8192");
    ASSERT_EQ(rpc.status, profile_status::runnable) << rpc.detail;
    EXPECT_LE(rpc.memory.total(), set.budget.bytes);
    EXPECT_GT(rpc.settings.n_gpu_layers, 0);
    EXPECT_LE(rpc.settings.n_gpu_layers, 32);
    // Capacity-proportional: the workers give ~15 GiB against this machine's ~2 GiB for layers,
    // so most layers go there, and every device's share fits its free memory less the margin.
    EXPECT_GE(rpc.settings.n_gpu_layers, 24);
    for (const auto &d : hw.remote) {
        EXPECT_LE(rpc.memory.remote / 2 + rpc.memory.compute, d.free_bytes - 409 * mib);
    }
    const auto pick = pick_profile(set);
    ASSERT_TRUE(pick) << pick.err().message;
    EXPECT_EQ(set.profiles[pick->index].name, "rpc-latency-ctx8192");
    EXPECT_NE(pick->reason.find("RPC workers"), std::string::npos) << pick->reason;
}

TEST(profiles, rpc_split_keeps_layers_here_when_the_workers_are_small) {
    const gguf_info     g   = make_split_model();
    const hardware_info hw  = with_workers(make_hardware(), {1 * gib}); // plenty here, little there
    const profile_set   set = list_profiles(g, hw);
    const auto         &rpc = get(set, "rpc-latency-ctx8192");
    ASSERT_EQ(rpc.status, profile_status::runnable) << rpc.detail;
    // ~0.75 GiB usable there against ~60 GiB here: one or two layers (each 128 MiB + KV), never more
    // than the worker can hold.
    EXPECT_GE(rpc.settings.n_gpu_layers, 1);
    EXPECT_LE(rpc.settings.n_gpu_layers, 5);
}

TEST(profiles, rpc_profile_names_the_device_that_cannot_hold_its_share) {
    const model_shape   m  = model_shape_of(make_split_model(), cpu_isa{});
    const hardware_info hw = with_workers(make_hardware(3 * gib, 4 * gib), {512 * mib});
    profile_settings    s;
    s.rpc                 = true;
    s.n_ctx_slot          = 8192;
    s.n_gpu_layers        = 28;
    const model_profile p = evaluate_profile(m, hw, cpu_memory_budget(hw), "custom", profile_flavour::latency, s);
    EXPECT_EQ(p.status, profile_status::incompatible);
    EXPECT_NE(p.detail.find("RPC device RPC0 (10.0.0.1:50052) would hold"), std::string::npos) << p.detail;
    // And without workers at all:
    const model_profile none =
        evaluate_profile(m, make_hardware(), cpu_memory_budget(make_hardware()), "custom", profile_flavour::latency, s);
    EXPECT_EQ(none.status, profile_status::incompatible);
    EXPECT_NE(none.detail.find("serve --rpc"), std::string::npos);
}

namespace {

std::string options_text(const std::vector<attention_option> &v) {
    std::string out;
    for (const auto &o : v) {
        out += (out.empty() ? "" : " ") + std::string(kv_cache_type_name(o.kv_type)) + (o.flash_attn ? "+fa" : "");
    }
    return out;
}

} // namespace

TEST(profiles, attention_candidates_by_request_and_device) {
    using k            = kv_cache_type;
    using site         = attention_site;
    const auto none_kv = std::optional<k>{};
    const auto none_fa = std::optional<bool>{};
    const auto cands   = [](std::optional<k> kv, std::optional<bool> fa, site where) {
        return options_text(attention_candidates(kv, fa, where));
    };
    // The CPU: f16 with flash attention (the smallest estimate and, with patch 0005, the fastest).
    EXPECT_EQ(cands(none_kv, none_fa, site::cpu), "f16+fa");
    EXPECT_EQ(cands(none_kv, true, site::cpu), "f16+fa"); // f32 gains nothing with flash attention
    EXPECT_EQ(cands(k::f16, none_fa, site::cpu), "f16+fa");
    EXPECT_EQ(cands(k::f32, none_fa, site::cpu), "f32+fa");
    EXPECT_EQ(cands(k::f32, true, site::cpu), "f32+fa"); // asked for: honoured
    EXPECT_EQ(cands(k::f32, false, site::cpu), "f32");
    // Flash attention off on the CPU: f32 first (no f16 conversions in the products), then half the KV.
    EXPECT_EQ(cands(none_kv, false, site::cpu), "f32 f16");
    EXPECT_EQ(cands(k::f16, false, site::cpu), "f16");
    EXPECT_EQ(cands(k::q8_0, none_fa, site::cpu), "q8_0+fa");
    EXPECT_EQ(cands(k::q8_0, false, site::cpu), "q8_0"); // kept, so that evaluate_profile() refuses it
    // Heads the tiled kernel cannot take: f32 without flash attention first, then f16 with it.
    EXPECT_EQ(cands(none_kv, none_fa, site::cpu_untiled), "f32 f16+fa");
    EXPECT_EQ(cands(none_kv, true, site::cpu_untiled), "f16+fa");
    EXPECT_EQ(cands(none_kv, false, site::cpu_untiled), "f32 f16");
    EXPECT_EQ(cands(k::f16, none_fa, site::cpu_untiled), "f16+fa");
    EXPECT_EQ(cands(k::f32, none_fa, site::cpu_untiled), "f32 f32+fa");
    EXPECT_EQ(cands(k::q8_0, none_fa, site::cpu_untiled), "q8_0+fa");
    // A GPU or RPC workers: f16 with flash attention, and no f32 unless asked for.
    EXPECT_EQ(cands(none_kv, none_fa, site::accelerator), "f16+fa");
    EXPECT_EQ(cands(none_kv, false, site::accelerator), "f16");
    EXPECT_EQ(cands(k::f32, none_fa, site::accelerator), "f32+fa");
    EXPECT_EQ(cands(k::q8_0, true, site::accelerator), "q8_0+fa");
}

TEST(profiles, the_tiled_flash_attention_kernel_takes_heads_of_whole_registers) {
    model_shape m;
    m.n_head        = 14; // Qwen2.5-0.5B: 14 query heads on 2 KV heads of 64
    m.n_head_kv     = 2;
    m.n_embd_head_v = 64;
    EXPECT_EQ(cpu_attention_site(m), attention_site::cpu);
    m.n_embd_head_v = 80; // 5 AVX-512 registers
    EXPECT_EQ(cpu_attention_site(m), attention_site::cpu);
    m.n_head        = 8; // stories260K: 8 heads of 8, 4 KV heads
    m.n_head_kv     = 4;
    m.n_embd_head_v = 8;
    EXPECT_EQ(cpu_attention_site(m), attention_site::cpu_untiled);
    m.n_embd_head_v = 128;
    m.n_head        = 128; // 128 query heads on one KV head: more than a tile's 64 rows
    m.n_head_kv     = 1;
    EXPECT_EQ(cpu_attention_site(m), attention_site::cpu_untiled);
    m.n_head    = 12;
    m.n_head_kv = 5; // not a whole group per KV head
    EXPECT_EQ(cpu_attention_site(m), attention_site::cpu_untiled);
    m.n_head_kv = 0; // unknown
    EXPECT_EQ(cpu_attention_site(m), attention_site::cpu_untiled);
}

TEST(profiles, context_or_trained_resolves_zero) {
    model_shape m;
    m.n_ctx_train = 32768;
    EXPECT_EQ(context_or_trained(0, m), 32768);
    EXPECT_EQ(context_or_trained(-1, m), 32768);
    EXPECT_EQ(context_or_trained(2048, m), 2048);
    m.n_ctx_train = 0; // unknown: at least one cell
    EXPECT_EQ(context_or_trained(0, m), 1);
}

TEST(profiles, attention_options_fall_back_to_what_fits) {
    // 32 layers, 8 KV heads of 128, 8192 tokens: KV 1 GiB at f16, 2 GiB at f32. Without flash
    // attention the compute buffer holds a ubatch's KQ scores: 512 × 8192 × 32 heads × 4 bytes.
    const model_shape m = model_shape_of(make_model({}), cpu_isa{});
    profile_settings  s;
    s.n_threads    = 8;
    s.parallel     = 1;
    s.n_ctx_slot   = 8192;
    const auto off = attention_candidates(std::nullopt, false, attention_site::cpu); // f32, then f16, both without
    const auto o   = attention_candidates(std::nullopt, std::nullopt, attention_site::cpu); // auto: f16 with it
    const auto at  = [&](kv_cache_type kv, bool fa) {
        profile_settings t = s;
        t.kv_type          = kv;
        t.flash_attn       = fa;
        return estimate_memory(m, t).total();
    };
    const uint64_t f32_off = at(kv_cache_type::f32, false), f16_off = at(kv_cache_type::f16, false),
                   f16_on = at(kv_cache_type::f16, true);
    ASSERT_GT(f32_off, f16_off);
    ASSERT_GT(f16_off, f16_on);
    const hardware_info hw        = make_hardware();
    const auto          budget_of = [](uint64_t b) { return memory_budget{b, 0, b}; };

    model_profile p = evaluate_attention_options(m, hw, budget_of(f32_off), "custom", profile_flavour::latency, s, off);
    EXPECT_EQ(p.status, profile_status::runnable);
    EXPECT_EQ(p.settings.kv_type, kv_cache_type::f32);
    EXPECT_FALSE(p.settings.flash_attn);
    EXPECT_EQ(p.name, "custom");

    p = evaluate_attention_options(m, hw, budget_of(f32_off - 1), "custom", profile_flavour::latency, s, off);
    EXPECT_EQ(p.status, profile_status::runnable);
    EXPECT_EQ(p.settings.kv_type, kv_cache_type::f16);
    EXPECT_FALSE(p.settings.flash_attn);

    // With flash attention off by request, nothing smaller is left: low_memory.
    p = evaluate_attention_options(m, hw, budget_of(f16_off - 1), "custom", profile_flavour::latency, s, off);
    EXPECT_EQ(p.status, profile_status::low_memory);
    EXPECT_FALSE(p.settings.flash_attn);

    // Auto fits where flash attention off does not.
    p = evaluate_attention_options(m, hw, budget_of(f16_off - 1), "custom", profile_flavour::latency, s, o);
    EXPECT_EQ(p.status, profile_status::runnable);
    EXPECT_EQ(p.settings.kv_type, kv_cache_type::f16);
    EXPECT_TRUE(p.settings.flash_attn);

    // Nothing fits: the last (smallest) option, with the change that makes it fit.
    p = evaluate_attention_options(m, hw, budget_of(f16_on - 1), "custom", profile_flavour::latency, s, o);
    EXPECT_EQ(p.status, profile_status::low_memory);
    EXPECT_TRUE(p.settings.flash_attn);
    EXPECT_NE(p.detail.find("--ctx-size"), std::string::npos) << p.detail;
}

TEST(profiles, draft_model_estimate_follows_the_target_settings) {
    // The draft's own trained context (2048) does not matter: the target's does.
    const model_spec  ds{.n_ctx        = 2048,
                         .n_embd       = 1024,
                         .n_layer      = 8,
                         .n_head       = 16,
                         .n_head_kv    = 4,
                         .n_ff         = 4096,
                         .weight_bytes = 256 * mib};
    const model_shape d      = model_shape_of(make_model(ds), cpu_isa{});
    const model_shape target = model_shape_of(make_model({}), cpu_isa{}); // trained context 8192
    profile_settings  t;
    t.n_threads             = 4;
    t.parallel              = 8;
    t.n_ctx_slot            = 8192;
    t.n_batch               = 4; // fewer than the slots: the draft still takes one token per slot
    t.n_ubatch              = 4;
    t.kv_type               = kv_cache_type::f32;
    t.flash_attn            = false;
    t.use_mlock             = true;
    const memory_estimate e = estimate_draft_memory(d, target, t);

    profile_settings expect = t;
    expect.n_batch          = 8;
    expect.n_ubatch         = 8;
    expect.use_mlock        = false;
    const memory_estimate x = estimate_memory(d, expect);
    EXPECT_EQ(e.total(), x.total());
    // 8 slots × 8192 tokens of the target's context, f32 (4 bytes), K and V of 4 heads × 64.
    EXPECT_EQ(e.kv_cache, 2ull * 8 * 8 * 8192 * 256 * 4);
    EXPECT_EQ(e.weights, 256 * mib); // not pinned: mlock is the target's

    // The served model's budget sets the draft's part aside: a budget that holds the served model
    // alone holds it no longer, and the same budget plus the draft's part does.
    const model_shape target_m = target;
    t.use_mlock                = false;
    const uint64_t alone       = estimate_memory(target_m, t).total();
    const auto     budget_of   = [](uint64_t b) { return memory_budget{b, 0, b}; };
    const auto     with_draft  = [&](uint64_t b) {
        return evaluate_attention_options(target_m, make_hardware(), budget_of(b), "custom", profile_flavour::latency,
                                               t, {{kv_cache_type::f32, false}}, &d)
            .status;
    };
    EXPECT_EQ(with_draft(alone), profile_status::low_memory);
    EXPECT_EQ(with_draft(alone + e.total()), profile_status::runnable);
    EXPECT_EQ(with_draft(alone + e.total() - 1), profile_status::low_memory);

    // A q8_0 target's draft keeps f16 KV (its head size may not hold q8_0 blocks).
    profile_settings q8  = t;
    q8.kv_type           = kv_cache_type::q8_0;
    q8.flash_attn        = true;
    profile_settings f16 = expect;
    f16.kv_type          = kv_cache_type::f16;
    f16.flash_attn       = true;
    EXPECT_EQ(estimate_draft_memory(d, target, q8).kv_cache, estimate_memory(d, f16).kv_cache);

    // An RPC target keeps its draft here: nothing remote.
    t.rpc          = true;
    t.n_gpu_layers = 16;
    EXPECT_EQ(estimate_draft_memory(d, target, t).remote, 0u);
    EXPECT_EQ(estimate_draft_memory(d, target, t).kv_cache, e.kv_cache);

    // No context given: the served model's trained one (8192 here), not the draft's (2048).
    t.n_ctx_slot = 0;
    EXPECT_EQ(estimate_draft_memory(d, target, t).kv_cache, e.kv_cache);
}

TEST(profiles, http_threads_are_a_quarter_of_the_usable_cpus_from_1_to_4) {
    hardware_info hw = make_hardware();
    const auto    at = [&](uint32_t cpus) {
        hw.n_threads_effective = cpus;
        return http_threads_for(hw);
    };
    EXPECT_EQ(at(1), 1); // the 2-core machines this project is measured on: one I/O thread
    EXPECT_EQ(at(2), 1);
    EXPECT_EQ(at(7), 1);
    EXPECT_EQ(at(8), 2);
    EXPECT_EQ(at(12), 3);
    EXPECT_EQ(at(16), 4);
    EXPECT_EQ(at(256), 4);
}

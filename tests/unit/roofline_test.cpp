// The decode roofline: the prediction from measured limits (pure arithmetic over a model's
// tensors), the bandwidth probe's basic sanity, and the default latency targets derived from the
// prediction (store/latency_targets.h).
#include "store/latency_targets.h"
#include "store/roofline.h"

#include <gtest/gtest.h>

using namespace inferbox;

namespace {

gguf_tensor_info tensor(const std::string &name, uint32_t type, uint64_t bytes) {
    gguf_tensor_info t;
    t.name    = name;
    t.type    = type;
    t.n_bytes = bytes;
    return t;
}

constexpr uint32_t f16  = 1;
constexpr uint32_t q8_0 = 8;
constexpr uint32_t q4_k = 12;

} // namespace

TEST(Roofline, each_type_runs_at_the_lower_of_its_two_limits) {
    gguf_info model;
    model.tensors = {tensor("token_embd.weight", q8_0, 300'000'000), // looked up, not read whole
                     tensor("blk.0.attn_q.weight", q8_0, 1'000'000'000), tensor("output.weight", f16, 500'000'000)};
    machine_roofline m;
    m.read_bytes_per_s   = 10e9;
    m.kernel_bytes_per_s = {{"q8_0", 5e9}, {"f16", 20e9}};
    const auto p         = predict_decode(model, m);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->bytes_per_token, 1'500'000'000U);
    EXPECT_NEAR(p->tokens_per_s, 1.0 / (1e9 / 5e9 + 0.5e9 / 10e9), 1e-9); // q8_0 kernel-bound, f16 memory-bound
    EXPECT_NEAR(p->bandwidth_tps, 1.0 / (1.5e9 / 10e9), 1e-9);
    EXPECT_NEAR(p->kernel_tps, 1.0 / (1e9 / 5e9 + 0.5e9 / 20e9), 1e-9);
    EXPECT_EQ(p->bound, "mixed");
    EXPECT_TRUE(p->unmeasured.empty());
}

TEST(Roofline, tied_embeddings_are_read_whole_and_unmeasured_types_fall_back_to_bandwidth) {
    gguf_info model;
    model.tensors = {tensor("token_embd.weight", f16, 200'000'000), tensor("blk.0.ffn_up.weight", q4_k, 800'000'000)};
    machine_roofline m;
    m.read_bytes_per_s   = 10e9;
    m.kernel_bytes_per_s = {{"f16", 40e9}};
    const auto p         = predict_decode(model, m);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->bytes_per_token, 1'000'000'000U);
    EXPECT_NEAR(p->tokens_per_s, 10.0, 1e-9);
    EXPECT_EQ(p->kernel_tps, 0); // q4_k was not measured
    EXPECT_EQ(p->bound, "bandwidth");
    ASSERT_EQ(p->unmeasured.size(), 1U);
    EXPECT_EQ(p->unmeasured[0], "q4_k");

    m.kernel_bytes_per_s["q4_k"] = 4e9; // now the kernel binds everything that is not f16... and f16 is fast
    EXPECT_EQ(predict_decode(model, m)->bound, "mixed");
    m.kernel_bytes_per_s["f16"] = 5e9;
    EXPECT_EQ(predict_decode(model, m)->bound, "kernel");
}

TEST(Roofline, prompt_tokens_pass_through_every_layer_weight_at_the_batched_rate) {
    gguf_info model;
    model.tensors = {tensor("token_embd.weight", q8_0, 300'000'000), tensor("blk.0.attn_q.weight", q8_0, 1'000'000'000),
                     tensor("blk.0.ffn_up.weight", q4_k, 2'000'000'000), tensor("output.weight", f16, 500'000'000)};
    machine_roofline m;
    m.read_bytes_per_s   = 10e9;
    m.kernel_bytes_per_s = {{"q8_0", 5e9}, {"q4_k", 4e9}, {"f16", 20e9}};
    EXPECT_EQ(predict_decode(model, m)->prefill_tps, 0); // no batched figures: no prompt prediction

    // The output matrix (the last prompt token only) and the embedding lookup are not per-token
    // prompt work, so f16's batched rate is not needed.
    m.batch_kernel_bytes_per_s = {{"q8_0", 100e9}, {"q4_k", 50e9}};
    const auto p               = predict_decode(model, m);
    ASSERT_TRUE(p.has_value());
    EXPECT_NEAR(p->prefill_tps, 1.0 / (1e9 / 100e9 + 2e9 / 50e9), 1e-9);              // 20 tokens/s
    EXPECT_NEAR(p->tokens_per_s, 1.0 / (1e9 / 5e9 + 2e9 / 4e9 + 0.5e9 / 10e9), 1e-9); // decode unchanged

    // Tied embeddings: the table is the output matrix, still applied to the last token only.
    model.tensors.pop_back();
    EXPECT_NEAR(predict_decode(model, m)->prefill_tps, 20, 1e-9);
    // A layer type without a batched figure: no prompt prediction rather than a partial one.
    m.batch_kernel_bytes_per_s.erase("q4_k");
    EXPECT_EQ(predict_decode(model, m)->prefill_tps, 0);
}

TEST(Roofline, nothing_to_predict_without_a_bandwidth_or_weights) {
    gguf_info        model;
    machine_roofline m;
    m.read_bytes_per_s = 10e9;
    EXPECT_FALSE(predict_decode(model, m).has_value());
    model.tensors      = {tensor("blk.0.attn_q.weight", q8_0, 100)};
    m.read_bytes_per_s = 0;
    EXPECT_FALSE(predict_decode(model, m).has_value());
}

TEST(Roofline, the_bandwidth_probe_reads_its_whole_buffer_for_its_window) {
    const auto b = measure_read_bandwidth(1, uint64_t{8} << 20, std::chrono::milliseconds(40));
    EXPECT_EQ(b.threads, 1U);
    EXPECT_EQ(b.buffer_bytes, uint64_t{8} << 20);
    EXPECT_GE(b.seconds, 0.04);
    EXPECT_GT(b.bytes_per_s, 1e8); // any machine reads more than 100 MB/s
}

// --- default latency targets from the prediction (store/latency_targets.h) ---------------------

namespace {

decode_prediction prediction(double tokens_per_s, double kernel_tps, double prefill_tps = 0) {
    decode_prediction p;
    p.tokens_per_s = tokens_per_s;
    p.kernel_tps   = kernel_tps;
    p.prefill_tps  = prefill_tps;
    return p;
}

} // namespace

TEST(LatencyTargets, itl_is_headroom_times_the_decode_step_at_the_profiles_parallelism) {
    // One token: 20 ms by the roofline, 12.5 ms through the kernels alone.
    const auto one = targets_from_prediction(prediction(50, 80), 1, 4096, "measured");
    EXPECT_EQ(one.basis, "measured");
    EXPECT_DOUBLE_EQ(one.step_ms, 20); // one stream: the roofline
    EXPECT_EQ(one.itl_ms, 50);         // 2 × 20 = 40, under the 50 ms floor
    const auto eight = targets_from_prediction(prediction(50, 80), 8, 4096, "measured");
    EXPECT_DOUBLE_EQ(eight.step_ms, 100); // 8 streams × 12.5 ms of kernel work
    EXPECT_EQ(eight.itl_ms, 200);
    // Without every kernel measured, the roofline stands in for the kernels: 8 × 20 ms.
    const auto unmeasured = targets_from_prediction(prediction(50, 0), 8, 4096, "measured");
    EXPECT_DOUBLE_EQ(unmeasured.step_ms, 160);
    EXPECT_EQ(unmeasured.itl_ms, 320);
}

TEST(LatencyTargets, ttft_is_headroom_times_a_typical_prompt_and_one_step) {
    constexpr int32_t eight_streams_itl_ms = 200; // the prompt's rate leaves the decode step alone
    const auto        d                    = targets_from_prediction(prediction(50, 80), 8, 4096, "measured");
    EXPECT_EQ(d.prompt_tokens, 512); // capped at the typical prompt
    EXPECT_FALSE(d.prefill_batched); // no batched figure: the matrix-vector kernels' rate
    EXPECT_DOUBLE_EQ(d.prefill_ms, 512 * 12.5);
    EXPECT_EQ(d.ttft_ms, 2 * (6400 + 100));
    // With the batched kernels measured (400 prompt tokens/s): 2.5 ms a prompt token.
    const auto batched = targets_from_prediction(prediction(50, 80, 400), 8, 4096, "measured");
    EXPECT_TRUE(batched.prefill_batched);
    EXPECT_DOUBLE_EQ(batched.prefill_ms, 512 * 2.5);
    EXPECT_EQ(batched.ttft_ms, 2 * (1280 + 100));
    EXPECT_EQ(batched.itl_ms, eight_streams_itl_ms);
    // A short context: half of it.
    const auto short_ctx = targets_from_prediction(prediction(50, 80), 1, 300, "measured");
    EXPECT_EQ(short_ctx.prompt_tokens, 150);
    EXPECT_EQ(short_ctx.ttft_ms, static_cast<int32_t>(2 * (150 * 12.5 + 20)));
}

TEST(LatencyTargets, floors_rounding_up_and_the_engines_cap) {
    const auto fast = targets_from_prediction(prediction(10'000, 20'000), 4, 512, "fallback");
    EXPECT_EQ(fast.itl_ms, 50);
    EXPECT_EQ(fast.ttft_ms, 250);
    EXPECT_EQ(fast.basis, "fallback");
    // 2 × 25.1 ms = 50.2 ms: a target is never tighter than its formula.
    EXPECT_EQ(targets_from_prediction(prediction(1000 / 25.1, 0), 1, 512, "measured").itl_ms, 51);
    const auto slow = targets_from_prediction(prediction(1e-6, 0), 1, 4096, "measured");
    EXPECT_EQ(slow.itl_ms, k_max_target_ms);
    EXPECT_EQ(slow.ttft_ms, k_max_target_ms);
    // No prediction: no targets.
    const auto none = targets_from_prediction(prediction(0, 0), 1, 4096, "measured");
    EXPECT_EQ(none.itl_ms, 0);
    EXPECT_EQ(none.ttft_ms, 0);
    EXPECT_TRUE(none.basis.empty());
    EXPECT_FALSE(none.note.empty());
}

TEST(LatencyTargets, profile_defaults_from_the_measurement_or_the_fallback) {
    gguf_info model;
    model.tensors        = {tensor("blk.0.ffn_up.weight", f16, 1'000'000'000)};
    model.context_length = 8192;
    profile_settings s;
    s.parallel   = 1;
    s.n_threads  = 8;
    s.n_ctx_slot = 0; // the trained context

    // No measurement: 10 GB/s assumed, the kernels as fast as that: 100 ms a token.
    const auto fallback = profile_latency_defaults(model, s, nullptr);
    EXPECT_EQ(fallback.basis, "fallback");
    EXPECT_DOUBLE_EQ(fallback.decode_tokens_per_s, k_fallback_read_bytes_per_s / 1e9);
    EXPECT_EQ(fallback.itl_ms, 200);
    EXPECT_EQ(fallback.prompt_tokens, 512);
    EXPECT_EQ(fallback.ttft_ms, 2 * (512 * 100 + 100));

    // Measured on 16 threads, used by 8: both rates halve (20 → 10 GB/s, f16 kernels 40 → 20).
    machine_roofline m;
    m.threads            = 16;
    m.read_bytes_per_s   = 20e9;
    m.kernel_bytes_per_s = {{"f16", 40e9}};
    const auto measured  = profile_latency_defaults(model, s, &m);
    EXPECT_EQ(measured.basis, "measured");
    EXPECT_DOUBLE_EQ(measured.decode_tokens_per_s, 10);
    EXPECT_DOUBLE_EQ(measured.step_ms, 100);
    EXPECT_EQ(measured.itl_ms, 200);
    EXPECT_EQ(measured.ttft_ms, 2 * (512 * 50 + 100));
    // The batched rate scales the same way: 200 GB/s of f16 weights × tokens on 16 threads is
    // 100 prompt tokens/s of this 1 GB model on 8, 10 ms a token.
    m.batch_kernel_bytes_per_s = {{"f16", 200e9}};
    const auto prompt          = profile_latency_defaults(model, s, &m);
    EXPECT_TRUE(prompt.prefill_batched);
    EXPECT_DOUBLE_EQ(prompt.prefill_ms, 512 * 10.0);
    EXPECT_EQ(prompt.ttft_ms, 2 * (5120 + 100));
    m.batch_kernel_bytes_per_s.clear();
    s.n_threads    = 16; // as measured: 50 ms a token, 25 through the kernels
    s.parallel     = 4;
    const auto all = profile_latency_defaults(model, s, &m);
    EXPECT_DOUBLE_EQ(all.step_ms, 100);
    EXPECT_EQ(all.itl_ms, 200);

    // GPU and RPC profiles, and a model without weights: no defaults, and why.
    s.gpu = true;
    EXPECT_EQ(profile_latency_defaults(model, s, &m).itl_ms, 0);
    EXPECT_NE(profile_latency_defaults(model, s, &m).note.find("GPU"), std::string::npos);
    s.gpu = false;
    s.rpc = true;
    EXPECT_EQ(profile_latency_defaults(model, s, nullptr).ttft_ms, 0);
    s.rpc = false;
    EXPECT_EQ(profile_latency_defaults(gguf_info{}, s, nullptr).itl_ms, 0);
}

TEST(LatencyTargets, a_flag_wins_then_the_profile_then_none) {
    latency_defaults d;
    d.ttft_ms = 4000;
    d.itl_ms  = 120;
    d.basis   = "measured";

    auto t = settle_latency_targets(std::nullopt, std::nullopt, d);
    EXPECT_EQ(t.ttft_ms, 4000);
    EXPECT_EQ(t.itl_ms, 120);
    EXPECT_EQ(t.ttft_source, target_source::profile);
    EXPECT_EQ(t.itl_source, target_source::profile);

    t = settle_latency_targets(1500, 0, d); // an explicit 0 (off) turns its target off
    EXPECT_EQ(t.ttft_ms, 1500);
    EXPECT_EQ(t.ttft_source, target_source::flag);
    EXPECT_EQ(t.itl_ms, 0);
    EXPECT_EQ(t.itl_source, target_source::flag);

    t = settle_latency_targets(std::nullopt, 300, latency_defaults{}); // a profile without defaults
    EXPECT_EQ(t.ttft_ms, 0);
    EXPECT_EQ(t.ttft_source, target_source::none);
    EXPECT_EQ(t.itl_ms, 300);
    EXPECT_EQ(t.itl_source, target_source::flag);
    EXPECT_EQ(target_source_name(target_source::flag), "flag");
    EXPECT_EQ(target_source_name(target_source::profile), "profile");
    EXPECT_EQ(target_source_name(target_source::none), "none");
}

TEST(LatencyTargets, flag_values) {
    const auto value = [](const char *text) { return parse_target_flag(text).value().value(); };
    EXPECT_EQ(value("auto"), std::nullopt); // the profile's default
    EXPECT_EQ(value("off"), 0);
    EXPECT_EQ(value("0"), 0);
    EXPECT_EQ(value("150"), 150);
    EXPECT_EQ(value("3600000"), 3'600'000);
    for (const char *bad : {"", "3600001", "-1", "+5", "1.5", "150ms", "Auto", "none"}) {
        EXPECT_FALSE(parse_target_flag(bad).has_value()) << bad;
    }
}

namespace inferbox {
namespace {

TEST(RooflineKeepFaster, EachFigureKeepsTheFasterOfTheTwoMeasurements) {
    machine_roofline earlier;
    earlier.threads            = 2;
    earlier.read_bytes_per_s   = 28e9;
    earlier.kernel_bytes_per_s = {{"q8_0", 35e9}, {"q5_0", 18e9}, {"f16", 60e9}};
    machine_roofline busy;
    busy.threads                     = 2;
    busy.read_bytes_per_s            = 12e9;                                            // a busy minute
    busy.kernel_bytes_per_s          = {{"q8_0", 36e9}, {"q5_0", 9e9}, {"q4_k", 30e9}}; // q4_k new, f16 not run
    earlier.batch_kernel_bytes_per_s = {{"q8_0", 300e9}, {"q4_k", 200e9}};
    busy.batch_kernel_bytes_per_s    = {{"q8_0", 150e9}, {"q4_k", 250e9}};

    std::vector<std::string> kept;
    const auto               r = keep_faster(earlier, busy, &kept);
    EXPECT_EQ(r.threads, 2u);
    EXPECT_DOUBLE_EQ(r.read_bytes_per_s, 28e9);
    EXPECT_DOUBLE_EQ(r.kernel_bytes_per_s.at("q8_0"), 36e9); // the new run was faster: taken
    EXPECT_DOUBLE_EQ(r.kernel_bytes_per_s.at("q5_0"), 18e9);
    EXPECT_DOUBLE_EQ(r.kernel_bytes_per_s.at("q4_k"), 30e9);
    EXPECT_EQ(r.kernel_bytes_per_s.count("f16"), 0u); // only the types this run measured
    EXPECT_DOUBLE_EQ(r.batch_kernel_bytes_per_s.at("q8_0"), 300e9);
    EXPECT_DOUBLE_EQ(r.batch_kernel_bytes_per_s.at("q4_k"), 250e9);
    EXPECT_EQ(kept, (std::vector<std::string>{"memory read", "kernel q5_0", "batched q8_0"}));

    // Another thread count is another configuration: the new measurement stands alone.
    busy.threads = 1;
    kept.clear();
    const auto other = keep_faster(earlier, busy, &kept);
    EXPECT_DOUBLE_EQ(other.read_bytes_per_s, 12e9);
    EXPECT_TRUE(kept.empty());
}

} // namespace
} // namespace inferbox

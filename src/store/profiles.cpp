#include "store/profiles.h"

#include "common/micro_batch.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

namespace inferbox {

namespace {

constexpr uint64_t mib = uint64_t(1) << 20;
constexpr uint64_t gib = uint64_t(1) << 30;

// --- the estimate's constants (docs/profiles.md: where each comes from) ------------------------

// The process without a model: the binary's touched code and data, libraries, the HTTP and
// engine threads, ggml's thread pool. Measured (docs/profiles.md): `inferbox serve` on
// stories260K (1.1 MiB of weights) peaks at 18.6 MiB (RelWithDebInfo; Debug 19.7 MiB), of which
// about 16 MiB is not the model's. Since models load on the model host's loader thread
// (host/model_host.h), that thread's malloc arena keeps 3–5 MiB more (re-measured: 21.5 MiB on
// stories260K, +5 MiB on a 236 MiB model), hence 21.
constexpr uint64_t base_overhead_bytes = 21 * mib;
// llama.cpp's tokenizer per vocabulary entry: the token text and score, the text → id map, the
// piece cache, BPE merge ranks. Measured (docs/profiles.md): a model with Llama 3's 128256-token
// tokenizer holds about 50 MiB more anonymous memory after loading than its shape explains,
// 400 bytes per token; rounded up.
constexpr uint64_t vocab_bytes_per_token = 416;
// Each sequence's sampler keeps a candidate array of (id, logit, p) for the whole vocabulary
// (12 bytes per token) and a little more; measured: 8 slots of a 128K vocabulary add ~12 MiB.
constexpr uint64_t sampler_bytes_per_token = 16;
// llama.cpp pads the context (and, with one stream per sequence, each stream) to this many cells.
constexpr uint64_t ctx_pad = 256;
// The smallest context a fit search proposes.
constexpr int32_t min_fit_ctx = 256;

// Architectures llama.cpp knows (LLM_ARCH_NAMES in src/llama-arch.cpp of the llama.cpp that
// node-llama-cpp 3.22.1 vendors), without "clip", a multimodal projector rather than a language model.
constexpr std::string_view known_architectures[] = {
    "afmoe",
    "apertus",
    "arcee",
    "arctic",
    "arwkv7",
    "baichuan",
    "bailingmoe",
    "bailingmoe2",
    "bailingmoe3",
    "bert",
    "bitnet",
    "bloom",
    "chameleon",
    "chatglm",
    "codeshell",
    "cogvlm",
    "cohere2",
    "cohere2moe",
    "command-r",
    "dbrx",
    "deci",
    "deepseek",
    "deepseek2",
    "deepseek2-ocr",
    "deepseek32",
    "deepseek4",
    "dflash",
    "dots1",
    "dots3note",
    "dream",
    "eagle3",
    "ernie4_5",
    "ernie4_5-moe",
    "eurobert",
    "exaone",
    "exaone-moe",
    "exaone4",
    "falcon",
    "falcon-h1",
    "gemma",
    "gemma-embedding",
    "gemma2",
    "gemma3",
    "gemma3n",
    "gemma4",
    "gemma4-assistant",
    "glm-dsa",
    "glm4",
    "glm4moe",
    "gpt-oss",
    "gpt2",
    "gptj",
    "gptneox",
    "granite",
    "granite_swa",
    "granitehybrid",
    "granitemoe",
    "graniteswitch",
    "grok",
    "grovemoe",
    "hrm_text",
    "hunyuan-dense",
    "hunyuan-moe",
    "hunyuan_vl",
    "hy_v3",
    "hy_v4",
    "internlm2",
    "jais",
    "jais2",
    "jamba",
    "jina-bert-v2",
    "jina-bert-v3",
    "kimi-k3",
    "kimi-linear",
    "laguna",
    "lfm2",
    "lfm2moe",
    "llada",
    "llada-moe",
    "llama",
    "llama-embed",
    "llama4",
    "maincoder",
    "mamba",
    "mamba2",
    "maple",
    "mellum",
    "mimo2",
    "minicpm",
    "minicpm3",
    "minimax-01",
    "minimax-m2",
    "minimax-m3",
    "mistral3",
    "mistral4",
    "modern-bert",
    "mpt",
    "muse-glimmer",
    "nanbeige",
    "nemotron",
    "nemotron_h",
    "nemotron_h_moe",
    "neo-bert",
    "nomic-bert",
    "nomic-bert-moe",
    "olmo",
    "olmo2",
    "olmoe",
    "openelm",
    "orion",
    "paddleocr",
    "pangu-embedded",
    "phi2",
    "phi3",
    "phimoe",
    "plamo",
    "plamo2",
    "plamo3",
    "plm",
    "pockettts",
    "qwen",
    "qwen2",
    "qwen2moe",
    "qwen2vl",
    "qwen3",
    "qwen35",
    "qwen35moe",
    "qwen3moe",
    "qwen3next",
    "qwen3tts",
    "qwen3vl",
    "qwen3vlmoe",
    "qwen4exp",
    "refact",
    "rnd1",
    "rwkv6",
    "rwkv6qwen2",
    "rwkv7",
    "seed_oss",
    "smallthinker",
    "smollm3",
    "spark2_5",
    "stablelm",
    "starcoder",
    "starcoder2",
    "step35",
    "t5",
    "t5encoder",
    "talkie",
    "wavtokenizer-dec",
    "xverse",
};

constexpr std::string_view recurrent_architectures[] = {"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"};

constexpr std::string_view hybrid_architectures[] = {
    "jamba",      "falcon-h1",      "plamo2",    "granitehybrid", "lfm2",        "lfm2moe",
    "nemotron_h", "nemotron_h_moe", "qwen3next", "kimi-linear",   "bailingmoe3", "kimi-k3",
    "qwen35",     "qwen35moe",      "qwen4exp",  "deepseek4",     "minimax-01"};

template <size_t N> bool contains(const std::string_view (&list)[N], std::string_view s) {
    return std::find(std::begin(list), std::end(list), s) != std::end(list);
}

uint64_t pad_to(uint64_t n, uint64_t step) {
    return (n + step - 1) / step * step;
}

uint64_t sat_add(uint64_t a, uint64_t b) {
    return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max() : a + b;
}

uint64_t sat_mul(uint64_t a, uint64_t b) {
    if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) {
        return std::numeric_limits<uint64_t>::max();
    }
    return a * b;
}

// <arch>.<suffix> as a non-negative integer.
std::optional<uint64_t> arch_uint(const gguf_info &g, std::string_view suffix) {
    if (g.architecture.empty()) {
        return std::nullopt;
    }
    const gguf_value *v = g.find(g.architecture + "." + std::string(suffix));
    return v ? v->as_uint() : std::nullopt;
}

bool arch_key_is_array(const gguf_info &g, std::string_view suffix) {
    const gguf_value *v = g.architecture.empty() ? nullptr : g.find(g.architecture + "." + std::string(suffix));
    return v != nullptr && v->as_array() != nullptr;
}

const gguf_tensor_info *find_tensor(const gguf_info &g, std::string_view name) {
    for (const auto &t : g.tensors) {
        if (t.name == name) {
            return &t;
        }
    }
    return nullptr;
}

// Whether ggml's CPU backend repacks a tensor of ggml type `type` with `rows` rows (ne[1]) on a
// CPU with `isa` (ggml_repack_get_optimal_repack_type in ggml-cpu/repack.cpp).
bool cpu_repacks(uint32_t type, uint64_t rows, const cpu_isa &isa) {
    enum : uint32_t {
        q4_0   = 2,
        q8_0   = 8,
        q2_k   = 10,
        q4_k   = 12,
        q5_k   = 13,
        q6_k   = 14,
        iq4_nl = 20,
        mxfp4  = 39,
        q1_0   = 41
    };
    if (isa.avx2) {
        switch (type) {
        case q4_0:
        case q4_k:
        case iq4_nl:
        case mxfp4:
            return rows % 8 == 0;
        case q2_k:
            return isa.avx512f && rows % 8 == 0;
        default:
            return false;
        }
    }
    if (isa.neon && isa.dotprod) {
        switch (type) {
        case q4_0:
        case iq4_nl:
        case mxfp4:
        case q8_0:
        case q1_0:
            return rows % 4 == 0;
        case q4_k:
        case q5_k:
        case q6_k:
            return rows % 8 == 0;
        default:
            return false;
        }
    }
    return false;
}

std::string mib_text(uint64_t n) {
    return format_memory_size(n);
}

std::string estimate_parts(const memory_estimate &m) {
    return "weights " + mib_text(m.weights) + " + KV " + mib_text(m.kv_cache) + " + compute " + mib_text(m.compute) +
           " + overhead " + mib_text(m.overhead) + (m.draft > 0 ? " + draft model " + mib_text(m.draft) : "");
}

std::string budget_text(const memory_budget &b) {
    if (b.margin == 0) {
        return mib_text(b.bytes); // given, not detected
    }
    return mib_text(b.bytes) + " (available " + mib_text(b.available) + " - margin " + mib_text(b.margin) + ")";
}

// The part of a device's free memory a profile may use: all but 5 %, at least 256 MiB, at most 2 GiB.
uint64_t device_budget(uint64_t free_bytes, uint64_t total_bytes) {
    const uint64_t margin = std::clamp<uint64_t>(total_bytes / 20, 256 * mib, 2 * gib);
    return free_bytes > margin ? free_bytes - margin : 0;
}

// RPC profiles: why the workers' devices cannot hold their share of `e`, or empty when they can.
// Each device holds remote × its share of the free memory (llama.cpp's split) plus a compute buffer.
std::string remote_misfit(const hardware_info &hw, const memory_estimate &e) {
    uint64_t sum_free = 0;
    for (const auto &d : hw.remote) {
        sum_free = sat_add(sum_free, d.free_bytes);
    }
    if (sum_free == 0) {
        return "the RPC workers report no free memory";
    }
    for (const auto &d : hw.remote) {
        const double   share = double(d.free_bytes) / double(sum_free);
        const uint64_t need  = sat_add(uint64_t(double(e.remote) * share), e.compute);
        const uint64_t cap   = device_budget(d.free_bytes, d.total_bytes);
        if (need > cap) {
            return "RPC device " + d.name + " (" + d.endpoint + ") would hold " + format_memory_size(need) +
                   " (its share of " + format_memory_size(e.remote) + " of layers and KV, plus compute " +
                   format_memory_size(e.compute) + ") but can give " + format_memory_size(cap) + " (free " +
                   format_memory_size(d.free_bytes) + ")";
        }
    }
    return {};
}

// The largest value v in [lo, hi] (multiples of `step` from lo) for which ok(v) holds, given
// ok is monotone (true up to some point, then false); nullopt when ok(lo) is false.
template <typename F> std::optional<int32_t> largest_fitting(int32_t lo, int32_t hi, int32_t step, F &&ok) {
    if (lo > hi || !ok(lo)) {
        return std::nullopt;
    }
    int32_t good = 0, bad = (hi - lo) / step + 1; // in steps from lo: ok(lo + good*step), !ok(lo + bad*step)
    if (ok(lo + (bad - 1) * step)) {
        return lo + (bad - 1) * step;
    }
    bad -= 1;
    while (bad - good > 1) {
        const int32_t mid = good + (bad - good) / 2;
        if (ok(lo + mid * step)) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    return lo + good * step;
}

std::string profile_name(profile_flavour f, const profile_settings &s) {
    std::string name = s.gpu ? "gpu-" : (s.rpc ? "rpc-" : "cpu-");
    name += f == profile_flavour::latency ? "latency" : "throughput";
    if (f == profile_flavour::throughput) {
        name += "-p" + std::to_string(s.parallel);
    }
    name += "-ctx" + std::to_string(s.n_ctx_slot);
    if (s.kv_type == kv_cache_type::q8_0) {
        name += "-kvq8";
    } else if (s.kv_type == kv_cache_type::f32) {
        name += "-kvf32";
    }
    return name;
}

} // namespace

std::string_view profile_flavour_name(profile_flavour f) {
    return f == profile_flavour::latency ? "latency" : "throughput";
}

std::string_view kv_cache_type_name(kv_cache_type t) {
    switch (t) {
    case kv_cache_type::f16:
        return "f16";
    case kv_cache_type::q8_0:
        return "q8_0";
    case kv_cache_type::f32:
        return "f32";
    }
    return "unknown";
}

std::optional<kv_cache_type> parse_kv_cache_type(std::string_view name) {
    for (const kv_cache_type t : {kv_cache_type::f16, kv_cache_type::q8_0, kv_cache_type::f32}) {
        if (kv_cache_type_name(t) == name) {
            return t;
        }
    }
    return std::nullopt;
}

std::string_view profile_status_name(profile_status s) {
    switch (s) {
    case profile_status::runnable:
        return "runnable";
    case profile_status::low_memory:
        return "low_memory";
    case profile_status::incompatible:
        return "incompatible";
    }
    return "unknown";
}

double kv_cache_type_size(kv_cache_type t) {
    switch (t) {
    case kv_cache_type::f16:
        return 2.0;
    case kv_cache_type::q8_0:
        return 34.0 / 32.0;
    case kv_cache_type::f32:
        return 4.0;
    }
    return 4.0;
}

int32_t context_or_trained(int32_t n_ctx_slot, const model_shape &m) {
    return n_ctx_slot > 0 ? n_ctx_slot : int32_t(std::clamp<uint64_t>(m.n_ctx_train, 1, 1u << 24));
}

attention_site cpu_attention_site(const model_shape &m) {
    constexpr uint64_t simd_floats     = 16; // AVX-512's register; AVX2 and NEON divide it
    constexpr uint64_t max_group_heads = 64; // the tiled kernel's rows: query heads per KV head
    const bool         tiled           = m.n_embd_head_v > 0 && m.n_embd_head_v % simd_floats == 0 && m.n_head_kv > 0 &&
                       m.n_head % m.n_head_kv == 0 && m.n_head / m.n_head_kv <= max_group_heads;
    return tiled ? attention_site::cpu : attention_site::cpu_untiled;
}

std::vector<attention_option> attention_candidates(std::optional<kv_cache_type> kv, std::optional<bool> flash_attn,
                                                   attention_site site) {
    using k = kv_cache_type;
    if (kv == k::q8_0) { // needs flash attention: an explicit "off" is kept, for evaluate_profile() to refuse
        return {{k::q8_0, flash_attn.value_or(true)}};
    }
    static const std::vector<attention_option> tiled_order = {
        {k::f16, true}, {k::f32, true}, {k::f32, false}, {k::f16, false}};
    // The cell-by-cell kernel: matrix products over f32 KV decode faster when their scores fit.
    static const std::vector<attention_option> untiled_order = {
        {k::f32, false}, {k::f16, true}, {k::f32, true}, {k::f16, false}};
    const bool                    cpu     = site != attention_site::accelerator;
    const bool                    untiled = site == attention_site::cpu_untiled;
    std::vector<attention_option> out;
    for (const auto &o : untiled ? untiled_order : tiled_order) {
        if ((kv && o.kv_type != *kv) || (flash_attn && o.flash_attn != *flash_attn)) {
            continue; // disagrees with an explicit choice
        }
        if (!flash_attn && !o.flash_attn && !(untiled && o.kv_type == k::f32)) {
            continue; // auto keeps flash attention, but for f32 KV on the cell-by-cell kernel
        }
        if (o.kv_type == k::f32 && !kv && (o.flash_attn || !cpu)) {
            continue; // f32 KV by default only where it pays: the CPU with flash attention off
        }
        out.push_back(o);
    }
    return out;
}

model_profile evaluate_attention_options(const model_shape &m, const hardware_info &hw, const memory_budget &budget,
                                         const std::string &name, profile_flavour flavour, profile_settings s,
                                         const std::vector<attention_option> &options, const model_shape *draft) {
    model_profile p;
    for (const auto &o : options) {
        s.kv_type    = o.kv_type;
        s.flash_attn = o.flash_attn;
        p            = evaluate_profile(m, hw, budget, name, flavour, s, draft);
        if (p.status == profile_status::runnable) {
            break;
        }
    }
    return p;
}

bool cpu_repacks_tensor(const gguf_tensor_info &t, const cpu_isa &isa) {
    // The token embeddings are looked up row by row (ggml_get_rows), which the repacked layouts
    // do not serve: llama.cpp keeps them in plain memory.
    return t.n_dims >= 2 && t.name != "token_embd.weight" && cpu_repacks(t.type, t.dims[1], isa);
}

bool is_known_architecture(std::string_view architecture) {
    return contains(known_architectures, architecture);
}

model_shape model_shape_of(const gguf_info &g, const cpu_isa &isa) {
    model_shape m;
    m.architecture = g.architecture;
    m.weight_bytes = g.tensor_bytes;
    for (const auto &t : g.tensors) {
        if (cpu_repacks_tensor(t, isa)) {
            m.repacked_bytes = sat_add(m.repacked_bytes, t.n_bytes);
        }
        if (t.name.starts_with("blk.")) {
            m.layer_bytes = sat_add(m.layer_bytes, t.n_bytes);
        }
    }

    if (g.architecture.empty()) {
        m.problem = "the model has no general.architecture";
        return m;
    }
    if (g.architecture == "clip") {
        m.problem = "architecture 'clip' is a multimodal projector, not a language model";
        return m;
    }
    if (!is_known_architecture(g.architecture)) {
        m.problem = "architecture '" + gguf_value{gguf_type::string, g.architecture}.to_display(40) +
                    "' is not one this build's llama.cpp knows";
        return m;
    }
    m.recurrent = contains(recurrent_architectures, g.architecture);
    m.hybrid    = contains(hybrid_architectures, g.architecture);

    // Keys llama.cpp's loader requires for every architecture.
    const auto require = [&](const std::optional<uint64_t> &v, const char *key) -> uint64_t {
        if ((!v || *v == 0) && m.problem.empty()) {
            m.problem = "metadata key '" + g.architecture + "." + key + "' is missing or not a positive integer";
        }
        return v.value_or(0);
    };
    m.n_ctx_train = require(g.context_length, "context_length");
    m.n_embd      = require(g.embedding_length, "embedding_length");
    m.n_layer     = require(g.block_count, "block_count");

    if (g.head_count && *g.head_count > 0) {
        m.n_head = *g.head_count;
    } else if (arch_key_is_array(g, "attention.head_count")) {
        // Per-layer head counts (OpenELM): the arrays' contents are not kept; assume MHA over the
        // whole embedding, which bounds the KV cache from above.
        m.n_head = 1;
        m.notes.push_back("attention.head_count is per layer: KV estimated as n_embd per token per layer");
    } else if (!m.recurrent) {
        require(std::nullopt, "attention.head_count");
    }

    if (g.head_count_kv && *g.head_count_kv > 0) {
        m.n_head_kv = *g.head_count_kv;
    } else {
        m.n_head_kv = m.n_head;
        if (arch_key_is_array(g, "attention.head_count_kv")) {
            m.notes.push_back("attention.head_count_kv is per layer: assumed head_count (an upper bound)");
        }
    }
    const uint64_t head_dim = m.n_head > 0 ? m.n_embd / m.n_head : 0;
    m.n_embd_head_k         = arch_uint(g, "attention.key_length").value_or(head_dim);
    m.n_embd_head_v         = arch_uint(g, "attention.value_length").value_or(head_dim);
    if (m.n_head > 0 && m.n_head_kv > m.n_head) {
        m.n_head_kv = m.n_head; // garbage: more KV heads than heads
    }

    if (auto ff = arch_uint(g, "feed_forward_length"); ff && *ff > 0) {
        m.n_ff = *ff;
    } else if (const gguf_tensor_info *t = find_tensor(g, "blk.0.ffn_up.weight"); t && t->n_dims >= 2) {
        m.n_ff = t->dims[1];
    } else {
        m.n_ff = 4 * m.n_embd;
        m.notes.push_back("feed_forward_length missing or per layer: assumed 4 x embedding_length");
    }

    if (g.vocab_size && *g.vocab_size > 0) {
        m.n_vocab = *g.vocab_size;
    } else if (auto v = arch_uint(g, "vocab_size"); v && *v > 0) {
        m.n_vocab = *v;
    } else if (const gguf_tensor_info *t = find_tensor(g, "token_embd.weight"); t && t->n_dims >= 2) {
        m.n_vocab = t->dims[1];
    } else {
        m.n_vocab = 32000;
        m.notes.push_back("vocabulary size unknown: assumed 32000");
    }

    if (m.recurrent) {
        m.notes.push_back("recurrent architecture: the per-sequence state is not estimated (no KV cache)");
    } else if (m.hybrid) {
        m.notes.push_back("hybrid architecture: KV estimated as if every layer had attention (an upper bound)");
    }
    return m;
}

uint64_t kv_cells(int32_t n_ctx_slot, int32_t n_slots) {
    const uint64_t slots  = uint64_t(std::max(1, n_slots));
    const uint64_t ctx    = uint64_t(std::max(1, n_ctx_slot));
    const uint64_t n_ctx  = pad_to(ctx * slots, ctx_pad);
    const uint64_t stream = pad_to(n_ctx / slots, ctx_pad);
    return stream * slots;
}

uint64_t kv_cache_bytes(const model_shape &m, int32_t n_ctx_slot, int32_t n_slots, kv_cache_type t) {
    if (m.recurrent) {
        return 0;
    }
    const uint64_t cells    = kv_cells(n_ctx_slot, n_slots);
    const double   per_cell = double(m.n_embd_k_gqa() + m.n_embd_v_gqa()) * kv_cache_type_size(t);
    const double   bytes    = double(m.n_layer) * double(cells) * per_cell;
    return bytes >= 1.8e19 ? std::numeric_limits<uint64_t>::max() : uint64_t(std::llround(bytes));
}

memory_estimate estimate_draft_memory(const model_shape &draft, const model_shape &target_model,
                                      const profile_settings &target) {
    profile_settings d = target;
    d.n_ctx_slot       = context_or_trained(target.n_ctx_slot, target_model);
    d.rpc              = false;
    d.use_mlock        = false;
    d.n_gpu_layers     = target.gpu ? int32_t(std::min<uint64_t>(draft.n_layer + 1, 1u << 20)) : 0;
    d.n_batch          = std::max(target.n_batch, target.parallel);
    d.n_ubatch         = std::min(d.n_batch, std::max(target.n_ubatch, target.parallel)); // as draft_model::create
    if (d.kv_type == kv_cache_type::q8_0) {
        d.kv_type = kv_cache_type::f16; // as the engine configures it (engine.cpp)
    }
    return estimate_memory(draft, d);
}

memory_estimate estimate_memory(const model_shape &m, const profile_settings &s_in) {
    profile_settings s = s_in;
    s.parallel         = std::max(1, s.parallel);
    s.n_ctx_slot       = context_or_trained(s.n_ctx_slot, m);
    memory_estimate e;
    e.weights    = m.weight_bytes;
    e.page_cache = s.use_mmap ? m.repacked_bytes : 0;
    if (s.use_mlock) {
        e.weights    = sat_add(e.weights, e.page_cache); // pinned: no longer reclaimable
        e.page_cache = 0;
    }
    e.kv_cache = kv_cache_bytes(m, s.n_ctx_slot, s.parallel, s.kv_type);

    // Compute: the part of llama.cpp's compute buffer that is ever written, plus the KQ mask,
    // the CPU backend's work buffer and the logits buffer. The graph allocator reuses memory
    // between the graph's phases, so the graph needs its largest phase (fitted to llama.cpp's
    // reported compute buffer sizes, docs/profiles.md), in bytes for a ubatch of u tokens:
    //   feed-forward:  4 u (3 n_ff + 4 n_embd)
    //   output:        4 (u × 2 n_embd + n_outputs × n_vocab)
    //   attention without flash attention: 4 u (n_head × n_kv + 4 n_embd), the KQ scores.
    // llama.cpp reserves the output phase for every ubatch token being an output (n_outputs_max
    // defaults to n_batch: 250 MiB of address space for a 128K vocabulary), but the engine asks
    // for the logits of at most one token per sequence per step, so n_outputs = min(slots, u)
    // rows are ever written and the rest of the reservation never becomes resident.
    // KQ mask: n_kv × u, f16 with flash attention, f32 without. Work buffer (one, sized for the
    // graph's largest conversion): the activations converted for the dot products, 2 bytes × u ×
    // max(n_ff, n_embd); without flash attention and with an f16 or q8_0 V cache, the KQ
    // probabilities converted to f16 for their product with V, 2 bytes × u × n_head × n_kv, which
    // makes f16 KV without flash attention larger than f32 at long contexts (measured:
    // docs/benchmarks.md, "Long contexts"). Logits buffer: n_vocab × slots floats.
    const uint64_t cells     = kv_cells(s.n_ctx_slot, s.parallel);
    const uint64_t n_kv      = cells / uint64_t(s.parallel); // one stream per slot
    const uint64_t batch     = std::min<uint64_t>(uint64_t(std::max(1, s.n_batch)), cells);
    const uint64_t ubatch    = std::min<uint64_t>(uint64_t(std::max(1, s.n_ubatch)), batch);
    const uint64_t n_outputs = std::min<uint64_t>(uint64_t(s.parallel), ubatch);
    const uint64_t ffn       = sat_mul(sat_mul(ubatch, 4), 3 * m.n_ff + 4 * m.n_embd);
    const uint64_t output    = sat_mul(4, sat_add(sat_mul(ubatch, 2 * m.n_embd), sat_mul(n_outputs, m.n_vocab)));
    const uint64_t attn =
        s.flash_attn ? 0 : sat_mul(sat_mul(ubatch, 4), sat_add(sat_mul(m.n_head, n_kv), 4 * m.n_embd));
    const uint64_t graph = std::max({ffn, output, attn});
    const uint64_t mask  = sat_mul(sat_mul(ubatch, n_kv), s.flash_attn ? 2 : 4);
    const uint64_t kq_f16 =
        s.flash_attn || s.kv_type == kv_cache_type::f32 ? 0 : sat_mul(sat_mul(ubatch, 2), sat_mul(m.n_head, n_kv));
    const uint64_t work   = std::max(sat_mul(ubatch, 2 * std::max(m.n_ff, m.n_embd)), kq_f16);
    const uint64_t logits = sat_mul(m.n_vocab, 4 * uint64_t(s.parallel));
    e.compute             = sat_add(sat_add(graph, mask), sat_add(work, logits));
    e.overhead            = sat_add(sat_add(base_overhead_bytes, sat_mul(m.n_vocab, vocab_bytes_per_token)),
                                    sat_mul(sat_mul(m.n_vocab, sampler_bytes_per_token), uint64_t(s.parallel)));
    if (s.rpc && s.n_gpu_layers > 0 && m.n_layer > 0) {
        // The last g blocks (llama.cpp offloads from the end; the output layer stays here while
        // g ≤ n_layer) and their KV live on the workers. With mmap, their file pages were read
        // once to upload them: page cache, not the process's own memory.
        const uint64_t g         = std::min<uint64_t>(uint64_t(s.n_gpu_layers), m.n_layer);
        const uint64_t layers    = std::min(m.layer_bytes, m.weight_bytes);
        const uint64_t remote_w  = uint64_t(double(layers) * double(g) / double(m.n_layer));
        const uint64_t remote_kv = uint64_t(double(e.kv_cache) * double(g) / double(m.n_layer));
        e.weights -= std::min(e.weights, remote_w);
        e.kv_cache -= remote_kv;
        e.page_cache = uint64_t(double(e.page_cache) * double(m.n_layer - g) / double(m.n_layer));
        if (s.use_mmap) {
            e.page_cache = sat_add(e.page_cache, remote_w);
        }
        e.remote = sat_add(remote_w, remote_kv);
    }
    return e;
}

memory_budget cpu_memory_budget(const hardware_info &hw) {
    memory_budget b;
    b.available = hw.ram_available_effective;
    b.margin    = std::clamp<uint64_t>(hw.ram_total_effective / 20, 256 * mib, 2 * gib);
    b.bytes     = b.available > b.margin ? b.available - b.margin : 0;
    return b;
}

namespace {

// estimate_memory() of `s`, plus the draft model's part when there is one.
memory_estimate estimate_with_draft(const model_shape &m, const profile_settings &s, const model_shape *draft) {
    memory_estimate e = estimate_memory(m, s);
    if (draft != nullptr) {
        e.draft = estimate_draft_memory(*draft, m, s).total();
    }
    return e;
}

// One slot and the shortest context `s` can fit: what the smallest configuration needs.
profile_settings smallest_of(profile_settings s) {
    s.parallel   = 1;
    s.n_ctx_slot = std::min(s.n_ctx_slot, min_fit_ctx);
    return s;
}

// "even --parallel 1 --ctx-size N needs X (parts)", for `e` the estimate of `smallest`.
std::string smallest_needs(const profile_settings &smallest, const memory_estimate &e) {
    return "even --parallel 1 --ctx-size " + std::to_string(smallest.n_ctx_slot) + " needs " + mib_text(e.total()) +
           " (" + estimate_parts(e) + ")";
}

// Why `s` cannot run `m` on `hw` at all, in the order evaluate_profile reports it; empty when it
// can. A GPU profile's budget becomes the roomiest GPU's.
std::string incompatibility(const model_shape &m, const hardware_info &hw, const profile_settings &s,
                            const memory_estimate &memory, memory_budget &budget) {
    if (!m.problem.empty()) {
        return m.problem;
    }
    if (s.rpc) {
        if (hw.remote.empty()) {
            return "no RPC workers: serve --rpc HOST:PORT[,...] attaches them";
        }
        if (auto why = remote_misfit(hw, memory); !why.empty()) {
            return why;
        }
    }
    if (s.gpu) {
        if (hw.gpus.empty()) {
            return "no GPU device (this build has no GPU backend, or it found none)";
        }
        const gpu_device &best = *std::max_element(
            hw.gpus.begin(), hw.gpus.end(), [](const auto &a, const auto &b) { return a.free_bytes < b.free_bytes; });
        budget.available = best.free_bytes;
        budget.margin    = std::clamp<uint64_t>(best.total_bytes / 20, 256 * mib, 2 * gib);
        budget.bytes     = budget.available > budget.margin ? budget.available - budget.margin : 0;
    }
    if (s.kv_type == kv_cache_type::q8_0) {
        if (!s.flash_attn) {
            return "a q8_0 V cache needs flash attention, which this architecture cannot use";
        }
        if (m.n_embd_head_k % 32 != 0 || m.n_embd_head_v % 32 != 0) {
            return "q8_0 KV needs head sizes divisible by 32; this model's are " + std::to_string(m.n_embd_head_k) +
                   " (K) and " + std::to_string(m.n_embd_head_v) + " (V)";
        }
    }
    return {};
}

// The search for settings that fit a low_memory profile's budget.
struct fit_search {
    const model_shape &m;
    const model_shape *draft;
    uint64_t           budget_bytes;

    bool fits(const profile_settings &t) const { return estimate_with_draft(m, t, draft).total() <= budget_bytes; }
};

// The try_* functions set p.fit and p.detail and return true when their change makes p fit.
// Fewer slots, the context kept.
bool try_slots(const fit_search &f, model_profile &p) {
    if (p.settings.parallel <= 1) {
        return false;
    }
    auto n = largest_fitting(1, p.settings.parallel - 1, 1, [&](int32_t v) {
        profile_settings t = p.settings;
        t.parallel         = v;
        return f.fits(t);
    });
    if (!n) {
        return false;
    }
    p.fit           = p.settings;
    p.fit->parallel = *n;
    p.detail        = "--parallel " + std::to_string(*n);
    return true;
}

// A shorter context, the slots kept.
bool try_ctx(const fit_search &f, model_profile &p) {
    if (p.settings.n_ctx_slot <= min_fit_ctx) {
        return false;
    }
    auto n = largest_fitting(min_fit_ctx, p.settings.n_ctx_slot - 1, int32_t(ctx_pad), [&](int32_t v) {
        profile_settings t = p.settings;
        t.n_ctx_slot       = v;
        return f.fits(t);
    });
    if (!n) {
        return false;
    }
    p.fit             = p.settings;
    p.fit->n_ctx_slot = *n;
    p.detail          = "--ctx-size " + std::to_string(*n);
    return true;
}

// Both: the most slots that fit at the smallest context, then the longest context for them.
bool try_both(const fit_search &f, model_profile &p) {
    profile_settings t = p.settings;
    t.n_ctx_slot       = std::min(t.n_ctx_slot, min_fit_ctx);
    auto n             = largest_fitting(1, p.settings.parallel, 1, [&](int32_t v) {
        profile_settings u = t;
        u.parallel         = v;
        return f.fits(u);
    });
    if (!n) {
        return false;
    }
    t.parallel   = *n;
    auto c       = largest_fitting(t.n_ctx_slot, std::max(t.n_ctx_slot, p.settings.n_ctx_slot - 1), int32_t(ctx_pad),
                                   [&](int32_t v) {
                                 profile_settings u = t;
                                 u.n_ctx_slot       = v;
                                 return f.fits(u);
                             });
    t.n_ctx_slot = c.value_or(t.n_ctx_slot);
    p.fit        = t;
    p.detail     = "--parallel " + std::to_string(t.parallel) + " --ctx-size " + std::to_string(t.n_ctx_slot);
    return true;
}

} // namespace

model_profile evaluate_profile(const model_shape &m, const hardware_info &hw, const memory_budget &cpu_budget,
                               std::string name, profile_flavour flavour, const profile_settings &s,
                               const model_shape *draft) {
    model_profile p;
    p.name                = std::move(name);
    p.flavour             = flavour;
    p.settings            = s;
    p.settings.n_ctx_slot = context_or_trained(s.n_ctx_slot, m);
    p.settings.parallel   = std::max(1, p.settings.parallel);
    p.memory              = estimate_with_draft(m, p.settings, draft);

    const auto incompatible = [&](std::string why) {
        p.status = profile_status::incompatible;
        p.detail = std::move(why);
        return p;
    };
    memory_budget budget = cpu_budget;
    if (auto why = incompatibility(m, hw, s, p.memory, budget); !why.empty()) {
        return incompatible(std::move(why));
    }
    if (p.memory.total() <= budget.bytes) {
        p.status = profile_status::runnable;
        return p;
    }
    if (p.memory.weights > budget.bytes) {
        return incompatible("the weights alone (" + mib_text(p.memory.weights) + ") exceed the " +
                            (s.gpu ? "GPU " : "") + "memory budget " + budget_text(budget));
    }

    // low_memory: find the change that makes it fit. Latency keeps its single slot and shortens
    // the context; throughput first gives up slots (keeping the context it promises), then context.
    const fit_search search{m, draft, budget.bytes};
    const bool       found = flavour == profile_flavour::throughput
                                 ? (try_slots(search, p) || try_ctx(search, p) || try_both(search, p))
                                 : (try_ctx(search, p) || try_both(search, p));
    if (!found) {
        const profile_settings smallest = smallest_of(p.settings);
        return incompatible(smallest_needs(smallest, estimate_with_draft(m, smallest, draft)) + ", budget " +
                            budget_text(budget));
    }
    p.status     = profile_status::low_memory;
    p.fit_memory = estimate_memory(m, *p.fit);
    return p;
}

profile_set list_profiles(const gguf_info &g, const hardware_info &hw, const profile_options &o) {
    profile_set set;
    set.model  = model_shape_of(g, hw.isa);
    set.budget = cpu_memory_budget(hw);
    if (o.draft != nullptr) {
        set.draft = model_shape_of(*o.draft, hw.isa);
    }
    const model_shape *draft = set.draft ? &*set.draft : nullptr;
    if (o.budget_bytes) {
        set.budget = {*o.budget_bytes, 0, *o.budget_bytes};
    }
    const model_shape &m = set.model;

    // Contexts: the trained one when known (else 4096 to have something to show), then the ladder.
    const int32_t        trained     = m.n_ctx_train > 0 ? int32_t(std::min<uint64_t>(m.n_ctx_train, 1u << 24)) : 4096;
    std::vector<int32_t> latency_ctx = {trained};
    for (int32_t c : {32768, 8192, 2048}) {
        if (c < trained) {
            latency_ctx.push_back(c);
        }
    }
    std::vector<int32_t> throughput_ctx;
    for (int32_t c : {std::min(trained, 4096), std::min(trained, 2048)}) {
        if (std::find(throughput_ctx.begin(), throughput_ctx.end(), c) == throughput_ctx.end()) {
            throughput_ctx.push_back(c);
        }
    }
    std::vector<int32_t> throughput_slots = {4, 8};
    if (hw.n_cores_effective >= 16) {
        throughput_slots.push_back(16);
    }

    const bool flash = m.architecture != "grok"; // llama.cpp forces flash attention off for grok
    const bool mlock = hw.memlock_limit && *hw.memlock_limit >= m.weight_bytes && m.weight_bytes > 0;

    // A CPU profile settles its attention as serve's "auto" does (f16 or q8_0 with flash
    // attention; without it where llama.cpp cannot use it, then f32 first). GPU and RPC profiles
    // keep theirs.
    const auto add = [&](profile_flavour f, const profile_settings &s) {
        const std::optional<kv_cache_type> kv =
            s.kv_type == kv_cache_type::f16 ? std::nullopt : std::optional(s.kv_type);
        const std::vector<attention_option> options =
            s.gpu || s.rpc
                ? std::vector<attention_option>{{s.kv_type, s.flash_attn}}
                : attention_candidates(kv, flash ? std::nullopt : std::optional(false), cpu_attention_site(m));
        set.profiles.push_back(evaluate_attention_options(m, hw, set.budget, profile_name(f, s), f, s, options, draft));
    };

    for (int32_t ctx : latency_ctx) {
        for (kv_cache_type kv : {kv_cache_type::f16, kv_cache_type::q8_0}) {
            if (kv == kv_cache_type::q8_0 && !flash) {
                continue;
            }
            profile_settings s;
            s.n_threads  = int32_t(hw.n_cores_effective);
            s.parallel   = 1;
            s.n_ctx_slot = ctx;
            s.n_batch    = 2048;
            s.n_ubatch   = cpu_micro_batch_tokens;
            s.kv_type    = kv;
            s.flash_attn = flash;
            s.use_mlock  = mlock;
            add(profile_flavour::latency, s);
        }
    }
    for (int32_t slots : throughput_slots) {
        for (int32_t ctx : throughput_ctx) {
            profile_settings s;
            s.n_threads  = int32_t(hw.n_threads_effective);
            s.parallel   = slots;
            s.n_ctx_slot = ctx;
            s.n_batch    = 2048;
            s.n_ubatch   = cpu_micro_batch_tokens;
            s.flash_attn = flash;
            add(profile_flavour::throughput, s);
        }
    }
    {
        profile_settings s;
        s.gpu          = true;
        s.n_threads    = int32_t(hw.n_cores_effective);
        s.n_ctx_slot   = trained;
        s.flash_attn   = flash;
        s.n_gpu_layers = int32_t(std::min<uint64_t>(m.n_layer + 1, 1u << 20)); // blocks + output layer
        add(profile_flavour::latency, s);
    }
    if (!hw.remote.empty()) {
        for (int32_t ctx : latency_ctx) {
            profile_settings s;
            s.rpc          = true;
            s.n_threads    = int32_t(hw.n_cores_effective);
            s.n_ctx_slot   = ctx;
            s.flash_attn   = flash;
            s.n_gpu_layers = rpc_layer_split(m, hw, set.budget, s);
            add(profile_flavour::latency, s);
        }
    }
    return set;
}

int32_t http_threads_for(const hardware_info &hw) {
    return int32_t(std::clamp<uint32_t>(hw.n_threads_effective / 4, 1, 4));
}

int32_t rpc_layer_split(const model_shape &m, const hardware_info &hw, const memory_budget &budget,
                        const profile_settings &s) {
    if (hw.remote.empty() || m.n_layer == 0) {
        return 0;
    }
    profile_settings local    = s;
    local.rpc                 = false;
    local.n_gpu_layers        = 0;
    const memory_estimate all = estimate_memory(m, local);
    // Per layer: its weights and its KV. Fixed: what stays here whatever the split.
    const uint64_t layers    = sat_add(std::min(m.layer_bytes, m.weight_bytes), all.kv_cache);
    const double   per_layer = std::max(1.0, double(layers) / double(m.n_layer));
    const uint64_t fixed     = all.total() - std::min(all.total(), layers);
    const double   here      = budget.bytes > fixed ? double(budget.bytes - fixed) : 0.0;
    double         there     = 0;
    for (const auto &d : hw.remote) {
        const uint64_t cap = device_budget(d.free_bytes, d.total_bytes);
        there += cap > all.compute ? double(cap - all.compute) : 0.0;
    }
    const double n  = double(m.n_layer);
    double       g  = here + there > 0 ? std::round(n * there / (here + there)) : n;
    const double lo = std::clamp(std::ceil((double(layers) - here) / per_layer), 0.0, n); // this machine fits
    const double hi = std::clamp(std::floor(there / per_layer), 0.0, n);                  // the workers fit
    g               = std::clamp(g, lo, std::max(lo, hi));
    return int32_t(std::max(1.0, g)); // an RPC profile offloads something
}

namespace {

// A KV cache kept in floating point (f16, or f32 as CPU profiles settle it) over a quantized one.
bool exact_kv(const profile_settings &a) {
    return a.kv_type != kv_cache_type::q8_0;
}

// The orders pick_profile ranks by: true when a is better than b.
bool latency_better(const profile_settings &a, const profile_settings &b) {
    if (a.n_ctx_slot != b.n_ctx_slot) {
        return a.n_ctx_slot > b.n_ctx_slot;
    }
    if (exact_kv(a) != exact_kv(b)) {
        return exact_kv(a);
    }
    return a.parallel < b.parallel;
}

bool throughput_better(const profile_settings &a, const profile_settings &b) {
    if (a.parallel != b.parallel) {
        return a.parallel > b.parallel;
    }
    if (a.n_ctx_slot != b.n_ctx_slot) {
        return a.n_ctx_slot > b.n_ctx_slot;
    }
    return exact_kv(a) && !exact_kv(b);
}

// For a low_memory profile's fit: the longest context, then unquantized KV, then the most slots.
bool fit_better(const profile_settings &a, const profile_settings &b) {
    if (a.n_ctx_slot != b.n_ctx_slot) {
        return a.n_ctx_slot > b.n_ctx_slot;
    }
    if (exact_kv(a) != exact_kv(b)) {
        return exact_kv(a);
    }
    return a.parallel > b.parallel;
}

// The first of the best profiles `keep` accepts, ranked on their listed settings by `better`.
template <typename Keep, typename Better>
std::optional<size_t> best_profile(const std::vector<model_profile> &ps, Keep &&keep, Better &&better) {
    std::optional<size_t> best;
    for (size_t i = 0; i < ps.size(); ++i) {
        if (keep(ps[i]) && (!best || better(ps[i].settings, ps[*best].settings))) {
            best = i;
        }
    }
    return best;
}

profile_pick make_pick(const profile_set &set, size_t i, const std::string &why) {
    const model_profile &p = set.profiles[i];
    profile_pick         pick;
    pick.index    = i;
    pick.settings = p.settings;
    pick.memory   = p.memory;
    pick.reason   = p.name + ": " + why + "; est. " + mib_text(pick.memory.total()) + " of a " +
                  mib_text(set.budget.bytes) + " budget";
    return pick;
}

// The best CPU profile runnable as listed: of the goal's flavour, else of the other.
std::optional<profile_pick> pick_cpu(const profile_set &set, pick_goal goal) {
    const profile_flavour first = goal == pick_goal::latency ? profile_flavour::latency : profile_flavour::throughput;
    const profile_flavour second =
        first == profile_flavour::latency ? profile_flavour::throughput : profile_flavour::latency;
    for (profile_flavour f : {first, second}) {
        const auto runnable_cpu = [f](const model_profile &p) {
            return p.status == profile_status::runnable && !p.settings.gpu && !p.settings.rpc && p.flavour == f;
        };
        const bool latency = f == profile_flavour::latency;
        const auto i       = latency ? best_profile(set.profiles, runnable_cpu, latency_better)
                                     : best_profile(set.profiles, runnable_cpu, throughput_better);
        if (i) {
            std::string why = std::string(profile_flavour_name(f)) + " profile with " +
                              (latency ? "the longest context that fits, unquantized KV preferred"
                                       : "the most parallel slots that fit, then the longest context");
            if (f != first) {
                why += " (no " + std::string(profile_flavour_name(first)) + " profile fits)";
            }
            return make_pick(set, *i, why);
        }
    }
    return std::nullopt;
}

// Nothing runnable as listed: the non-GPU low_memory profile with the best fit (fit_better),
// its fit applied.
std::optional<profile_pick> pick_fitted(const profile_set &set) {
    const auto           &ps = set.profiles;
    std::optional<size_t> best;
    for (size_t i = 0; i < ps.size(); ++i) {
        if (ps[i].status != profile_status::low_memory || !ps[i].fit || ps[i].settings.gpu) {
            continue;
        }
        if (!best || fit_better(*ps[i].fit, *ps[*best].fit)) {
            best = i;
        }
    }
    if (!best) {
        return std::nullopt;
    }
    const model_profile &p    = ps[*best];
    profile_pick         pick = make_pick(set, *best, "no profile fits as listed; applied " + p.detail);
    pick.settings             = *p.fit;
    pick.memory               = *p.fit_memory;
    pick.adjusted             = true;
    pick.reason = p.name + " with " + p.detail + ": no profile fits as listed; est. " + mib_text(pick.memory.total()) +
                  " of a " + mib_text(set.budget.bytes) + " budget";
    return pick;
}

// Why no profile can be picked: the model's problem, or what the smallest CPU configuration (one
// slot, the shortest context, f16 KV) needs against the budget.
error no_profile_error(const profile_set &set) {
    const auto &ps = set.profiles;
    error       e  = error::invalid("", "model", "no_profile_fits");
    if (!set.model.problem.empty()) {
        e.message = "no profile can run this model: " + set.model.problem;
        return e;
    }
    const auto cpu =
        std::find_if(ps.begin(), ps.end(), [](const model_profile &p) { return !p.settings.gpu && !p.settings.rpc; });
    if (cpu == ps.end()) {
        e.message = "no profile fits in memory";
        return e;
    }
    profile_settings smallest = smallest_of(cpu->settings);
    smallest.kv_type          = kv_cache_type::f16;
    smallest.flash_attn       = set.model.architecture != "grok"; // the smallest compute buffer, where it can
    const memory_estimate m   = estimate_with_draft(set.model, smallest, set.draft ? &*set.draft : nullptr);
    e.message =
        "no profile fits in memory: " + smallest_needs(smallest, m) + " but the budget is " + budget_text(set.budget);
    return e;
}

} // namespace

result<profile_pick> pick_profile(const profile_set &set, pick_goal goal) {
    const auto &ps = set.profiles;
    if (auto i = best_profile(
            ps, [](const model_profile &p) { return p.status == profile_status::runnable && p.settings.gpu; },
            latency_better)) {
        return make_pick(set, *i, "a GPU is available and the model fits in its memory");
    }
    if (auto i = best_profile(
            ps, [](const model_profile &p) { return p.status == profile_status::runnable && p.settings.rpc; },
            latency_better)) {
        return make_pick(set, *i,
                         "RPC workers are attached: " + std::to_string(ps[*i].settings.n_gpu_layers) +
                             " layers on them, the longest context that fits");
    }
    if (auto pick = pick_cpu(set, goal)) {
        return *pick;
    }
    if (auto pick = pick_fitted(set)) {
        return *pick;
    }
    return no_profile_error(set);
}

std::optional<size_t> find_profile(const profile_set &set, std::string_view name) {
    for (size_t i = 0; i < set.profiles.size(); ++i) {
        if (set.profiles[i].name == name) {
            return i;
        }
    }
    return std::nullopt;
}

} // namespace inferbox

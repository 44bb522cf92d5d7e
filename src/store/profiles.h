#pragma once
// Serving profiles: candidate configurations for one model on this machine, each with its
// estimated memory and a status, in the spirit of NIM's `list-model-profiles`; and the rule
// `serve` uses to pick one. Pure arithmetic over a gguf_info and a hardware_info: no llama.cpp,
// no I/O. docs/profiles.md explains the estimate and how it compares with measured peak RSS.
//
// The estimate (bytes), for settings s on model m:
//   weights  = the tensors' bytes (with mmap every page is prefetched; the tensors ggml's CPU
//              backend repacks live in an anonymous copy of the same size instead)
//   kv_cache = n_layer × cells × (n_embd_k_gqa × size(type_k) + n_embd_v_gqa × size(type_v)),
//              cells = slots × pad256(pad256(ctx × slots) / slots) as llama.cpp sizes one KV
//              stream per slot; n_embd_k_gqa = head_dim_k × n_head_kv, head_dim_k =
//              <arch>.attention.key_length, else n_embd / n_head (values likewise)
//   compute  = the written part of llama.cpp's compute buffer for one ubatch (its largest phase:
//              feed-forward, output logits of at most one token per slot, or KQ scores without
//              flash attention), the KQ mask, the CPU work buffer and the logits buffer
//   overhead = the process without a model (binary, threads, HTTP) + the tokenizer + each slot's
//              sampler candidates (the constants and their measurements: docs/profiles.md)
// A profile fits when weights + kv_cache + compute + overhead ≤ the memory budget: the effective
// available RAM (min of MemAvailable and the cgroup's headroom) minus a safety margin.
//
// Thread safety: the functions are reentrant; the results are plain values.

#include "common/kv_cache_type.h"
#include "common/status.h"
#include "store/gguf.h"
#include "store/hardware.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

enum class profile_flavour {
    latency,    // one sequence at a time: the longest context, one thread per physical core
    throughput, // several sequences decoded together: more slots, shorter context each
};

enum class profile_status {
    runnable,     // fits the memory budget as listed
    low_memory,   // does not fit; `detail` names the change that makes it fit (computed)
    incompatible, // cannot run here at all; `detail` says why
};

std::string_view profile_flavour_name(profile_flavour f); // "latency" | "throughput"
std::string_view kv_cache_type_name(kv_cache_type t);     // "f16" | "q8_0" | "f32"
// The inverse of kv_cache_type_name(); nullopt for any other text.
std::optional<kv_cache_type> parse_kv_cache_type(std::string_view name);
std::string_view             profile_status_name(profile_status s); // "runnable" | "low_memory" | "incompatible"

// Bytes per element of a KV cache type (q8_0: blocks of 32 in 34 bytes; f32: 4).
double kv_cache_type_size(kv_cache_type t);

// The model facts the estimate needs, read from gguf_info with llama.cpp's defaults where a key
// is optional (head_count_kv = head_count, key_length = embedding_length / head_count).
struct model_shape {
    std::string architecture;
    bool        recurrent = false; // llama.cpp keeps a fixed-size state per sequence, not a KV cache
    bool        hybrid    = false; // attention and recurrent layers; the KV formula is an upper bound

    uint64_t n_ctx_train   = 0;
    uint64_t n_layer       = 0;
    uint64_t n_embd        = 0;
    uint64_t n_head        = 0;
    uint64_t n_head_kv     = 0;
    uint64_t n_embd_head_k = 0;
    uint64_t n_embd_head_v = 0;
    uint64_t n_ff          = 0;
    uint64_t n_vocab       = 0;

    uint64_t weight_bytes = 0; // sum of the tensors' bytes
    // Bytes of the tensors ggml's CPU backend repacks into an interleaved layout on this CPU
    // (Q4_0, Q4_K, IQ4_NL, MXFP4 with AVX2, ...): loaded into an anonymous copy, while their
    // file pages, read once, stay in the page cache (and in the process's RSS) until reclaimed.
    uint64_t repacked_bytes = 0;
    // Bytes of the repeating blocks' tensors ("blk.N.*"): what offloading layers moves.
    uint64_t layer_bytes = 0;

    // Why llama.cpp cannot load the model (unknown or missing architecture, a required key
    // missing or unusable); empty when it can.
    std::string problem;
    // Assumptions made for missing or per-layer metadata, one sentence each.
    std::vector<std::string> notes;

    uint64_t n_embd_k_gqa() const { return n_embd_head_k * n_head_kv; }
    uint64_t n_embd_v_gqa() const { return n_embd_head_v * n_head_kv; }
};

// The shape of `g`; `isa` decides which tensors the CPU backend repacks.
model_shape model_shape_of(const gguf_info &g, const cpu_isa &isa);

// Whether ggml's CPU backend copies tensor `t` into its repacked (interleaved) layout on a CPU
// with `isa` when the tensor stays on the CPU (ggml-cpu's repack.cpp): model_shape's
// repacked_bytes, and the file pages serve hands back once they are copied.
bool cpu_repacks_tensor(const gguf_tensor_info &t, const cpu_isa &isa);

// Whether llama.cpp (the version inferbox is built with) knows `architecture`.
bool is_known_architecture(std::string_view architecture);

// What a profile configures. Field names follow engine_config and the serve flags.
struct profile_settings {
    bool          gpu          = false;              // all layers on the largest GPU
    bool          rpc          = false;              // n_gpu_layers layers on the RPC workers' devices
    int32_t       n_threads    = 1;                  // --threads
    int32_t       parallel     = 1;                  // --parallel (KV slots)
    int32_t       n_ctx_slot   = 0;                  // --ctx-size (tokens per sequence)
    int32_t       n_batch      = 2048;               // --batch-size (tokens per engine step)
    int32_t       n_ubatch     = 512;                // tokens per llama_decode micro-batch
    kv_cache_type kv_type      = kv_cache_type::f16; // K and V
    bool          flash_attn   = true;
    bool          use_mmap     = true;
    bool          use_mlock    = false;
    int32_t       n_gpu_layers = 0;
};

struct memory_estimate {
    uint64_t weights  = 0;
    uint64_t kv_cache = 0;
    uint64_t compute  = 0;
    uint64_t overhead = 0;
    // The repacked tensors' file pages (see model_shape::repacked_bytes): counted in peak RSS but
    // reclaimable, so not in total() (unless mlock pins them, then they are in `weights`).
    uint64_t page_cache = 0;
    // RPC profiles: what the workers hold (their layers' weights and KV, a compute buffer on each
    // device); not in total(), which is this machine's part.
    uint64_t remote = 0;
    // Speculative decoding: the draft model's whole estimate (estimate_draft_memory()), beside
    // the served model's parts above. 0 without a draft model.
    uint64_t draft = 0;

    uint64_t total() const { return weights + kv_cache + compute + overhead + draft; } // must fit
    uint64_t peak_rss() const { return total() + page_cache; }                         // VmHWM with memory to spare
};

// KV cells (tokens) llama.cpp allocates for `n_slots` streams of `n_ctx_slot` tokens.
uint64_t kv_cells(int32_t n_ctx_slot, int32_t n_slots);

// The KV cache bytes for those cells (0 for recurrent models).
uint64_t kv_cache_bytes(const model_shape &m, int32_t n_ctx_slot, int32_t n_slots, kv_cache_type t);

// The whole estimate. Non-positive settings are treated as 1 (0 context: the trained context).
memory_estimate estimate_memory(const model_shape &m, const profile_settings &s);

// A draft model's part for speculative decoding (serve --draft-model): its own llama.cpp context
// with the target's slots, context per slot and attention settings, and a batch of at least one
// token per slot (engine/draft_model.cpp; f16 where the target's is q8_0, whose blocks the draft's
// head size may not hold), on the device that holds the target's layers here:
// every layer on the GPU for a GPU profile, the CPU otherwise (an RPC profile keeps its draft
// local). Never mlocked. A context of 0 is the served model's (`target_model`) trained context: the
// draft's slots hold the served model's context, not the draft's own.
memory_estimate estimate_draft_memory(const model_shape &draft, const model_shape &target_model,
                                      const profile_settings &target);

// The memory a profile may use.
struct memory_budget {
    uint64_t available = 0; // effective available RAM (or GPU free memory for GPU profiles)
    uint64_t margin    = 0; // kept free: 5 % of the effective total, at least 256 MiB, at most 2 GiB
    uint64_t bytes     = 0; // available - margin (0 when the margin is larger)
};

memory_budget cpu_memory_budget(const hardware_info &hw);

struct model_profile {
    std::string      name; // "cpu-latency-ctx4096", "cpu-latency-ctx4096-kvq8", "cpu-throughput-p8-ctx2048"
    profile_flavour  flavour = profile_flavour::latency;
    profile_settings settings;
    memory_estimate  memory;
    profile_status   status = profile_status::runnable;
    // runnable: empty; low_memory: the serve flag that makes it fit ("--ctx-size 3072"),
    // incompatible: why, with the numbers.
    std::string detail;
    // low_memory: the settings with that change applied, which fit, and their estimate.
    std::optional<profile_settings> fit;
    std::optional<memory_estimate>  fit_memory;
};

// Estimates `s` and sets the status against `budget` (searching the change for low_memory).
// GPU settings are checked against the largest device in hw.gpus. RPC settings put
// n_gpu_layers of the last layers on hw.remote, split in proportion to each device's free
// memory as llama.cpp splits them; each device's share must fit its free memory less a margin
// (5 %, at least 256 MiB, at most 2 GiB), or the profile is incompatible with the numbers.
// With a `draft` model (speculative decoding), every estimate, the status and the change that
// fits include the draft's part (memory_estimate::draft) for the same settings.
model_profile evaluate_profile(const model_shape &m, const hardware_info &hw, const memory_budget &budget,
                               std::string name, profile_flavour flavour, const profile_settings &s,
                               const model_shape *draft = nullptr);

struct profile_options {
    // Replaces the budget computed from the hardware (available = bytes = this, margin = 0).
    std::optional<uint64_t> budget_bytes;
    // A draft model for speculative decoding: every profile's estimate includes its part. Not
    // owned; read during list_profiles() only.
    const gguf_info *draft = nullptr;
};

struct profile_set {
    model_shape                model;
    std::optional<model_shape> draft; // profile_options::draft's shape
    memory_budget              budget;
    std::vector<model_profile> profiles; // latency first, then throughput, then GPU
};

// The candidate profiles (docs/profiles.md lists the ladder):
//   latency: ctx ∈ {trained, 32768, 8192, 2048} (those below the trained context), KV f16 and
//            q8_0, 1 slot, threads = effective physical cores, batch = ubatch = 512;
//   throughput: slots ∈ {4, 8} (and 16 with ≥ 16 cores), ctx ∈ {min(trained, 4096),
//            min(trained, 2048)}, KV f16, threads = effective logical CPUs, batch 1024, ubatch 512;
//   gpu: one latency profile at the trained context, every layer offloaded (incompatible here
//            when hw.gpus is empty);
//   rpc (only when hw.remote lists devices): latency profiles over the latency contexts, f16 KV,
//            with rpc_layer_split()'s layers on the workers.
// Attention: a CPU profile's is settled as serve's "auto" settles it (attention_candidates()):
// an f16 profile runs f16 KV with flash attention (f32 KV without it where the tiled kernel cannot
// take the model's heads, cpu_attention_site()); a q8_0 profile keeps q8_0 with it. GPU and RPC profiles: as
// listed, flash attention on. Flash attention is off for grok, which llama.cpp forces off (then
// no q8_0 KV). mmap on, mlock on for latency profiles when RLIMIT_MEMLOCK covers the weights.
profile_set list_profiles(const gguf_info &g, const hardware_info &hw, const profile_options &o = {});

// HTTP I/O threads for `serve --http-threads 0` (auto): a quarter of the logical CPUs this
// process may use, at least 1, at most 4. They parse, render and tokenize requests and write the
// streams, a small share of the work beside decoding, and every extra thread contends with the
// compute threads for cores: on 2 cores, a second I/O thread cost about 10 % of single-stream
// tokens/s (docs/benchmarks.md, 2026-12-06).
int32_t http_threads_for(const hardware_info &hw);

// Layers to put on the RPC workers for `s` (an rpc profile): in proportion to the memory the
// workers can give (free less margin, summed) against the memory this machine's budget leaves
// after its fixed parts, then moved so both sides fit when they can. 0 without remote devices.
int32_t rpc_layer_split(const model_shape &m, const hardware_info &hw, const memory_budget &budget,
                        const profile_settings &s);

// One way to run attention: the KV cache's type and whether flash attention is on.
struct attention_option {
    kv_cache_type kv_type    = kv_cache_type::f16;
    bool          flash_attn = true;
};

// Where attention runs, as far as choosing its options goes.
enum class attention_site {
    cpu,         // the CPU, whose flash-attention kernel scores this model's heads a tile at a time
    cpu_untiled, // the CPU, with heads the tiled kernel cannot take (it walks the KV a cell at a time)
    accelerator, // layers on a GPU or on RPC workers
};

// The CPU site for `m`: cpu when patches/llama.cpp/0005's tiled kernel takes its heads (value
// heads a multiple of 16 floats, so whole SIMD registers on every x86 and Arm build, and at most
// 64 query heads per KV head: every current model with heads of 64 or more), else cpu_untiled
// (stories260K's heads of 8, say).
attention_site cpu_attention_site(const model_shape &m);

// The attention options `serve` tries, best first, when its KV type or flash attention is
// "auto" (nullopt here); it takes the first whose memory estimate fits. An explicit choice keeps
// only the options that agree with it.
//   Auto is f16 KV with flash attention: the smallest estimate (no KQ score buffer, half of
//   f32's KV) and the fastest. On the CPU that holds with patches/llama.cpp/0005, which scores a
//   KV head's grouped query heads together a tile at a time; the kernel as released walked the KV
//   one cell per query head, and without flash attention (f32 KV) decoded 2-4x faster below 8k
//   tokens. Measured with the patch (docs/benchmarks.md, "Long contexts"): decode at 4096 tokens
//   260-285 t/s with flash attention against 92 without it (f16 KV), at 16384 109 against 11
//   before the patch; serving 128-token prompts, inter-token time 2.7 ms against 3.1-3.4 ms for
//   f32 KV without it, and 4 streams no slower.
//   cpu_untiled: heads the tiled kernel cannot take still get the cell-by-cell kernel, so auto
//   tries f32 KV without flash attention first (1.3-1.4x the decode of the released kernel on
//   stories260K, docs/benchmarks.md, "attention on the CPU"), then f16 with it (when the KQ score
//   buffer does not fit).
//   With flash attention explicitly off on the CPU and the type auto: f32 first (it spares the
//   f16 conversions in the attention products, decode +15-40 % over f16 without flash attention,
//   for twice the KV memory), then f16. Elsewhere f32 only when asked for. q8_0 is only ever used
//   when asked for, and always with flash attention (llama.cpp needs it).
std::vector<attention_option> attention_candidates(std::optional<kv_cache_type> kv, std::optional<bool> flash_attn,
                                                   attention_site site);

// The context per slot that a setting of 0 (or less) stands for: the model's trained context,
// bounded to what an int32_t setting and llama.cpp's KV cells can hold.
int32_t context_or_trained(int32_t n_ctx_slot, const model_shape &m);

// evaluate_profile() of `s` with each of `options` (non-empty) in turn: the first runnable one,
// or when none is, the last (the smallest estimate, whose detail names the change that makes it
// fit). list_profiles() settles its CPU profiles' flash attention this way too. `draft`: as for
// evaluate_profile().
model_profile evaluate_attention_options(const model_shape &m, const hardware_info &hw, const memory_budget &budget,
                                         const std::string &name, profile_flavour flavour, profile_settings s,
                                         const std::vector<attention_option> &options,
                                         const model_shape                   *draft = nullptr);

enum class pick_goal { latency, throughput };

struct profile_pick {
    size_t           index = 0;        // into profile_set::profiles
    profile_settings settings;         // the profile's settings, or its fit when `adjusted`
    memory_estimate  memory;           // the estimate for `settings`
    bool             adjusted = false; // a low_memory profile with its change applied
    std::string      reason;           // one line for the log
};

// The best profile for `goal`:
//   1. a runnable GPU profile, if any; then a runnable RPC profile (the longest context);
//   2. runnable profiles of the goal's flavour: latency → the longest context, then f16 KV
//      before q8_0; throughput → the most slots, then the longest context, then f16;
//   3. the other flavour by its own rule;
//   4. the low_memory profile whose fit keeps the longest context (then f16 KV, then the most
//      slots), with its change applied.
// An error (code "no_profile_fits") when none of these exists; its message gives the numbers:
// the smallest estimate, its parts, and the budget.
result<profile_pick> pick_profile(const profile_set &set, pick_goal goal = pick_goal::latency);

// The index of the profile called `name`, or nullopt.
std::optional<size_t> find_profile(const profile_set &set, std::string_view name);

} // namespace inferbox

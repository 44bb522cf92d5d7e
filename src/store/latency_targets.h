#pragma once
// A profile's default latency targets, derived from the model and the machine, and how serve
// settles the targets it runs with: an explicit --slo-ttft-ms / --slo-itl-ms wins, else the
// profile's default, else none (docs/profiles.md, "Default latency targets", justifies the
// formulas and constants).
//
// Pure arithmetic over a model's header, a profile's settings and the measured roofline
// (store/roofline.h): no I/O, so the unit tests run it on synthetic inputs.

#include "store/gguf.h"
#include "store/profiles.h"
#include "store/roofline.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace inferbox {

// The largest target the engine accepts (engine_config's check), in milliseconds.
inline constexpr int32_t k_max_target_ms = 3'600'000;

// The constants of the formulas (docs/profiles.md says why these values).
inline constexpr double  k_itl_floor_ms              = 50;   // no inter-token target below 20 tokens/s
inline constexpr double  k_itl_step_multiple         = 2;    // × the predicted decode step
inline constexpr double  k_ttft_floor_ms             = 250;  // no first-token target below this
inline constexpr double  k_ttft_prompt_multiple      = 2;    // × the predicted prompt time
inline constexpr int32_t k_typical_prompt_tokens     = 512;  // at most half the context
inline constexpr double  k_fallback_read_bytes_per_s = 10e9; // without a measurement (`hardware --measure`)

// What a profile would set as its targets, and the prediction they come from.
struct latency_defaults {
    int32_t ttft_ms = 0; // 0: no default
    int32_t itl_ms  = 0; // 0: no default
    // "measured": the cached roofline of this machine; "fallback": no measurement, the memory
    // bandwidth assumed to be k_fallback_read_bytes_per_s; "": no default (`note` says why).
    std::string basis;
    double      decode_tokens_per_s = 0;     // the predicted single-stream rate at the profile's threads
    double      step_ms             = 0;     // a predicted decode step of `parallel` streams
    double      prefill_ms          = 0;     // the predicted prompt time of `prompt_tokens`
    bool        prefill_batched     = false; // prefill_ms from the batched kernels (else the matrix-vector ones)
    int32_t     prompt_tokens       = 0;     // the typical prompt
    std::string note;                        // why there is no default; "" otherwise
};

// The formulas, on a decode prediction for the profile's threads (milliseconds):
//   t1     = 1000 / p.tokens_per_s                  one token of one stream (the roofline)
//   tk     = 1000 / p.kernel_tps, or t1 when a kernel was not measured
//                                                    one token through the kernels alone
//   step   = max(t1, parallel × tk)                 weights read once a step, kernel work per stream
//   ITL    = max(k_itl_floor_ms, k_itl_step_multiple × step)
//   L      = min(k_typical_prompt_tokens, n_ctx_slot / 2), at least 1
//   tp     = 1000 / p.prefill_tps, or tk when a batched product was not measured
//                                                    one prompt token through the batched kernels
//   TTFT   = max(k_ttft_floor_ms, k_ttft_prompt_multiple × (L × tp + step))
// each rounded up to whole milliseconds and capped at k_max_target_ms. `parallel` and
// `n_ctx_slot` are taken as at least 1.
latency_defaults targets_from_prediction(const decode_prediction &p, int32_t parallel, int32_t n_ctx_slot,
                                         std::string basis);

// A profile's defaults for `model` with settings `s` (n_ctx_slot 0: the model's trained context):
// from `roof` when given (its rates scaled down by s.n_threads / roof->threads when the profile
// uses fewer threads than were measured), else from the fallback bandwidth. GPU and RPC profiles
// get none: the roofline describes this machine's CPU.
latency_defaults profile_latency_defaults(const gguf_info &model, const profile_settings &s,
                                          const machine_roofline *roof);

// Where a target serve runs with came from.
enum class target_source {
    flag,    // --slo-ttft-ms / --slo-itl-ms (or the config file's or environment's), including 0 = off
    profile, // the profile's default
    none,    // no flag, and the profile has no default
};
std::string_view target_source_name(target_source s);

struct settled_targets {
    int32_t          ttft_ms     = 0; // 0: none
    int32_t          itl_ms      = 0;
    target_source    ttft_source = target_source::none;
    target_source    itl_source  = target_source::none;
    latency_defaults defaults; // what the profile offered
};

// Each target on its own: an explicit flag (`*_flag` set; 0 turns the target off) wins, else the
// profile's default when it has one, else none.
settled_targets settle_latency_targets(std::optional<int32_t> ttft_flag, std::optional<int32_t> itl_flag,
                                       const latency_defaults &defaults);

// A --slo-*-ms value as written: "auto" (the profile's default), "off" or "0" (no target), or
// whole milliseconds from 1 to k_max_target_ms.
struct target_flag {
    bool    automatic = false; // "auto"
    int32_t ms        = 0;     // otherwise: 0 = off
    // What serve_options::slo_*_ms holds: nullopt for "auto", else the milliseconds (0: off).
    std::optional<int32_t> value() const { return automatic ? std::nullopt : std::optional<int32_t>(ms); }
};
// nullopt when `text` is none of the forms above.
std::optional<target_flag> parse_target_flag(std::string_view text);

} // namespace inferbox

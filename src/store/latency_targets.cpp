#include "store/latency_targets.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

namespace inferbox {

namespace {

// Whole milliseconds, rounded up (a target is a bound: never tighter than the formula), within
// what the engine accepts.
int32_t target_ms(double ms) {
    if (!(ms > 0)) {
        return 0;
    }
    return static_cast<int32_t>(std::min(std::ceil(ms), static_cast<double>(k_max_target_ms)));
}

} // namespace

latency_defaults targets_from_prediction(const decode_prediction &p, int32_t parallel, int32_t n_ctx_slot,
                                         std::string basis) {
    latency_defaults d;
    if (!(p.tokens_per_s > 0)) {
        d.note = "no decode prediction";
        return d;
    }
    d.basis               = std::move(basis);
    d.decode_tokens_per_s = p.tokens_per_s;
    const double t1       = 1000.0 / p.tokens_per_s;
    // Without every kernel measured, the roofline itself stands in for the compute per token:
    // slower than the kernels, so the targets come out looser, never tighter.
    const double tk = p.kernel_tps > 0 ? 1000.0 / p.kernel_tps : t1;
    // A step of n streams reads the weights once, but each stream's dot products are its own.
    d.step_ms       = std::max(t1, std::max(parallel, 1) * tk);
    d.prompt_tokens = std::clamp(std::max(n_ctx_slot, 1) / 2, 1, k_typical_prompt_tokens);
    // Prompt work is compute-bound on a CPU: the batched kernels' measured rate where every type
    // was measured, else the matrix-vector kernels' (slower per token: a looser target).
    d.prefill_batched = p.prefill_tps > 0;
    d.prefill_ms      = d.prompt_tokens * (d.prefill_batched ? 1000.0 / p.prefill_tps : tk);
    d.itl_ms          = target_ms(std::max(k_itl_floor_ms, k_itl_step_multiple * d.step_ms));
    d.ttft_ms         = target_ms(std::max(k_ttft_floor_ms, k_ttft_prompt_multiple * (d.prefill_ms + d.step_ms)));
    return d;
}

latency_defaults profile_latency_defaults(const gguf_info &model, const profile_settings &s,
                                          const machine_roofline *roof) {
    if (s.gpu || s.rpc) {
        latency_defaults d;
        d.note = "the decode prediction describes this machine's CPU, not a GPU or RPC workers";
        return d;
    }
    machine_roofline m;
    std::string      basis;
    if (roof != nullptr && roof->read_bytes_per_s > 0) {
        m     = *roof;
        basis = "measured";
        // Fewer threads than were measured: the kernels' throughput scales with the threads, and
        // scaling the bandwidth too errs on the slow side (a few threads already read near the
        // bus's limit), so the targets stay loose rather than unreachable.
        if (roof->threads > 0 && s.n_threads > 0 && static_cast<uint32_t>(s.n_threads) < roof->threads) {
            const double scale = static_cast<double>(s.n_threads) / roof->threads;
            m.read_bytes_per_s *= scale;
            for (auto &[type, bps] : m.kernel_bytes_per_s) {
                bps *= scale;
            }
            for (auto &[type, bps] : m.batch_kernel_bytes_per_s) {
                bps *= scale;
            }
        }
    } else {
        m.read_bytes_per_s = k_fallback_read_bytes_per_s;
        basis              = "fallback";
    }
    const auto p = predict_decode(model, m);
    if (!p) {
        latency_defaults d;
        d.note = "the model lists no weights to predict from";
        return d;
    }
    const int32_t ctx =
        s.n_ctx_slot > 0
            ? s.n_ctx_slot
            : static_cast<int32_t>(std::min<uint64_t>(model.context_length.value_or(0), uint64_t{1} << 30));
    return targets_from_prediction(*p, s.parallel, ctx, std::move(basis));
}

std::string_view target_source_name(target_source s) {
    switch (s) {
    case target_source::flag:
        return "flag";
    case target_source::profile:
        return "profile";
    case target_source::none:
        break;
    }
    return "none";
}

settled_targets settle_latency_targets(std::optional<int32_t> ttft_flag, std::optional<int32_t> itl_flag,
                                       const latency_defaults &defaults) {
    settled_targets t;
    t.defaults        = defaults;
    const auto settle = [](std::optional<int32_t> flag, int32_t fallback, int32_t &ms, target_source &source) {
        if (flag) {
            ms     = std::max(*flag, 0);
            source = target_source::flag;
        } else if (fallback > 0) {
            ms     = fallback;
            source = target_source::profile;
        } else {
            ms     = 0;
            source = target_source::none;
        }
    };
    settle(ttft_flag, defaults.ttft_ms, t.ttft_ms, t.ttft_source);
    settle(itl_flag, defaults.itl_ms, t.itl_ms, t.itl_source);
    return t;
}

std::optional<target_flag> parse_target_flag(std::string_view text) {
    if (text == "auto") {
        return target_flag{true, 0};
    }
    if (text == "off") {
        return target_flag{false, 0};
    }
    int32_t v = 0;
    if (text.empty() || text.front() == '+' || text.front() == '-') {
        return std::nullopt;
    }
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < 0 || v > k_max_target_ms) {
        return std::nullopt;
    }
    return target_flag{false, v};
}

} // namespace inferbox

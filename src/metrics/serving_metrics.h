#pragma once
// The metrics one served model exposes, named as NVIDIA NIM names them (vLLM's names without the
// "vllm:" prefix) so existing dashboards and autoscalers work unchanged; each family carries a
// `model_name` label. With `vllm_names` every family is also exposed under vLLM's prefixed
// name, for dashboards built on vLLM (promtool's linter objects to the colon, Prometheus does
// not). inferbox's own additions are prefixed "inferbox_".
//
// Who updates what:
//   the engine thread: running/waiting gauges, KV usage, token counters, prefix-cache counters,
//                      queue time and time per output token;
//   the API layer:     request outcomes and the per-request histograms (TTFT, end-to-end
//                      latency, prompt and generation lengths).
// Reconciliation: started = success + failure + cancelled + (requests in flight).

#include "metrics/registry.h"

#include <memory>
#include <mutex>
#include <string>

namespace inferbox {

// Why a started request did not succeed; the `reason` label of inferbox_request_failure_total.
enum class failure_reason { overloaded, unavailable, engine_error, invalid };

struct serving_metrics {
    serving_metrics(registry &reg, const std::string &model_name, bool vllm_names = false);

    // Gauges.
    gauge &requests_running;
    gauge &requests_waiting;
    gauge &kv_cache_usage; // fraction 0..1 of KV cells held by running sequences

    // Counters.
    counter &prompt_tokens;
    counter &generation_tokens;
    counter &prefix_cache_queries; // prompt tokens looked up in the prefix cache
    counter &prefix_cache_hits;    // of those, tokens found there
    counter &requests_started;
    counter &success_stop;
    counter &success_length;
    counter &failure_overloaded;
    counter &failure_unavailable;
    counter &failure_engine;
    counter &failure_invalid;
    counter &requests_cancelled;
    // Speculative decoding (vLLM's spec_decode_* families): verification steps that carried a
    // draft, the drafted tokens, and the drafted tokens the served model accepted. Acceptance
    // rate = accepted / draft tokens.
    counter &spec_drafts;
    counter &spec_draft_tokens;
    counter &spec_accepted_tokens;

    // Histograms.
    histogram &time_to_first_token;
    histogram &time_per_output_token;
    histogram &e2e_latency;
    histogram &queue_time;
    histogram &prompt_len;
    histogram &generation_len;

    counter &failure(failure_reason r);

    // The LoRA adapters of running and waiting sequences (comma-separated names) and how many
    // may be loaded at once: the Gateway API Inference Extension's lora_requests_info (vLLM's
    // name), whose value is the time of the last change. Set by the engine thread.
    void set_lora_adapters(int32_t max_lora, std::string running, std::string waiting);

  private:
    struct lora_info {
        std::mutex  mu;
        std::string model_name, running, waiting;
        int32_t     max_lora = 0;
        double      updated  = 0; // unix seconds
    };
    std::shared_ptr<lora_info> lora_;
};

} // namespace inferbox

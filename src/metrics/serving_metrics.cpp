#include "metrics/serving_metrics.h"

#include <chrono>

namespace inferbox {

namespace {

std::vector<double> latency_buckets() {
    return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,  0.75,
            1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0};
}

std::vector<double> token_interval_buckets() {
    return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0};
}

std::vector<double> token_count_buckets() {
    return {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};
}

// vLLM's prefixed name as an alias of NIM's plain one, when asked for.
std::vector<std::string> vllm_alias(bool on, const std::string &name) {
    return on ? std::vector<std::string>{"vllm:" + name} : std::vector<std::string>{};
}

} // namespace

serving_metrics::serving_metrics(registry &reg, const std::string &model_name, bool vllm_names)
    : requests_running(reg.add_gauge("num_requests_running", "Requests being prefilled or decoded.",
                                     {{"model_name", model_name}}, vllm_alias(vllm_names, "num_requests_running"))),
      requests_waiting(reg.add_gauge("num_requests_waiting", "Sequences waiting for a slot.",
                                     {{"model_name", model_name}}, vllm_alias(vllm_names, "num_requests_waiting"))),
      kv_cache_usage(
          reg.add_gauge("kv_cache_usage_perc", "Fraction of KV-cache cells held by running sequences (1 = full).",
                        {{"model_name", model_name}},
                        vllm_names ? std::vector<std::string>{"vllm:kv_cache_usage_perc", "gpu_cache_usage_perc",
                                                              "vllm:gpu_cache_usage_perc"}
                                   : std::vector<std::string>{"gpu_cache_usage_perc"})),
      prompt_tokens(reg.add_counter("prompt_tokens_total", "Prompt tokens of admitted requests.",
                                    {{"model_name", model_name}}, vllm_alias(vllm_names, "prompt_tokens_total"))),
      generation_tokens(reg.add_counter("generation_tokens_total", "Generated tokens.", {{"model_name", model_name}},
                                        vllm_alias(vllm_names, "generation_tokens_total"))),
      prefix_cache_queries(reg.add_counter("prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
                                           {{"model_name", model_name}},
                                           vllm_alias(vllm_names, "prefix_cache_queries_total"))),
      prefix_cache_hits(reg.add_counter("prefix_cache_hits_total", "Prompt tokens found in the prefix cache.",
                                        {{"model_name", model_name}},
                                        vllm_alias(vllm_names, "prefix_cache_hits_total"))),
      requests_started(reg.add_counter("inferbox_request_started_total",
                                       "Requests accepted for generation (validated and tokenized).",
                                       {{"model_name", model_name}})),
      success_stop(reg.add_counter("request_success_total", "Requests that finished successfully.",
                                   {{"model_name", model_name}, {"finished_reason", "stop"}},
                                   vllm_alias(vllm_names, "request_success_total"))),
      success_length(reg.add_counter("request_success_total", "Requests that finished successfully.",
                                     {{"model_name", model_name}, {"finished_reason", "length"}},
                                     vllm_alias(vllm_names, "request_success_total"))),
      failure_overloaded(reg.add_counter("inferbox_request_failure_total", "Started requests that failed.",
                                         {{"model_name", model_name}, {"reason", "overloaded"}})),
      failure_unavailable(reg.add_counter("inferbox_request_failure_total", "Started requests that failed.",
                                          {{"model_name", model_name}, {"reason", "unavailable"}})),
      failure_engine(reg.add_counter("inferbox_request_failure_total", "Started requests that failed.",
                                     {{"model_name", model_name}, {"reason", "engine_error"}})),
      failure_invalid(reg.add_counter("inferbox_request_failure_total", "Started requests that failed.",
                                      {{"model_name", model_name}, {"reason", "invalid"}})),
      requests_cancelled(reg.add_counter("inferbox_request_cancelled_total",
                                         "Started requests whose client went away before the end.",
                                         {{"model_name", model_name}})),
      spec_drafts(
          reg.add_counter("spec_decode_num_drafts_total", "Speculative decoding: sequence steps that verified a draft.",
                          {{"model_name", model_name}}, vllm_alias(vllm_names, "spec_decode_num_drafts_total"))),
      spec_draft_tokens(reg.add_counter(
          "spec_decode_num_draft_tokens_total", "Speculative decoding: drafted tokens verified by the served model.",
          {{"model_name", model_name}}, vllm_alias(vllm_names, "spec_decode_num_draft_tokens_total"))),
      spec_accepted_tokens(reg.add_counter(
          "spec_decode_num_accepted_tokens_total", "Speculative decoding: drafted tokens the served model accepted.",
          {{"model_name", model_name}}, vllm_alias(vllm_names, "spec_decode_num_accepted_tokens_total"))),
      time_to_first_token(reg.add_histogram(
          "time_to_first_token_seconds", "Time from the request's arrival to its first generated token.",
          latency_buckets(), {{"model_name", model_name}}, vllm_alias(vllm_names, "time_to_first_token_seconds"))),
      time_per_output_token(reg.add_histogram("time_per_output_token_seconds",
                                              "Time between consecutive generated tokens of a sequence.",
                                              token_interval_buckets(), {{"model_name", model_name}},
                                              vllm_alias(vllm_names, "time_per_output_token_seconds"))),
      e2e_latency(reg.add_histogram("e2e_request_latency_seconds", "Time from the request's arrival to its last token.",
                                    latency_buckets(), {{"model_name", model_name}},
                                    vllm_alias(vllm_names, "e2e_request_latency_seconds"))),
      queue_time(reg.add_histogram("request_queue_time_seconds", "Time a request waited for a slot.", latency_buckets(),
                                   {{"model_name", model_name}}, vllm_alias(vllm_names, "request_queue_time_seconds"))),
      prompt_len(reg.add_histogram("request_prompt_tokens", "Prompt tokens per request.", token_count_buckets(),
                                   {{"model_name", model_name}}, vllm_alias(vllm_names, "request_prompt_tokens"))),
      generation_len(reg.add_histogram("request_generation_tokens", "Generated tokens per request.",
                                       token_count_buckets(), {{"model_name", model_name}},
                                       vllm_alias(vllm_names, "request_generation_tokens"))),
      lora_(std::make_shared<lora_info>()) {
    lora_->model_name = model_name;
    // One series per model, its labels rewritten at each change: an endpoint picker reads the
    // newest (the value is the change's time, as vLLM does).
    reg.add_gauge_set(
        "lora_requests_info",
        "LoRA adapters of running and waiting requests (labels); the value is when they last changed.",
        [info = lora_]() {
            std::lock_guard lock(info->mu);
            return registry::series_list{{{{"model_name", info->model_name},
                                           {"max_lora", std::to_string(info->max_lora)},
                                           {"running_lora_adapters", info->running},
                                           {"waiting_lora_adapters", info->waiting}},
                                          info->updated}};
        },
        vllm_alias(vllm_names, "lora_requests_info"));
}

void serving_metrics::set_lora_adapters(int32_t max_lora, std::string running, std::string waiting) {
    std::lock_guard lock(lora_->mu);
    if (lora_->max_lora == max_lora && lora_->running == running && lora_->waiting == waiting && lora_->updated > 0) {
        return;
    }
    lora_->max_lora = max_lora;
    lora_->running  = std::move(running);
    lora_->waiting  = std::move(waiting);
    lora_->updated  = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

counter &serving_metrics::failure(failure_reason r) {
    switch (r) {
    case failure_reason::overloaded:
        return failure_overloaded;
    case failure_reason::unavailable:
        return failure_unavailable;
    case failure_reason::invalid:
        return failure_invalid;
    case failure_reason::engine_error:
        break;
    }
    return failure_engine;
}

} // namespace inferbox

#include "metrics/embedding_metrics.h"

namespace inferbox {

namespace {

std::vector<double> latency_buckets() {
    return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0};
}

std::vector<double> batch_size_buckets() {
    return {1, 2, 4, 8, 16, 32, 64, 128, 256};
}

} // namespace

embedding_endpoint_metrics::embedding_endpoint_metrics(registry &reg, const std::string &model_name,
                                                       const std::string &endpoint)
    : started(reg.add_counter("inferbox_embedding_request_started_total",
                              "Embedding and ranking requests accepted (validated and tokenized).",
                              {{"model_name", model_name}, {"endpoint", endpoint}})),
      success(reg.add_counter("inferbox_embedding_request_success_total",
                              "Embedding and ranking requests answered successfully.",
                              {{"model_name", model_name}, {"endpoint", endpoint}})),
      failure_overloaded(reg.add_counter(
          "inferbox_embedding_request_failure_total", "Started embedding and ranking requests that failed.",
          {{"model_name", model_name}, {"endpoint", endpoint}, {"reason", "overloaded"}})),
      failure_unavailable(reg.add_counter(
          "inferbox_embedding_request_failure_total", "Started embedding and ranking requests that failed.",
          {{"model_name", model_name}, {"endpoint", endpoint}, {"reason", "unavailable"}})),
      failure_engine(reg.add_counter("inferbox_embedding_request_failure_total",
                                     "Started embedding and ranking requests that failed.",
                                     {{"model_name", model_name}, {"endpoint", endpoint}, {"reason", "engine_error"}})),
      cancelled(reg.add_counter("inferbox_embedding_request_cancelled_total",
                                "Started embedding and ranking requests whose client went away before the answer.",
                                {{"model_name", model_name}, {"endpoint", endpoint}})),
      latency(reg.add_histogram("inferbox_embedding_request_latency_seconds",
                                "Time from an embedding or ranking request's arrival to its answer.", latency_buckets(),
                                {{"model_name", model_name}, {"endpoint", endpoint}})) {}

counter &embedding_endpoint_metrics::failure(embedding_failure r) {
    switch (r) {
    case embedding_failure::overloaded:
        return failure_overloaded;
    case embedding_failure::unavailable:
        return failure_unavailable;
    case embedding_failure::engine_error:
        break;
    }
    return failure_engine;
}

embedding_metrics::embedding_metrics(registry &reg, const std::string &model_name)
    : embeddings(reg, model_name, "embeddings"), ranking(reg, model_name, "ranking"),
      inputs(reg.add_counter("inferbox_embedding_inputs_total", "Inputs (sequences) encoded by the embedder.",
                             {{"model_name", model_name}})),
      tokens(reg.add_counter("inferbox_embedding_tokens_total", "Tokens encoded by the embedder.",
                             {{"model_name", model_name}})),
      batches(reg.add_counter("inferbox_embedding_batches_total", "Batches (one llama.cpp call each) the embedder ran.",
                              {{"model_name", model_name}})),
      batch_inputs(reg.add_histogram("inferbox_embedding_batch_inputs", "Inputs encoded together in one batch.",
                                     batch_size_buckets(), {{"model_name", model_name}})),
      batch_seconds(reg.add_histogram("inferbox_embedding_batch_seconds", "Time the embedder spent on one batch.",
                                      latency_buckets(), {{"model_name", model_name}})),
      queued_inputs(reg.add_gauge("inferbox_embedding_queued_inputs", "Inputs waiting for an embedding batch.",
                                  {{"model_name", model_name}})) {}

} // namespace inferbox

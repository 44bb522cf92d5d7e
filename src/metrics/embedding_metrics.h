#pragma once
// The metrics of the embedding and ranking endpoints (inferbox's own series, prefixed
// "inferbox_embedding_"), each with a `model_name` label and, for request outcomes, an
// `endpoint` label ("embeddings" or "ranking").
//
// Who updates what:
//   the embedder thread: inputs and tokens encoded, batches, batch sizes and times, queue gauge;
//   the API layer:       request outcomes and end-to-end latency.
// Reconciliation per endpoint: started = success + failure + cancelled + (requests in flight).

#include "metrics/registry.h"

#include <string>

namespace inferbox {

// Why a started embedding request did not succeed; the `reason` label of
// inferbox_embedding_request_failure_total.
enum class embedding_failure { overloaded, unavailable, engine_error };

struct embedding_endpoint_metrics {
    embedding_endpoint_metrics(registry &reg, const std::string &model_name, const std::string &endpoint);

    counter   &started;
    counter   &success;
    counter   &failure_overloaded;
    counter   &failure_unavailable;
    counter   &failure_engine;
    counter   &cancelled;
    histogram &latency; // arrival to response, successful requests

    counter &failure(embedding_failure r);
};

struct embedding_metrics {
    embedding_metrics(registry &reg, const std::string &model_name);

    embedding_endpoint_metrics embeddings;
    embedding_endpoint_metrics ranking;

    counter   &inputs;        // sequences encoded
    counter   &tokens;        // tokens encoded
    counter   &batches;       // llama_decode/llama_encode calls
    histogram &batch_inputs;  // sequences per batch
    histogram &batch_seconds; // time of one batch
    gauge     &queued_inputs; // inputs waiting for a batch
};

} // namespace inferbox

#pragma once
// POST /v1/embeddings (OpenAI's shape, with NIM's input_type and truncate) and POST /v1/ranking
// (NIM's shape): validation, tokenization and truncation on the I/O thread, then one
// embedding_task on the embedder's queue; the answer is written when the embedder calls back.
// The client leaving cancels the task. Errors go through respond_error (api/errors.h mapping).

#include "api/auth.h"
#include "api/embeddings_schema.h"
#include "api/http_server.h"
#include "engine/embedder.h"
#include "metrics/embedding_metrics.h"

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>

namespace inferbox {

// What a handler needs besides the exchange: the served model's id and limits, where to report,
// whom to charge.
struct embedding_route_context {
    std::string                        model_id;
    embedding_limits                   limits;
    int32_t                            max_json_depth = 64;
    std::shared_ptr<embedding_metrics> metrics;             // may be null
    rate_limiter                      *limiter   = nullptr; // may be null; outlives every request
    size_t                             key_index = 0;
    std::shared_ptr<void>              hold; // keeps the model loaded until the answer (model_host)
};

// Each answers `ex` exactly once, at once (invalid request, queue full) or when the embedder has
// the vectors. `emb` is null while the model is loading or the server is draining (then 503).
// Call on the exchange's executor.
// `body` is the request's parsed JSON (the router parses it once, to route by its model).
void handle_embeddings(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<embedder> emb,
                       const embedding_route_context &ctx, const nlohmann::json &body);
void handle_ranking(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<embedder> emb,
                    const embedding_route_context &ctx, const nlohmann::json &body);

} // namespace inferbox

#pragma once
// The HTTP routes: OpenAI's /v1/completions, /v1/chat/completions and /v1/models, NIM's health
// and version endpoints. Requests are validated (schema.h), tokenized here on the I/O thread,
// and handed to the engine as generation_requests.

#include "api/auth.h"
#include "api/embeddings_schema.h"
#include "api/http_server.h"
#include "api/schema.h"
#include "engine/embedder.h"
#include "engine/engine.h"
#include "metrics/embedding_metrics.h"
#include "metrics/registry.h"
#include "metrics/serving_metrics.h"
#include "store/lora_catalog.h"

#include <memory>
#include <mutex>
#include <string>

namespace inferbox {

struct api_config {
    std::string model_id; // the id /v1/models shows and requests name
    std::string version;
    api_limits  limits;

    std::vector<std::string>         api_keys;               // empty: no authentication
    bool                             metrics_public = false; // /metrics without a key
    std::vector<std::string>         cors_origins;           // empty: CORS off; "*": any origin
    rate_limits                      rate;
    std::shared_ptr<registry>        metrics_registry; // what /metrics renders; may be null
    std::shared_ptr<serving_metrics> metrics;          // the served model's series; may be null

    // The LoRA adapter folder: each adapter is a model id of its own (parent: model_id). May be null.
    std::shared_ptr<lora_catalog> loras;

    embedding_limits                   embedding;     // /v1/embeddings and /v1/ranking
    std::shared_ptr<embedding_metrics> embed_metrics; // may be null
};

// Everything a generation job needs besides the request: where to report, whom to charge.
struct job_context {
    std::shared_ptr<serving_metrics> metrics;           // may be null
    rate_limiter                    *limiter = nullptr; // may be null; outlives every job
    size_t                           key     = 0;
};

class api_router {
  public:
    explicit api_router(api_config cfg);

    // Thread-safe. Until an engine is attached, readiness answers 503 and inference 503.
    void attach(std::shared_ptr<engine> eng);
    // Thread-safe. Until an embedder is attached, /v1/embeddings and /v1/ranking answer 503.
    void attach_embedder(std::shared_ptr<embedder> emb);
    void set_draining(bool draining); // readiness turns 503, new inference requests get 503
    // Thread-safe. The JSON bodies of GET /v1/metadata and /v1/manifest (NIM's endpoints), known
    // once the model's file and the hardware have been read; until then both answer 503.
    void set_documents(std::string metadata_json, std::string manifest_json);

    void handle(const std::shared_ptr<http_exchange> &ex);

    // Writes one access-log line for a finished exchange (health and metrics probes at debug
    // level, everything else at info).
    static void log_access(const access_record &r);

    const api_config &config() const { return cfg_; }

  private:
    std::shared_ptr<engine>   current_engine() const;
    std::shared_ptr<embedder> current_embedder() const; // null while draining
    void                      handle_models(const std::shared_ptr<http_exchange> &ex);
    void                      handle_inference(const std::shared_ptr<http_exchange> &ex, api_kind kind, size_t key);
    bool                      cors(const std::shared_ptr<http_exchange> &ex, const std::string &target);

    api_config                cfg_;
    api_keys                  keys_;
    rate_limiter              limiter_;
    mutable std::mutex        mu_;
    std::shared_ptr<engine>   engine_;
    std::shared_ptr<embedder> embedder_;
    bool                      draining_ = false;
    std::string               metadata_, manifest_;
    int64_t                   created_ = 0;
};

// Sends an error response (the one error-to-HTTP path for whole responses); `headers` are
// added to the ones the error kind implies (Retry-After for overloaded).
void respond_error(http_exchange &ex, const error &err, header_list headers = {});

} // namespace inferbox

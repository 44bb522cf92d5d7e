#pragma once
// The HTTP routes: OpenAI's /v1/completions, /v1/chat/completions and /v1/models, NIM's health
// and version endpoints. Requests are validated (schema.h), tokenized here on the I/O thread,
// and handed to the engine as generation_requests.

#include "api/http_server.h"
#include "api/schema.h"
#include "engine/engine.h"

#include <memory>
#include <mutex>
#include <string>

namespace inferbox {

struct api_config {
    std::string model_id; // the id /v1/models shows and requests name
    std::string version;
    api_limits  limits;
};

class api_router {
  public:
    explicit api_router(api_config cfg);

    // Thread-safe. Until an engine is attached, readiness answers 503 and inference 503.
    void attach(std::shared_ptr<engine> eng);
    void set_draining(bool draining); // readiness turns 503, new inference requests get 503

    void handle(const std::shared_ptr<http_exchange> &ex);

    const api_config &config() const { return cfg_; }

  private:
    std::shared_ptr<engine> current_engine() const;
    void                    handle_models(const std::shared_ptr<http_exchange> &ex);
    void                    handle_inference(const std::shared_ptr<http_exchange> &ex, api_kind kind);

    api_config              cfg_;
    mutable std::mutex      mu_;
    std::shared_ptr<engine> engine_;
    bool                    draining_ = false;
    int64_t                 created_  = 0;
};

// Sends an error response (the one error-to-HTTP path for whole responses); `headers` are
// added to the ones the error kind implies (Retry-After for overloaded).
void respond_error(http_exchange &ex, const error &err, header_list headers = {});

} // namespace inferbox

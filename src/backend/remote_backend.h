#pragma once
// A remote OpenAI-compatible server (another inferbox, a NIM, vLLM, llama-server, a cloud API)
// as a generation backend. Requests go out as OpenAI JSON (request_to_json), always streamed,
// over the HTTP client on the server's io_context; the answer's events come back through
// sse_reader. The backend keeps its own health: requests in flight (bounded), a cooldown after
// a 429/503 (its Retry-After), a circuit breaker (open after consecutive failures, one trial
// request once its open time passed), and an active probe of /models that also discovers the
// models when the configuration lists none.

#include "backend/backend_spec.h"
#include "backend/generation_backend.h"
#include "backend/http_client.h"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace inferbox {

enum class circuit_state { closed, open, half_open };
const char *circuit_name(circuit_state s);

// What the router and the documents show of a backend.
struct remote_status {
    bool          reachable   = true; // the last probe (or request) reached it
    circuit_state circuit     = circuit_state::closed;
    int32_t       in_flight   = 0;
    int64_t       cooldown_ms = 0; // left of a 429/503 cooldown
    uint64_t      requests = 0, failures = 0;
};

class remote_backend final : public generation_backend, public std::enable_shared_from_this<remote_backend> {
  public:
    // Checks the URL and the TLS set-up (CA file); `api_key` as resolve_backend_key read it.
    static result<std::shared_ptr<remote_backend>> create(backend_spec spec, std::string api_key,
                                                          boost::asio::any_io_executor exec);

    const std::string  &name() const { return spec_.name; }
    const backend_spec &spec() const { return spec_; }
    // The models it serves: the configured ones, else what its /models listed at the last probe.
    std::vector<backend_model> models() const;
    bool                       serves(const std::string &id) const;
    remote_status              status() const;

    // Starts the periodic probe (a first one at once); stop() ends it and refuses new requests.
    void start_probes();
    void stop();

    std::optional<error>                       check(const api_request &req) const override;
    std::optional<error>                       over_capacity(int32_t n_sequences) const override;
    result<backend_request>                    prepare(api_request req) const override;
    result<std::shared_ptr<generation_stream>> submit(std::shared_ptr<const backend_request> req,
                                                      std::function<void()>                  notify) override;
    bool                                       healthy() const override;

    // A JSON request relayed as it is (embeddings, ranking): `body` already names the backend's
    // model id. `done` runs once, on the call's strand, with the backend's answer (any status) or
    // the error that kept it from answering; the returned call cancels it (then `done` never runs).
    struct relayed {
        int         status = 0;
        std::string content_type;
        std::string body;
    };
    result<std::shared_ptr<http_call>> relay(const std::string &path, std::string body,
                                             std::function<void(result<relayed>)> done);
    // The id this backend gives model `id` (its models' rename), or "" when it does not serve it.
    std::string remote_id_of(const std::string &id) const;

    // How a request ended, for the breaker and the cooldown (remote_stream reports it).
    enum class outcome { success, failure, neutral };
    void finished(outcome o, bool trial, std::optional<std::chrono::milliseconds> cooldown);

    http_headers                        request_headers() const; // Authorization (its own key, never the client's)
    const http_url                     &url() const { return url_; }
    const http_client_options          &client_options() const { return opts_; }
    const boost::asio::any_io_executor &executor() const { return exec_; }

  private:
    remote_backend(backend_spec spec, std::string key, http_url url, http_client_options opts,
                   boost::asio::any_io_executor exec);
    // Admission under mu_: the error that refuses `n` more requests now, if any; with `claim`, a
    // half-open circuit's trial is taken by the caller (*trial set).
    std::optional<error> admission(int32_t n, bool claim, bool *trial) const;
    // Admits one request and counts it in flight (finished() releases it): whether it is the
    // half-open circuit's trial, or the refusal.
    result<bool> claim();
    void         probe();
    void         schedule_probe();

    backend_spec                 spec_;
    std::string                  key_;
    http_url                     url_;
    http_client_options          opts_;
    boost::asio::any_io_executor exec_;

    mutable std::mutex                         mu_;
    std::vector<backend_model>                 discovered_;
    bool                                       reachable_      = true;
    int32_t                                    failures_       = 0;  // consecutive
    std::chrono::steady_clock::time_point      open_until_     = {}; // epoch: closed
    mutable bool                               trial_out_      = false;
    std::chrono::steady_clock::time_point      cooldown_until_ = {};
    mutable int32_t                            in_flight_      = 0;
    uint64_t                                   requests_ = 0, n_failures_ = 0;
    bool                                       stopped_ = false;
    std::shared_ptr<boost::asio::steady_timer> timer_;
    std::shared_ptr<http_call>                 probe_call_;
};

} // namespace inferbox

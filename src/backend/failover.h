#pragma once
// A request's route as a generation backend: an ordered list of candidate backends (the local
// engine and remote servers) that serve the request's model. The first one with room takes it
// (later ones: "overflow"); when the one that took it fails before anything reached the client —
// refused at submit, or an error as its first event — the next candidate takes it over
// ("fallback"). When it fails after output reached the client, a stream that can be resumed
// (one choice, no output constraint, no tool call sent yet) continues on another candidate from
// the text already sent: a completion's prompt plus that text, or a chat request with that text
// as the final assistant message to continue (continue_final_message) — "failover"
// (docs/routing.md says when the result equals an unbroken run). Client errors (400, 413) never
// move. When every candidate failed before anything reached the client and a remote backend is
// among them, the whole list is tried again after a backoff ("retry"), as often as the retry
// policy allows and never past the request's deadline. Built per request by the API router, which
// orders the candidates by the model's routing policy.

#include "backend/generation_backend.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace inferbox {

struct route_candidate {
    std::shared_ptr<generation_backend> backend;
    std::string                         name; // "local" or the remote backend's name
};

// Another round over the candidates for a request that failed on every one of them before
// anything reached the client (--route-retries, --route-retry-backoff-ms).
struct retry_policy {
    int32_t                   max_retries = 0; // rounds after the first; 0: none
    std::chrono::milliseconds backoff{250};    // before the first retry; doubles up to max_backoff
    std::chrono::milliseconds max_backoff{2000};
    // Runs `fn` once, `delay` from now, on a thread of the caller's choosing (the router: a timer
    // on the exchange's executor). No retries without it.
    std::function<void(std::chrono::milliseconds delay, std::function<void()> fn)> schedule;
};

class failover_backend final : public generation_backend {
  public:
    // `reason`: why the first candidate is first (local, remote, pinned, affinity, balanced).
    failover_backend(std::vector<route_candidate> candidates, std::string reason, retry_policy retry = {});

    std::optional<error>                       check(const api_request &req) const override;
    std::optional<error>                       over_capacity(int32_t n_sequences) const override;
    result<backend_request>                    prepare(api_request req) const override;
    result<std::shared_ptr<generation_stream>> submit(std::shared_ptr<const backend_request> req,
                                                      std::function<void()>                  notify) override;
    bool                                       healthy() const override;

    // Errors that another backend may answer better: the backend's own trouble, not the request's.
    static bool movable(const error &err);
    // Errors worth another round after a backoff (retry_policy): they may pass in a moment.
    static bool retryable(const error &err);

  private:
    std::vector<route_candidate> candidates_;
    std::string                  reason_;
    retry_policy                 retry_;
    mutable size_t               first_ = 0; // the candidate over_capacity found room on
};

} // namespace inferbox

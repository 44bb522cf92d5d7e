#pragma once

// Start remote, move home (docs/routing.md): the models that a local-first route names a source
// for (`--route MODEL=local-first;pull=REF`) and that this server does not have yet are
// downloaded here in the background, one after another, while their requests go to the remote
// backends. What a pull does (download, verify, plan, load) is behind hooks, so the retries,
// backoff and cancellation are unit-tested with fakes (tests/unit/model_puller_test.cpp).
//
// A pull that fails for a reason that can pass (the network, the source busy, a full disk) is
// tried again after a backoff that doubles from `first_retry` up to `max_retry`; one that cannot
// (no such file, no access, a bad reference, a hash that does not match) fails for good, and the
// model stays remote until the server restarts. stop() cancels a download in progress (its part
// file stays for the next start to resume) and returns promptly.

#include "common/status.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace inferbox {

struct pull_job {
    size_t      index = 0; // the model host's entry
    std::string id;        // the model's id, as clients name it
    std::string ref;       // what to download: hf://… or http(s)://…
    std::string sha256;    // the file's expected SHA-256; empty: only a hash the source publishes
};

struct pull_hooks {
    using progress_fn = std::function<void(uint64_t received, uint64_t total)>; // total 0: unknown
    // Downloads the job's file (or finds it in the cache) and returns its path.
    std::function<result<std::string>(const pull_job &, const progress_fn &, const std::function<bool()> &cancelled)>
                                                                             fetch;
    std::function<void(const pull_job &, uint64_t received, uint64_t total)> on_progress; // may be empty
    // The file is here and verified: plan and load it. Runs on the puller's thread.
    std::function<void(const pull_job &, const std::string &file)> on_pulled;
    // A pull failed: `retry_in` > 0 when it will be tried again after that long, 0 when not.
    std::function<void(const pull_job &, const error &, std::chrono::milliseconds retry_in)> on_failed;
};

// Whether a failed pull is worth another try later.
bool pull_failure_passes(const error &e);

class model_puller {
  public:
    model_puller(std::vector<pull_job> jobs, pull_hooks hooks,
                 std::chrono::milliseconds first_retry = std::chrono::seconds(30),
                 std::chrono::milliseconds max_retry   = std::chrono::minutes(10));
    model_puller(const model_puller &)            = delete;
    model_puller &operator=(const model_puller &) = delete;
    ~model_puller() { stop(); }

    void start(); // once
    void stop();  // idempotent; joins the thread

    size_t pending() const; // jobs neither pulled nor failed for good

  private:
    struct state {
        pull_job                              job;
        std::chrono::steady_clock::time_point next_try;
        std::chrono::milliseconds             backoff{0};
        bool                                  done = false;
    };
    void run();
    bool attempt(state &s);

    pull_hooks                hooks_;
    std::chrono::milliseconds first_retry_, max_retry_;
    mutable std::mutex        mu_;
    std::condition_variable   cv_;
    std::vector<state>        jobs_; // under mu_ except while the thread runs a job's hooks
    std::atomic<bool>         stopping_{false};
    std::thread               thread_;
};

} // namespace inferbox

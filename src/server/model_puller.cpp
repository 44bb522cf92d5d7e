#include "server/model_puller.h"

#include <algorithm>

namespace inferbox {

bool pull_failure_passes(const error &e) {
    if (e.code == "cancelled") {
        return false;
    }
    switch (e.kind) {
    case error_kind::unavailable: // the network, the source busy (after the download's own retries)
    case error_kind::overloaded:
    case error_kind::timeout:
    case error_kind::upstream:
    case error_kind::internal: // the disk (full, unwritable): an operator can fix it while we wait
        return true;
    default: // not found, no access, a bad reference, a file too large, a hash that does not match
        return false;
    }
}

model_puller::model_puller(std::vector<pull_job> jobs, pull_hooks hooks, std::chrono::milliseconds first_retry,
                           std::chrono::milliseconds max_retry)
    : hooks_(std::move(hooks)), first_retry_(first_retry), max_retry_(max_retry) {
    for (auto &j : jobs) {
        jobs_.push_back({std::move(j), std::chrono::steady_clock::time_point{}, std::chrono::milliseconds(0), false});
    }
}

void model_puller::start() {
    if (!thread_.joinable() && !jobs_.empty()) {
        thread_ = std::thread([this] { run(); });
    }
}

void model_puller::stop() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
        cv_.notify_all();
    }
    if (thread_.joinable()) {
        thread_.join();
    }
}

size_t model_puller::pending() const {
    std::lock_guard lock(mu_);
    return static_cast<size_t>(std::count_if(jobs_.begin(), jobs_.end(), [](const state &s) { return !s.done; }));
}

void model_puller::run() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
        const auto now = std::chrono::steady_clock::now();
        auto       due =
            std::find_if(jobs_.begin(), jobs_.end(), [&](const state &s) { return !s.done && s.next_try <= now; });
        if (due == jobs_.end()) {
            auto next = std::chrono::steady_clock::time_point::max();
            for (const auto &s : jobs_) {
                if (!s.done) {
                    next = std::min(next, s.next_try);
                }
            }
            if (next == std::chrono::steady_clock::time_point::max()) {
                return; // every job is pulled or failed for good
            }
            cv_.wait_until(lock, next, [&] { return stopping_.load(); });
            continue;
        }
        state work = *due; // the thread alone changes jobs_ entries; a copy keeps hooks off the lock
        lock.unlock();
        const bool finished = attempt(work);
        lock.lock();
        auto &s    = jobs_[static_cast<size_t>(due - jobs_.begin())];
        s.done     = finished;
        s.backoff  = work.backoff;
        s.next_try = work.next_try;
    }
}

// One try at a job; true when it is settled (pulled, or failed for good). Sets the next try.
bool model_puller::attempt(state &s) {
    const auto progress = [this, &s](uint64_t received, uint64_t total) {
        if (hooks_.on_progress) {
            hooks_.on_progress(s.job, received, total);
        }
    };
    const auto cancelled = [this] { return stopping_.load(); };
    auto       file      = hooks_.fetch(s.job, progress, cancelled);
    if (file) {
        hooks_.on_pulled(s.job, *file);
        return true;
    }
    if (stopping_) {
        return false; // cancelled: the part file stays for the next start
    }
    const bool again = pull_failure_passes(file.err());
    if (again) {
        s.backoff  = s.backoff.count() == 0 ? first_retry_ : std::min(s.backoff * 2, max_retry_);
        s.next_try = std::chrono::steady_clock::now() + s.backoff;
    }
    if (hooks_.on_failed) {
        hooks_.on_failed(s.job, file.err(), again ? s.backoff : std::chrono::milliseconds(0));
    }
    return !again;
}

} // namespace inferbox

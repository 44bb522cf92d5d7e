#pragma once
// A one-shot wake-up between threads: notify() from any thread (a stream's "events are ready"
// callback, a cancellation), wait() on the thread that follows the work. A notify() before the
// wait() is not lost; each wait() consumes the signal it returns on.

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace inferbox {

class waker {
  public:
    void notify() {
        std::lock_guard lock(mu_);
        signalled_ = true;
        cv_.notify_all();
    }
    // False once `deadline` passed without a signal.
    bool wait(std::chrono::steady_clock::time_point deadline) {
        std::unique_lock lock(mu_);
        const bool       got = cv_.wait_until(lock, deadline, [this] { return signalled_; });
        signalled_           = false;
        return got;
    }

  private:
    std::mutex              mu_;
    std::condition_variable cv_;
    bool                    signalled_ = false;
};

} // namespace inferbox

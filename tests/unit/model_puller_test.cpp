// The background puller (start remote, move home) with fake hooks: retries with backoff for
// failures that can pass, none for those that cannot, cancellation by stop(), jobs in order.
#include "server/model_puller.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

namespace inferbox {
namespace {

using namespace std::chrono_literals;

// Records what the hooks saw; `fetch` answers from a script, one entry per call.
struct recorder {
    std::mutex                                        mu;
    std::vector<std::string>                          events;
    std::vector<std::function<result<std::string>()>> script;
    std::atomic<size_t>                               calls{0}; // written under mu, read by the tests too

    void note(std::string e) {
        std::lock_guard lock(mu);
        events.push_back(std::move(e));
    }
    std::vector<std::string> seen() {
        std::lock_guard lock(mu);
        return events;
    }
    pull_hooks hooks() {
        pull_hooks h;
        h.fetch = [this](const pull_job &j, const pull_hooks::progress_fn &progress,
                         const std::function<bool()> &) -> result<std::string> {
            progress(50, 100);
            std::function<result<std::string>()> next;
            {
                std::lock_guard lock(mu);
                next = calls < script.size() ? script[calls] : script.back();
                ++calls;
            }
            note("fetch " + j.id);
            return next();
        };
        h.on_progress = [this](const pull_job &j, uint64_t received, uint64_t total) {
            note("progress " + j.id + " " + std::to_string(received) + "/" + std::to_string(total));
        };
        h.on_pulled = [this](const pull_job &j, const std::string &file) { note("pulled " + j.id + " " + file); };
        h.on_failed = [this](const pull_job &j, const error &e, std::chrono::milliseconds again) {
            note("failed " + j.id + " " + e.message + " again=" + std::to_string(again.count()));
        };
        return h;
    }
};

bool wait_for(const std::function<bool()> &cond, std::chrono::milliseconds limit = 5s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!cond()) {
        if (std::chrono::steady_clock::now() > until) {
            return false;
        }
        std::this_thread::sleep_for(2ms);
    }
    return true;
}

TEST(ModelPuller, PullsEachJobInOrderAndReportsProgress) {
    recorder rec;
    rec.script = {[] { return result<std::string>(std::string("/store/a.gguf")); }};
    model_puller p({{1, "a", "hf://o/r/a.gguf", ""}, {2, "b", "https://h/b.gguf", ""}}, rec.hooks());
    EXPECT_EQ(p.pending(), 2U);
    p.start();
    ASSERT_TRUE(wait_for([&] { return p.pending() == 0; }));
    p.stop();
    const std::vector<std::string> want = {"progress a 50/100", "fetch a", "pulled a /store/a.gguf",
                                           "progress b 50/100", "fetch b", "pulled b /store/a.gguf"};
    EXPECT_EQ(rec.seen(), want);
}

TEST(ModelPuller, AFailureThatCanPassIsRetriedWithADoublingBackoff) {
    recorder rec;
    rec.script = {[] {
                      return result<std::string>(error{error_kind::unavailable, "connection refused", "", ""});
                  },
                  [] {
                      return result<std::string>(error{error_kind::unavailable, "connection reset", "", ""});
                  },
                  [] { return result<std::string>(std::string("/f")); }};
    model_puller p({{1, "a", "hf://o/r/a.gguf", ""}}, rec.hooks(), 20ms, 30ms);
    p.start();
    ASSERT_TRUE(wait_for([&] { return p.pending() == 0; }));
    p.stop();
    std::vector<std::string> failures;
    for (const auto &e : rec.seen()) {
        if (e.rfind("failed", 0) == 0 || e.rfind("pulled", 0) == 0) {
            failures.push_back(e);
        }
    }
    const std::vector<std::string> want = {"failed a connection refused again=20", "failed a connection reset again=30",
                                           "pulled a /f"};
    EXPECT_EQ(failures, want); // 20 ms, then doubled but capped at 30 ms
}

TEST(ModelPuller, AFailureThatCannotPassIsNotRetriedAndTheNextJobRuns) {
    recorder rec;
    rec.script = {[] {
                      return result<std::string>(error{error_kind::not_found, "404 Not Found", "", ""});
                  },
                  [] { return result<std::string>(std::string("/b")); }};
    model_puller p({{1, "a", "https://h/a.gguf", ""}, {2, "b", "https://h/b.gguf", ""}}, rec.hooks(), 1ms, 1ms);
    p.start();
    ASSERT_TRUE(wait_for([&] { return p.pending() == 0; }));
    p.stop();
    auto seen = rec.seen();
    EXPECT_NE(std::find(seen.begin(), seen.end(), "failed a 404 Not Found again=0"), seen.end());
    EXPECT_NE(std::find(seen.begin(), seen.end(), "pulled b /b"), seen.end());
    EXPECT_EQ(rec.calls, 2U);
}

TEST(ModelPuller, StopCancelsADownloadInProgress) {
    std::atomic<bool> in_fetch{false};
    std::atomic<bool> saw_cancel{false};
    pull_hooks        h;
    h.fetch = [&](const pull_job &, const pull_hooks::progress_fn &,
                  const std::function<bool()> &cancelled) -> result<std::string> {
        in_fetch = true;
        while (!cancelled()) {
            std::this_thread::sleep_for(1ms);
        }
        saw_cancel = true;
        return error{error_kind::unavailable, "the download was cancelled", "", "cancelled"};
    };
    std::atomic<int> pulled{0}, failed{0};
    h.on_pulled = [&](const pull_job &, const std::string &) { ++pulled; };
    h.on_failed = [&](const pull_job &, const error &, std::chrono::milliseconds) { ++failed; };
    model_puller p({{1, "a", "https://h/a.gguf", ""}}, h);
    p.start();
    ASSERT_TRUE(wait_for([&] { return in_fetch.load(); }));
    const auto began = std::chrono::steady_clock::now();
    p.stop();
    EXPECT_LT(std::chrono::steady_clock::now() - began, 1s);
    EXPECT_TRUE(saw_cancel);
    EXPECT_EQ(pulled.load(), 0);
    EXPECT_EQ(failed.load(), 0); // a cancelled pull is neither a failure nor retried
    EXPECT_EQ(p.pending(), 1U);
}

TEST(ModelPuller, StopDuringABackoffReturnsAtOnce) {
    recorder rec;
    rec.script = {[] { return result<std::string>(error{error_kind::unavailable, "refused", "", ""}); }};
    model_puller p({{1, "a", "https://h/a.gguf", ""}}, rec.hooks(), 1h, 1h);
    p.start();
    ASSERT_TRUE(wait_for([&] { return rec.calls == 1 && rec.seen().size() >= 3; }));
    const auto began = std::chrono::steady_clock::now();
    p.stop();
    EXPECT_LT(std::chrono::steady_clock::now() - began, 1s);
}

TEST(ModelPuller, WhichFailuresPass) {
    EXPECT_TRUE(pull_failure_passes(error{error_kind::unavailable, "network", "", ""}));
    EXPECT_TRUE(pull_failure_passes(error{error_kind::internal, "disk full", "", ""}));
    EXPECT_FALSE(pull_failure_passes(error{error_kind::not_found, "404", "", ""}));
    EXPECT_FALSE(pull_failure_passes(error{error_kind::unauthorized, "401", "", ""}));
    EXPECT_FALSE(pull_failure_passes(error{error_kind::invalid_request, "sha256 mismatch", "", ""}));
    EXPECT_FALSE(pull_failure_passes(error{error_kind::unavailable, "cancelled", "", "cancelled"}));
}

TEST(ModelPuller, NoJobsNoThread) {
    model_puller p({}, pull_hooks{});
    p.start();
    EXPECT_EQ(p.pending(), 0U);
    p.stop();
}

} // namespace
} // namespace inferbox

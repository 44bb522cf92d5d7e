// The serving life cycle (server/server_runtime.h) driven through a fake target: a requested stop
// drains and exits 0, an unhealthy engine exits 2, the drain waits for quiet up to its timeout,
// the flush waits for the last bytes up to its own, and a stop may come from any thread. Run
// under ThreadSanitizer with the rest of the unit tier.

#include "server/server_runtime.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>

using namespace inferbox;
using namespace std::chrono_literals;

namespace {

// Counts what the runtime asked for; its answers change as the test sets them.
class fake_target final : public runtime_target {
  public:
    std::atomic<bool>    healthy_now{true};
    std::atomic<int>     quiet_after{0}; // quiet() answers true from this call on (-1: never)
    std::atomic<int64_t> writing_now{0};
    std::atomic<int64_t> preparing_now{0};
    std::atomic<int>     quiet_calls{0}, watchdog_calls{0}, stop_admitting_calls{0}, end_remaining_calls{0};
    std::atomic<bool>    ended_before_quiet{false};

    bool healthy() override { return healthy_now.load(); }
    void watchdog() override { ++watchdog_calls; }
    void stop_admitting() override { ++stop_admitting_calls; }
    bool quiet() override {
        const int n = quiet_calls++;
        return quiet_after.load() >= 0 && n >= quiet_after.load();
    }
    void end_remaining() override {
        ++end_remaining_calls;
        // Ending the rest is what lets the writes finish in the real server.
        writing_now = writing_now.load() - std::min<int64_t>(writing_now.load(), 1);
    }
    int64_t writing() override { return writing_now.load(); }
    int64_t preparing() override { return preparing_now.load(); }
};

runtime_timing fast(std::chrono::milliseconds shutdown = 2000ms, std::chrono::milliseconds flush = 2000ms) {
    runtime_timing t;
    t.poll             = 1ms;
    t.drain_poll       = 1ms;
    t.flush_poll       = 1ms;
    t.shutdown_timeout = shutdown;
    t.flush_timeout    = flush;
    return t;
}

} // namespace

TEST(server_runtime, a_requested_stop_drains_and_exits_0) {
    fake_target    target;
    server_runtime rt(target, fast());
    EXPECT_EQ(rt.phase(), runtime_phase::serving);
    EXPECT_EQ(rt.request_stop(), 0);
    EXPECT_EQ(rt.request_stop(), 1); // a second stop is counted (the signal watcher exits on it)
    const auto out = rt.run();
    EXPECT_EQ(out.exit_code, 0);
    EXPECT_TRUE(out.drained);
    EXPECT_EQ(out.unwritten, 0);
    EXPECT_EQ(target.stop_admitting_calls.load(), 1);
    EXPECT_EQ(target.end_remaining_calls.load(), 1);
    EXPECT_EQ(rt.phase(), runtime_phase::stopped);
    EXPECT_STREQ(runtime_phase_name(rt.phase()), "stopped");
}

TEST(server_runtime, serving_polls_the_watchdog_until_a_stop_from_another_thread) {
    fake_target    target;
    server_runtime rt(target, fast());
    std::thread    stopper([&] {
        while (target.watchdog_calls.load() < 5) {
            std::this_thread::sleep_for(1ms);
        }
        EXPECT_EQ(rt.phase(), runtime_phase::serving);
        rt.request_stop();
    });
    const auto     out = rt.run();
    stopper.join();
    EXPECT_EQ(out.exit_code, 0);
    EXPECT_GE(target.watchdog_calls.load(), 5);
    EXPECT_EQ(target.stop_admitting_calls.load(), 1);
}

TEST(server_runtime, an_engine_that_cannot_go_on_exits_2_after_draining) {
    fake_target target;
    target.healthy_now = false;
    server_runtime rt(target, fast());
    const auto     out = rt.run();
    EXPECT_EQ(out.exit_code, 2);
    EXPECT_EQ(target.stop_admitting_calls.load(), 1); // readiness turns 503 before anything ends
    EXPECT_EQ(target.end_remaining_calls.load(), 1);
}

TEST(server_runtime, the_drain_waits_for_quiet) {
    fake_target target;
    target.quiet_after = 20;
    server_runtime rt(target, fast());
    rt.request_stop();
    const auto out = rt.run();
    EXPECT_TRUE(out.drained);
    EXPECT_EQ(target.quiet_calls.load(), 21); // asked until it was quiet, not once more
    EXPECT_EQ(out.exit_code, 0);
}

TEST(server_runtime, the_drain_ends_at_the_shutdown_timeout) {
    fake_target target;
    target.quiet_after = -1; // a request that never finishes
    server_runtime rt(target, fast(50ms));
    rt.request_stop();
    const auto started = std::chrono::steady_clock::now();
    const auto out     = rt.run();
    const auto took    = std::chrono::steady_clock::now() - started;
    EXPECT_FALSE(out.drained);
    EXPECT_GE(took, 50ms);
    EXPECT_LT(took, 5s);
    EXPECT_EQ(target.end_remaining_calls.load(), 1); // what is left ends with an error, then the flush
    EXPECT_EQ(out.exit_code, 0);
}

TEST(server_runtime, the_flush_waits_for_the_last_bytes_but_not_for_preparation) {
    // Three responses open; ending the rest finishes one; the test writes out the others.
    fake_target target;
    target.writing_now = 3;
    server_runtime rt(target, fast());
    rt.request_stop();
    std::thread writer([&] {
        while (rt.phase() != runtime_phase::flushing && rt.phase() != runtime_phase::stopped) {
            std::this_thread::sleep_for(1ms);
        }
        std::this_thread::sleep_for(10ms);
        target.writing_now = 0;
    });
    auto        out = rt.run();
    writer.join();
    EXPECT_EQ(out.unwritten, 0);
    EXPECT_EQ(target.writing_now.load(), 0);

    // Requests still being prepared have nothing to write: they are not waited for, and are
    // reported so that the caller exits without joining them.
    fake_target preparing;
    preparing.writing_now   = 3; // two of the three open exchanges are still being prepared
    preparing.preparing_now = 2;
    server_runtime rt2(preparing, fast(2000ms, 5000ms));
    rt2.request_stop();
    const auto started = std::chrono::steady_clock::now();
    out                = rt2.run();
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
    EXPECT_EQ(out.unwritten, 0);
    EXPECT_EQ(out.preparing, 2);
}

TEST(server_runtime, a_client_that_stops_reading_is_given_up_at_the_flush_timeout) {
    fake_target target;
    target.writing_now = 5;
    server_runtime rt(target, fast(2000ms, 30ms));
    rt.request_stop();
    const auto out = rt.run();
    EXPECT_EQ(out.unwritten, 4); // one ended by end_remaining(); four stuck
    EXPECT_EQ(rt.phase(), runtime_phase::stopped);
}

TEST(io_thread_pool, a_throwing_handler_is_reported_and_the_thread_goes_on) {
    boost::asio::io_context ioc;
    auto                    guard = boost::asio::make_work_guard(ioc);
    std::atomic<int>        reported{0};
    std::atomic<int>        ran{0};
    std::string             where;
    std::mutex              mu;
    io_thread_pool          pool(ioc, 2, [&](const char *w, const std::string &what) {
        std::lock_guard lock(mu);
        where = std::string(w) + ": " + what;
        ++reported;
    });
    boost::asio::post(ioc, [] { throw std::runtime_error("handler failed"); });
    for (int i = 0; i < 10; ++i) {
        boost::asio::post(ioc, [&] { ++ran; });
    }
    for (int i = 0; i < 2000 && (ran.load() < 10 || reported.load() < 1); ++i) {
        std::this_thread::sleep_for(1ms);
    }
    EXPECT_EQ(reported.load(), 1);
    EXPECT_EQ(ran.load(), 10);
    {
        std::lock_guard lock(mu);
        EXPECT_EQ(where, "io_thread: handler failed");
    }
    pool.stop();
}

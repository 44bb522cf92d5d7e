#pragma once

// The serving life cycle after start-up, as a small state machine that knows nothing of HTTP or
// llama.cpp: serve until a stop is asked for (SIGTERM/SIGINT) or an engine cannot go on, then
// drain (stop admitting, let in-flight work finish up to the shutdown timeout), end what is left,
// and let the last bytes go out. What it drives is behind runtime_target, so the unit tests run
// every path with a fake (tests/unit/server_runtime_test.cpp).
//
//   serving ──stop asked──▶ draining ──quiet or timeout──▶ flushing ──written or timeout──▶ stopped
//      └──engine unhealthy (exit 2)──┘

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace inferbox {

// What the runtime watches and stops. Each call comes from the thread running
// server_runtime::run().
class runtime_target {
  public:
    runtime_target()                                  = default;
    runtime_target(const runtime_target &)            = delete;
    runtime_target &operator=(const runtime_target &) = delete;
    virtual ~runtime_target()                         = default;

    virtual bool    healthy() = 0;        // every loaded engine can go on
    virtual void    watchdog() {}         // once per poll while serving (the RPC workers' deadline)
    virtual void    stop_admitting() = 0; // readiness answers 503; the listener closes
    virtual bool    quiet()          = 0; // nothing loading, being prepared, running, or in flight remotely
    virtual void    end_remaining()  = 0; // what still runs ends with an error event; queued work with an error
    virtual int64_t writing()        = 0; // responses whose last bytes have not gone out
    virtual int64_t preparing()      = 0; // requests still being prepared (tokenizing), which have nothing to write
};

struct runtime_timing {
    std::chrono::milliseconds poll{50};                // how often serving checks health and stop requests
    std::chrono::milliseconds drain_poll{20};          // how often draining checks for quiet
    std::chrono::milliseconds flush_poll{10};          // how often flushing checks what is still written
    std::chrono::milliseconds shutdown_timeout{30000}; // --shutdown-timeout: the drain's limit
    std::chrono::milliseconds flush_timeout{31000};    // the write timeout and a second: the flush's limit
};

enum class runtime_phase { serving, draining, flushing, stopped };
const char *runtime_phase_name(runtime_phase p);

struct runtime_outcome {
    int     exit_code = 0;    // 0: stopped as asked; 2: an engine could not go on
    bool    drained   = true; // the drain ended quiet rather than at the shutdown timeout
    int64_t unwritten = 0;    // responses still being written when the flush gave up
    int64_t preparing = 0;    // requests still being prepared at the end (the caller exits without them)
};

class server_runtime {
  public:
    server_runtime(runtime_target &target, runtime_timing timing);

    // Serves until request_stop() or an unhealthy engine, then drains and flushes. Call once.
    runtime_outcome run();

    // Thread-safe (a signal watcher calls it): asks run() to drain. Returns how many stops had been
    // asked before this one (0 the first time).
    int request_stop();

    runtime_phase phase() const { return phase_.load(); }

  private:
    runtime_target            &target_;
    runtime_timing             timing_;
    std::atomic<int>           stops_{0};
    std::atomic<runtime_phase> phase_{runtime_phase::serving};
};

// SIGINT and SIGTERM, watched on a thread of its own: the first asks the runtime to stop (and logs
// that it drains for up to `shutdown_timeout_s`); a second exits the process at once (code 1).
class signal_watcher {
  public:
    signal_watcher(server_runtime &runtime, int32_t shutdown_timeout_s);
    signal_watcher(const signal_watcher &)            = delete;
    signal_watcher &operator=(const signal_watcher &) = delete;
    ~signal_watcher();

  private:
    struct state;
    std::unique_ptr<state> state_;
    std::thread            thread_;
};

// The I/O threads: each runs `ioc`. A completion handler that throws leaves run(); the thread
// reports it through `on_unhandled` ("io_thread", what) and goes on. stop() stops `ioc` and joins.
class io_thread_pool {
  public:
    using report_fn = std::function<void(const char *where, const std::string &what)>;
    io_thread_pool(boost::asio::io_context &ioc, int32_t n_threads, report_fn on_unhandled);
    io_thread_pool(const io_thread_pool &)            = delete;
    io_thread_pool &operator=(const io_thread_pool &) = delete;
    ~io_thread_pool() { stop(); }
    void stop();

  private:
    boost::asio::io_context &ioc_;
    report_fn                on_unhandled_;
    std::vector<std::thread> threads_;
};

} // namespace inferbox

#include "server/server_runtime.h"

#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <exception>

namespace inferbox {

namespace net = boost::asio;

const char *runtime_phase_name(runtime_phase p) {
    switch (p) {
    case runtime_phase::serving:
        return "serving";
    case runtime_phase::draining:
        return "draining";
    case runtime_phase::flushing:
        return "flushing";
    case runtime_phase::stopped:
        break;
    }
    return "stopped";
}

server_runtime::server_runtime(runtime_target &target, runtime_timing timing) : target_(target), timing_(timing) {}

int server_runtime::request_stop() {
    return stops_.fetch_add(1);
}

runtime_outcome server_runtime::run() {
    using clock = std::chrono::steady_clock;
    runtime_outcome out;
    while (stops_.load() == 0 && target_.healthy()) {
        std::this_thread::sleep_for(timing_.poll);
        target_.watchdog();
    }
    if (!target_.healthy()) {
        spdlog::error("the engine cannot continue; exiting so the orchestrator restarts the server");
        out.exit_code = 2;
    }

    phase_.store(runtime_phase::draining);
    target_.stop_admitting();
    const auto drain_deadline = clock::now() + timing_.shutdown_timeout;
    out.drained               = false;
    while (clock::now() < drain_deadline) {
        if (target_.quiet()) {
            out.drained = true;
            break;
        }
        std::this_thread::sleep_for(timing_.drain_poll);
    }

    // Anything still running ends with an error event; then the last bytes of every answer go out.
    // A client that stopped reading is dropped by the write timeout, so the flush is bounded by it;
    // a fixed pause would lose the final events on a busy machine. Requests still being prepared
    // have nothing to flush and are not waited for.
    phase_.store(runtime_phase::flushing);
    target_.end_remaining();
    const auto flush_deadline = clock::now() + timing_.flush_timeout;
    const auto writing        = [this] { return target_.writing() - std::max<int64_t>(0, target_.preparing()); };
    while (writing() > 0 && clock::now() < flush_deadline) {
        std::this_thread::sleep_for(timing_.flush_poll);
    }
    out.unwritten = std::max<int64_t>(0, writing());
    if (out.unwritten > 0) {
        spdlog::warn("{} responses were still being written at exit", out.unwritten);
    }
    out.preparing = std::max<int64_t>(0, target_.preparing());
    phase_.store(runtime_phase::stopped);
    return out;
}

struct signal_watcher::state {
    net::io_context                                             ioc;
    net::signal_set                                             sigs{ioc, SIGINT, SIGTERM};
    std::function<void(const boost::system::error_code &, int)> on_signal;
};

signal_watcher::signal_watcher(server_runtime &runtime, int32_t shutdown_timeout_s)
    : state_(std::make_unique<state>()) {
    state *st     = state_.get();
    st->on_signal = [st, &runtime, shutdown_timeout_s](const boost::system::error_code &ec, int sig) {
        if (ec) {
            return;
        }
        if (runtime.request_stop() > 0) {
            spdlog::warn("second signal ({}): exiting now", sig);
            std::_Exit(1);
        }
        spdlog::info("signal {}: draining (readiness is now 503, up to {} s)", sig, shutdown_timeout_s);
        st->sigs.async_wait(st->on_signal);
    };
    st->sigs.async_wait(st->on_signal);
    thread_ = std::thread([st] { st->ioc.run(); });
}

signal_watcher::~signal_watcher() {
    state_->ioc.stop();
    thread_.join();
}

io_thread_pool::io_thread_pool(net::io_context &ioc, int32_t n_threads, report_fn on_unhandled)
    : ioc_(ioc), on_unhandled_(std::move(on_unhandled)) {
    threads_.reserve(size_t(std::max(n_threads, 0)));
    for (int32_t i = 0; i < n_threads; ++i) {
        threads_.emplace_back([this] {
            for (;;) {
                try {
                    ioc_.run();
                    return;
                } catch (const std::exception &e) {
                    on_unhandled_("io_thread", e.what());
                }
            }
        });
    }
}

void io_thread_pool::stop() {
    ioc_.stop();
    for (auto &t : threads_) {
        if (t.joinable()) {
            t.join();
        }
    }
    threads_.clear();
}

} // namespace inferbox

#include "metrics/timeline.h"

#include <algorithm>

namespace inferbox {

void metrics_timeline::start(sources_fn sources, std::chrono::milliseconds interval) {
    stop();
    interval_ = interval;
    {
        std::lock_guard lock(run_mu_);
        stopping_ = false;
    }
    thread_ = std::thread([this, sources = std::move(sources), interval] {
        const auto unix_ms = [] {
            return std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                .count();
        };
        auto next = std::chrono::steady_clock::now();
        for (;;) {
            record(unix_ms(), sources());
            next += interval;
            std::unique_lock lock(run_mu_);
            if (run_cv_.wait_until(lock, next, [this] { return stopping_; })) {
                return;
            }
        }
    });
}

void metrics_timeline::stop() {
    {
        std::lock_guard lock(run_mu_);
        stopping_ = true;
    }
    run_cv_.notify_all();
    if (thread_.joinable()) {
        thread_.join();
    }
}

void metrics_timeline::record(int64_t now_ms, const std::vector<std::shared_ptr<serving_metrics>> &sources) {
    totals          now;
    timeline_sample s;
    s.t_ms = now_ms;
    for (const auto &m : sources) {
        if (!m) {
            continue;
        }
        now.output += static_cast<double>(m->generation_tokens.value());
        now.prompt += static_cast<double>(m->prompt_tokens.value());
        now.ttft_sum += m->time_to_first_token.sum();
        now.ttft_count += static_cast<double>(m->time_to_first_token.count());
        now.itl_sum += m->time_per_output_token.sum();
        now.itl_count += static_cast<double>(m->time_per_output_token.count());
        s.requests_running += m->requests_running.value();
        s.requests_waiting += m->requests_waiting.value();
        s.kv_cache_usage = std::max(s.kv_cache_usage, m->kv_cache_usage.value());
    }
    std::lock_guard lock(mu_);
    if (last_ && now_ms > last_ms_) {
        const double dt = static_cast<double>(now_ms - last_ms_) / 1000.0;
        // Counters only grow; a model whose metrics left the list must not make a rate negative.
        const auto delta      = [](double a, double b) { return std::max(0.0, a - b); };
        s.output_tokens_per_s = delta(now.output, last_->output) / dt;
        s.prompt_tokens_per_s = delta(now.prompt, last_->prompt) / dt;
        if (const double n = delta(now.ttft_count, last_->ttft_count); n > 0) {
            s.ttft_ms = delta(now.ttft_sum, last_->ttft_sum) / n * 1000.0;
        }
        if (const double n = delta(now.itl_count, last_->itl_count); n > 0) {
            s.itl_ms = delta(now.itl_sum, last_->itl_sum) / n * 1000.0;
        }
    }
    last_    = now;
    last_ms_ = now_ms;
    samples_.push_back(s);
    while (samples_.size() > capacity_) {
        samples_.pop_front();
    }
}

std::vector<timeline_sample> metrics_timeline::since(int64_t after_ms) const {
    std::lock_guard              lock(mu_);
    std::vector<timeline_sample> out;
    for (const auto &s : samples_) {
        if (s.t_ms > after_ms) {
            out.push_back(s);
        }
    }
    return out;
}

} // namespace inferbox

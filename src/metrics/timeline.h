#pragma once
// The last minutes of the serving metrics as a time series, for the console's dashboard: no
// Prometheus needed to see throughput, queue, KV-cache use and latency move. A sampler thread
// reads every served model's metrics once per interval and keeps a bounded ring of samples;
// rates and latencies are per interval (the difference to the previous sample), summed or
// averaged over the models. Thread-safe.

#include "metrics/serving_metrics.h"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace inferbox {

struct timeline_sample {
    int64_t               t_ms                = 0; // unix milliseconds
    double                output_tokens_per_s = 0;
    double                prompt_tokens_per_s = 0;
    double                requests_running    = 0; // summed over the models
    double                requests_waiting    = 0;
    double                kv_cache_usage      = 0; // the fullest model's, 0..1
    std::optional<double> ttft_ms;                 // mean over the requests whose first token came in the interval
    std::optional<double> itl_ms;                  // mean time per output token in the interval
};

class metrics_timeline {
  public:
    using sources_fn = std::function<std::vector<std::shared_ptr<serving_metrics>>()>;

    explicit metrics_timeline(size_t capacity = 600) : capacity_(capacity) {}
    ~metrics_timeline() { stop(); }
    metrics_timeline(const metrics_timeline &)            = delete;
    metrics_timeline &operator=(const metrics_timeline &) = delete;

    // Samples `sources()` every `interval` on a thread of its own until stop().
    void start(sources_fn sources, std::chrono::milliseconds interval);
    void stop();

    // One sample at `now_ms` from the sources' current values. The first call only sets the
    // baseline for the rates (its rates are 0). What the sampler thread calls; tests call it
    // directly.
    void record(int64_t now_ms, const std::vector<std::shared_ptr<serving_metrics>> &sources);
    // The samples newer than `after_ms` (all of them for 0), oldest first.
    std::vector<timeline_sample> since(int64_t after_ms) const;

    std::chrono::milliseconds interval() const { return interval_; }
    size_t                    capacity() const { return capacity_; }

  private:
    struct totals {
        double output = 0, prompt = 0, ttft_sum = 0, ttft_count = 0, itl_sum = 0, itl_count = 0;
    };

    const size_t                capacity_;
    std::chrono::milliseconds   interval_{1000};
    mutable std::mutex          mu_;
    std::deque<timeline_sample> samples_;
    std::optional<totals>       last_;
    int64_t                     last_ms_ = 0;

    std::mutex              run_mu_;
    std::condition_variable run_cv_;
    bool                    stopping_ = false;
    std::thread             thread_;
};

} // namespace inferbox

#pragma once
// Counters, gauges and histograms, and their Prometheus text exposition (format 0.0.4).
//
// Contract: series are registered once (at start-up, or when a model is added) and live as long
// as the registry; the references registration returns stay valid. Updating a series is
// lock-free (atomics) and safe from any thread, including the engine thread on every token.
// render() may run concurrently with updates: each sample is read atomically, a scrape is not a
// consistent snapshot across series (Prometheus does not expect one).

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace inferbox {

using label_list = std::vector<std::pair<std::string, std::string>>;

class counter {
  public:
    void     inc(uint64_t n = 1) { v_.fetch_add(n, std::memory_order_relaxed); }
    uint64_t value() const { return v_.load(std::memory_order_relaxed); }

  private:
    std::atomic<uint64_t> v_{0};
};

class gauge {
  public:
    void   set(double v) { v_.store(v, std::memory_order_relaxed); }
    void   add(double d) { v_.fetch_add(d, std::memory_order_relaxed); }
    double value() const { return v_.load(std::memory_order_relaxed); }

  private:
    std::atomic<double> v_{0.0};
};

class histogram {
  public:
    // `bounds` are the upper bounds of the finite buckets, strictly increasing.
    explicit histogram(std::vector<double> bounds);
    void observe(double v);

    const std::vector<double> &bounds() const { return bounds_; }
    uint64_t                   bucket(size_t i) const { return buckets_[i].load(std::memory_order_relaxed); }
    uint64_t                   count() const { return count_.load(std::memory_order_relaxed); }
    double                     sum() const { return sum_.load(std::memory_order_relaxed); }

  private:
    std::vector<double>                      bounds_;
    std::unique_ptr<std::atomic<uint64_t>[]> buckets_; // non-cumulative; bounds_.size() + 1 (+Inf)
    std::atomic<uint64_t>                    count_{0};
    std::atomic<double>                      sum_{0.0};
};

class registry {
  public:
    // Registers a series. A family (name) has one type and one help text; `aliases` are further
    // names the same samples are exposed under (e.g. vLLM's "vllm:" names beside NIM's). Names
    // and label names must match Prometheus' grammar; registering the same name and labels
    // twice returns the existing series.
    counter   &add_counter(const std::string &name, const std::string &help, const label_list &labels = {},
                           const std::vector<std::string> &aliases = {});
    gauge     &add_gauge(const std::string &name, const std::string &help, const label_list &labels = {},
                         const std::vector<std::string> &aliases = {});
    histogram &add_histogram(const std::string &name, const std::string &help, std::vector<double> bounds,
                             const label_list &labels = {}, const std::vector<std::string> &aliases = {});
    // A gauge whose value is read when scraped (e.g. queue lengths owned by the engine). `fn`
    // must be thread-safe and cheap; it runs on the scraping thread.
    void add_gauge_fn(const std::string &name, const std::string &help, const label_list &labels,
                      std::function<double()> fn, const std::vector<std::string> &aliases = {});
    // A gauge family whose series (labels and values) are produced anew at each scrape, for
    // info-style metrics whose label values change (vLLM's lora_requests_info). `fn` must be
    // thread-safe and cheap.
    using series_list = std::vector<std::pair<label_list, double>>;
    void add_gauge_set(const std::string &name, const std::string &help, std::function<series_list()> fn,
                       const std::vector<std::string> &aliases = {});
    // A counter whose value is read when scraped (a count another object keeps); `fn` must never
    // decrease, be thread-safe and cheap.
    void add_counter_fn(const std::string &name, const std::string &help, const label_list &labels,
                        std::function<double()> fn);

    std::string render() const;

  private:
    enum class kind { counter, gauge, histogram };
    struct series {
        label_list                 labels;
        std::unique_ptr<counter>   c;
        std::unique_ptr<gauge>     g;
        std::unique_ptr<histogram> h;
        std::function<double()>    fn;
    };
    struct family {
        std::string                  name;
        std::string                  help;
        kind                         type;
        std::vector<std::string>     aliases;
        std::deque<series>           items;
        std::function<series_list()> dynamic; // add_gauge_set: the series, read at each render
    };
    family &family_for(const std::string &name, const std::string &help, kind type,
                       const std::vector<std::string> &aliases);
    series *find(family &f, const label_list &labels);

    mutable std::mutex mu_; // guards the family list (registration vs. render), not the values
    std::deque<family> families_;
};

// Prometheus label-value escaping (backslash, double quote, newline).
std::string prometheus_escape(const std::string &s);

} // namespace inferbox

#include "metrics/registry.h"
#include "metrics/serving_metrics.h"

#include <gtest/gtest.h>

#include <thread>

using namespace inferbox;

namespace {

bool contains(const std::string &hay, const std::string &needle) {
    return hay.find(needle) != std::string::npos;
}

} // namespace

TEST(Metrics, CounterAndGaugeRender) {
    registry reg;
    auto    &c = reg.add_counter("things_total", "Things.", {{"model_name", "m"}});
    auto    &g = reg.add_gauge("level", "Level.", {{"model_name", "m"}}, {"vllm:level"});
    c.inc(3);
    g.set(0.25);
    const auto out = reg.render();
    EXPECT_TRUE(contains(out, "# HELP things_total Things.\n# TYPE things_total counter\n"));
    EXPECT_TRUE(contains(out, "things_total{model_name=\"m\"} 3\n"));
    EXPECT_TRUE(contains(out, "level{model_name=\"m\"} 0.25\n"));
    EXPECT_TRUE(contains(out, "# TYPE vllm:level gauge\nvllm:level{model_name=\"m\"} 0.25\n"));
}

TEST(Metrics, SameNameAndLabelsIsOneSeries) {
    registry reg;
    auto    &a = reg.add_counter("x_total", "X.", {{"k", "1"}});
    auto    &b = reg.add_counter("x_total", "X.", {{"k", "1"}});
    auto    &c = reg.add_counter("x_total", "X.", {{"k", "2"}});
    EXPECT_EQ(&a, &b);
    EXPECT_NE(&a, &c);
    EXPECT_THROW(reg.add_gauge("x_total", "X.", {}), std::invalid_argument);
    EXPECT_THROW(reg.add_counter("bad name", "X."), std::invalid_argument);
    EXPECT_THROW(reg.add_counter("y_total", "Y.", {{"le", "1"}}), std::invalid_argument);
}

TEST(Metrics, HistogramBucketsAreCumulative) {
    registry reg;
    auto    &h = reg.add_histogram("lat_seconds", "Latency.", {0.1, 1.0}, {{"model_name", "m"}});
    h.observe(0.05);
    h.observe(0.1); // upper bounds are inclusive
    h.observe(0.5);
    h.observe(7.0);
    const auto out = reg.render();
    EXPECT_TRUE(contains(out, "lat_seconds_bucket{model_name=\"m\",le=\"0.1\"} 2\n")) << out;
    EXPECT_TRUE(contains(out, "lat_seconds_bucket{model_name=\"m\",le=\"1\"} 3\n")) << out;
    EXPECT_TRUE(contains(out, "lat_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 4\n")) << out;
    EXPECT_TRUE(contains(out, "lat_seconds_count{model_name=\"m\"} 4\n")) << out;
    EXPECT_TRUE(contains(out, "lat_seconds_sum{model_name=\"m\"} 7.65\n")) << out;
    EXPECT_THROW(histogram({1.0, 1.0}), std::invalid_argument);
}

TEST(Metrics, LabelValuesAreEscaped) {
    registry reg;
    reg.add_counter("e_total", "E.", {{"model_name", "a\"b\\c\nd"}}).inc();
    EXPECT_TRUE(contains(reg.render(), "e_total{model_name=\"a\\\"b\\\\c\\nd\"} 1\n"));
}

TEST(Metrics, GaugeFunctionIsReadAtScrape) {
    registry reg;
    double   v = 1;
    reg.add_gauge_fn("fn_gauge", "F.", {}, [&] { return v; });
    EXPECT_TRUE(contains(reg.render(), "fn_gauge 1\n"));
    v = 2.5;
    EXPECT_TRUE(contains(reg.render(), "fn_gauge 2.5\n"));
}

TEST(Metrics, ConcurrentUpdatesAreNotLost) {
    registry                 reg;
    auto                    &c = reg.add_counter("n_total", "N.");
    auto                    &h = reg.add_histogram("h_seconds", "H.", {1.0});
    std::vector<std::thread> ts;
    ts.reserve(4);
    for (int t = 0; t < 4; ++t) {
        ts.emplace_back([&] {
            for (int i = 0; i < 10000; ++i) {
                c.inc();
                h.observe(0.5);
            }
        });
    }
    for (auto &t : ts) {
        t.join();
    }
    EXPECT_EQ(c.value(), 40000u);
    EXPECT_EQ(h.count(), 40000u);
    EXPECT_DOUBLE_EQ(h.sum(), 20000.0);
}

TEST(Metrics, ServingMetricsExposeNimNamesAndOptionallyVllmNames) {
    registry        plain_reg;
    serving_metrics plain(plain_reg, "stories");
    EXPECT_TRUE(contains(plain_reg.render(), "# TYPE num_requests_running gauge\n"));
    EXPECT_TRUE(contains(plain_reg.render(), "# TYPE gpu_cache_usage_perc gauge\n"));
    EXPECT_FALSE(contains(plain_reg.render(), "vllm:"));

    registry        reg;
    serving_metrics m(reg, "stories", true);
    m.success_stop.inc();
    m.success_length.inc(2);
    m.kv_cache_usage.set(0.5);
    m.time_to_first_token.observe(0.2);
    const auto out = reg.render();
    for (const char *name :
         {"num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "gpu_cache_usage_perc",
          "prompt_tokens_total", "generation_tokens_total", "prefix_cache_queries_total", "prefix_cache_hits_total",
          "request_success_total", "time_to_first_token_seconds", "time_per_output_token_seconds",
          "e2e_request_latency_seconds", "request_queue_time_seconds", "request_prompt_tokens",
          "request_generation_tokens"}) {
        EXPECT_TRUE(contains(out, std::string("# TYPE ") + name + " ")) << name;
        EXPECT_TRUE(contains(out, std::string("# TYPE vllm:") + name + " ")) << name;
    }
    EXPECT_TRUE(contains(out, "request_success_total{model_name=\"stories\",finished_reason=\"stop\"} 1\n"));
    EXPECT_TRUE(contains(out, "request_success_total{model_name=\"stories\",finished_reason=\"length\"} 2\n"));
    EXPECT_TRUE(contains(out, "gpu_cache_usage_perc{model_name=\"stories\"} 0.5\n"));
    EXPECT_EQ(&m.failure(failure_reason::overloaded), &m.failure_overloaded);
    EXPECT_EQ(&m.failure(failure_reason::engine_error), &m.failure_engine);
}

namespace inferbox {
namespace {

TEST(registry_dynamic, GaugeSetsAndCounterFunctionsAreReadAtEachRender) {
    registry    reg;
    std::string running = "a";
    double      when    = 1.5;
    reg.add_gauge_set("lora_requests_info", "adapters",
                      [&] {
                          return registry::series_list{{{{"running_lora_adapters", running}}, when}};
                      },
                      {"vllm:lora_requests_info"});
    uint64_t sent = 3;
    reg.add_counter_fn("inferbox_backend_requests_total", "sent", {{"backend", "b"}},
                       [&] { return static_cast<double>(sent); });
    auto text = reg.render();
    EXPECT_NE(text.find("lora_requests_info{running_lora_adapters=\"a\"} 1.5\n"), std::string::npos) << text;
    EXPECT_NE(text.find("vllm:lora_requests_info{running_lora_adapters=\"a\"} 1.5\n"), std::string::npos) << text;
    EXPECT_NE(text.find("# TYPE inferbox_backend_requests_total counter"), std::string::npos) << text;
    EXPECT_NE(text.find("inferbox_backend_requests_total{backend=\"b\"} 3\n"), std::string::npos) << text;
    running = "a,b";
    when    = 2;
    sent    = 4;
    text    = reg.render();
    EXPECT_EQ(text.find("running_lora_adapters=\"a\"}"), std::string::npos) << "the old labels are gone";
    EXPECT_NE(text.find("lora_requests_info{running_lora_adapters=\"a,b\"} 2\n"), std::string::npos) << text;
    EXPECT_NE(text.find("inferbox_backend_requests_total{backend=\"b\"} 4\n"), std::string::npos) << text;
}

} // namespace
} // namespace inferbox

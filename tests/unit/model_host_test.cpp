// The multi-model host without a model: fake instances, a fake loader, real threads.
#include "host/model_host.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>

namespace inferbox {
namespace {

struct fake_instance {
    explicit fake_instance(size_t i, std::atomic<int> *live) : index(i), live(live) { ++*live; }
    ~fake_instance() { --*live; }
    fake_instance(const fake_instance &)               = delete;
    fake_instance    &operator=(const fake_instance &) = delete;
    bool              idle() const { return !busy.load(); }
    bool              healthy() const { return true; }
    void              stop() { stopped = true; }
    size_t            index;
    std::atomic<int> *live;
    std::atomic<bool> busy{false};
    bool              stopped = false;
};

using host = model_host<fake_instance>;

std::vector<hosted_model_spec> specs(std::initializer_list<uint64_t> sizes) {
    std::vector<hosted_model_spec> out;
    char                           name = 'a';
    for (uint64_t s : sizes) {
        out.push_back({std::string(1, name++), s});
    }
    return out;
}

struct fixture {
    std::atomic<int>            live{0};
    std::atomic<int>            loads{0};
    std::vector<bool>           broken = std::vector<bool>(8, false);
    std::chrono::milliseconds   load_time{0};
    std::function<void(size_t)> on_load;

    host::loader_fn loader() {
        return [this](size_t i) -> result<std::shared_ptr<fake_instance>> {
            ++loads;
            if (on_load) {
                on_load(i);
            }
            std::this_thread::sleep_for(load_time);
            if (broken[i]) {
                return error{error_kind::unavailable, "model " + std::to_string(i) + " is truncated", "", ""};
            }
            return std::make_shared<fake_instance>(i, &live);
        };
    }
};

result<host::lease> acquire(host &h, size_t i) {
    std::promise<result<host::lease>> p;
    auto                              f = p.get_future();
    h.acquire_async(i, [&p](result<host::lease> r) { p.set_value(std::move(r)); });
    return f.get();
}

TEST(Evictions, FitsWithoutUnloading) {
    auto v = choose_evictions({{0, 100, false, 1}}, 100, 300);
    ASSERT_TRUE(v);
    EXPECT_TRUE(v->empty());
}

TEST(Evictions, LeastRecentlyUsedIdleFirst) {
    // 0 is the oldest but busy; 2 is older than 1.
    auto v = choose_evictions({{0, 100, true, 1}, {1, 100, false, 9}, {2, 100, false, 5}}, 150, 300);
    ASSERT_TRUE(v);
    EXPECT_EQ(*v, (std::vector<size_t>{2, 1}));
}

TEST(Evictions, BusyModelsInTheWayMeanWait) {
    EXPECT_FALSE(choose_evictions({{0, 200, true, 1}, {1, 50, false, 2}}, 150, 300));
}

TEST(Evictions, LargerThanTheBudgetNeverFits) {
    EXPECT_FALSE(choose_evictions({}, 400, 300));
}

TEST(Evictions, NoBudgetNeverUnloads) {
    auto v = choose_evictions({{0, 1000, false, 1}}, 1000, 0);
    ASSERT_TRUE(v);
    EXPECT_TRUE(v->empty());
}

TEST(ModelHost, LoadsOnFirstRequestAndOnlyOnce) {
    fixture fx;
    fx.load_time = std::chrono::milliseconds(50);
    host h(specs({100, 100}), {}, fx.loader());
    EXPECT_FALSE(h.try_acquire(1)); // not loaded: no answer without waiting
    // Requests that arrive while it loads all wait for the same load.
    std::vector<std::future<result<host::lease>>> waiting;
    waiting.reserve(4);
    for (int i = 0; i < 4; ++i) {
        waiting.push_back(std::async(std::launch::async, [&h] { return acquire(h, 1); }));
    }
    for (auto &w : waiting) {
        auto r = w.get();
        ASSERT_TRUE(r) << r.err().message;
        EXPECT_EQ(r->instance()->index, 1U);
    }
    EXPECT_EQ(fx.loads.load(), 1);
    EXPECT_EQ(h.snapshot()[1].state, hosted_state::loaded);
    EXPECT_EQ(h.snapshot()[0].state, hosted_state::unloaded);
    auto now = h.try_acquire(1);
    ASSERT_TRUE(now && *now);
}

TEST(ModelHost, UnloadsTheLeastRecentlyUsedIdleModelToFit) {
    fixture fx;
    host    h(specs({100, 100, 100}), {200, std::chrono::seconds(5), std::chrono::seconds(30)}, fx.loader());
    ASSERT_TRUE(acquire(h, 0));
    ASSERT_TRUE(acquire(h, 1));
    ASSERT_TRUE(acquire(h, 0)); // 0 is now more recent than 1
    EXPECT_TRUE(h.peek(1));     // looking does not count as use
    ASSERT_TRUE(acquire(h, 2)); // needs room: 1 goes
    const auto s = h.snapshot();
    EXPECT_EQ(s[0].state, hosted_state::loaded);
    EXPECT_EQ(s[1].state, hosted_state::unloaded);
    EXPECT_EQ(s[1].unloads, 1);
    EXPECT_EQ(s[2].state, hosted_state::loaded);
    EXPECT_EQ(h.resident_bytes(), 200U);
    EXPECT_EQ(fx.live.load(), 2); // the unloaded instance was released, not just forgotten
    EXPECT_FALSE(h.peek(1));
}

TEST(ModelHost, NeverUnloadsAModelUnderALease) {
    fixture fx;
    host    h(specs({100, 100}), {150, std::chrono::milliseconds(300), std::chrono::seconds(30)}, fx.loader());
    auto    held = acquire(h, 0);
    ASSERT_TRUE(held);
    // 1 cannot fit while 0 is leased: the request waits, then times out with a clear error.
    auto r = acquire(h, 1);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().kind, error_kind::unavailable);
    EXPECT_NE(r.err().message.find("did not load within"), std::string::npos) << r.err().message;
    EXPECT_EQ(h.snapshot()[0].state, hosted_state::loaded);
    EXPECT_EQ(h.snapshot()[1].state, hosted_state::unloaded);
}

TEST(ModelHost, AWaitingLoadProceedsWhenTheLeaseEnds) {
    fixture fx;
    host    h(specs({100, 100}), {150, std::chrono::seconds(10), std::chrono::seconds(30)}, fx.loader());
    auto    held = std::make_optional(acquire(h, 0));
    ASSERT_TRUE(*held);
    std::promise<result<host::lease>> p;
    auto                              f = p.get_future();
    h.acquire_async(1, [&p](result<host::lease> r) { p.set_value(std::move(r)); });
    EXPECT_EQ(f.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
    held.reset(); // the request on 0 ends
    auto r = f.get();
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(h.snapshot()[0].state, hosted_state::unloaded);
}

TEST(ModelHost, AHoldOutlivesTheLeaseObject) {
    fixture fx;
    host    h(specs({100, 100}), {150, std::chrono::milliseconds(300), std::chrono::seconds(30)}, fx.loader());
    std::shared_ptr<void> hold;
    {
        auto l = acquire(h, 0);
        ASSERT_TRUE(l);
        hold = l->hold();
    }
    EXPECT_FALSE(acquire(h, 1)); // 0 is still held
    hold.reset();
    EXPECT_TRUE(acquire(h, 1));
}

TEST(ModelHost, ABusyInstanceIsNotUnloadedEvenWithoutALease) {
    fixture fx;
    host    h(specs({100, 100}), {150, std::chrono::milliseconds(300), std::chrono::seconds(30)}, fx.loader());
    {
        auto l = acquire(h, 0);
        ASSERT_TRUE(l);
        l->instance()->busy = true;
    }
    EXPECT_FALSE(acquire(h, 1));
}

TEST(ModelHost, ABrokenModelFailsItsRequestsAndNotTheOthers) {
    fixture fx;
    fx.broken[1] = true;
    host h(specs({100, 100}), {}, fx.loader());
    ASSERT_TRUE(acquire(h, 0));
    auto r = acquire(h, 1);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().message, "model 1 is truncated");
    // Within retry_after the failure is answered at once, without another load.
    auto again = h.try_acquire(1);
    ASSERT_TRUE(again);
    EXPECT_FALSE(*again);
    EXPECT_EQ(fx.loads.load(), 2);
    EXPECT_EQ(h.snapshot()[1].state, hosted_state::failed);
    EXPECT_EQ(h.snapshot()[1].error, "model 1 is truncated");
    EXPECT_TRUE(acquire(h, 0));
}

TEST(ModelHost, AFailedLoadIsRetriedAfterRetryAfter) {
    fixture fx;
    fx.broken[0] = true;
    host h(specs({100}), {0, std::chrono::seconds(5), std::chrono::milliseconds(100)}, fx.loader());
    EXPECT_FALSE(acquire(h, 0));
    fx.broken[0] = false; // the file was fixed
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    EXPECT_TRUE(acquire(h, 0));
    EXPECT_EQ(fx.loads.load(), 2);
}

TEST(ModelHost, AModelLargerThanTheBudgetIsRefusedWithTheNumbers) {
    fixture fx;
    host    h(specs({300ULL << 20}), {200ULL << 20, std::chrono::seconds(5), std::chrono::seconds(30)}, fx.loader());
    auto    r = acquire(h, 0);
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("300 MiB"), std::string::npos) << r.err().message;
    EXPECT_NE(r.err().message.find("200 MiB"), std::string::npos) << r.err().message;
    EXPECT_EQ(fx.loads.load(), 0);
}

TEST(ModelHost, ShutdownAnswersWaitersAndStopsInstances) {
    fixture            fx;
    std::promise<void> loading;
    std::promise<void> release;
    auto               gate = release.get_future().share();
    fx.on_load              = [&](size_t i) {
        if (i == 1) {
            loading.set_value();
            gate.wait();
        }
    };
    auto h = std::make_unique<host>(specs({100, 100}), host_options{}, fx.loader());
    ASSERT_TRUE(acquire(*h, 0));
    std::promise<result<host::lease>> p;
    auto                              f = p.get_future();
    h->acquire_async(1, [&p](result<host::lease> r) { p.set_value(std::move(r)); });
    loading.get_future().wait();
    std::thread stopper([&] { h->shutdown(); });
    auto        r = f.get(); // answered by shutdown while the load is still running
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().kind, error_kind::unavailable);
    release.set_value();
    stopper.join();
    EXPECT_TRUE(h->loaded().empty());
    EXPECT_FALSE(h->try_acquire(0).value());
    h.reset();
    EXPECT_EQ(fx.live.load(), 0);
}

TEST(ModelHost, MarkFailedAnswersWithoutLoading) {
    fixture fx;
    host    h(specs({100, 100}), {}, fx.loader());
    h.mark_failed(1, error{error_kind::unavailable, "bad magic", "", ""});
    auto r = acquire(h, 1);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().message, "bad magic");
    EXPECT_EQ(fx.loads.load(), 0);
    EXPECT_EQ(h.find("b"), std::optional<size_t>(1));
    EXPECT_FALSE(h.find("zz"));
}

TEST(ModelHost, APullingModelAnswersAtOnceThenLoadsOncePulled) {
    fixture fx;
    host    h(specs({100, 0}), {}, fx.loader());
    h.mark_pulling(1, error{error_kind::unavailable, "downloading: 40 %", "model", "model_pulling"}, 40, 100);
    auto r = acquire(h, 1);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, "model_pulling");
    auto now = h.try_acquire(1); // an answer now: never waits for a pull
    ASSERT_TRUE(now.has_value());
    EXPECT_FALSE(*now);
    auto view = h.snapshot()[1];
    EXPECT_EQ(view.state, hosted_state::pulling);
    EXPECT_STREQ(hosted_state_name(view.state), "pulling");
    EXPECT_EQ(view.pull_received, 40U);
    EXPECT_EQ(view.pull_total, 100U);
    EXPECT_EQ(view.error, "downloading: 40 %");
    EXPECT_EQ(fx.loads.load(), 0);

    h.pulled(1, 250);
    view = h.snapshot()[1];
    EXPECT_EQ(view.state, hosted_state::unloaded);
    EXPECT_EQ(view.memory_bytes, 250U); // the estimate known once the file is here
    EXPECT_TRUE(view.error.empty());
    auto loaded = acquire(h, 1);
    ASSERT_TRUE(loaded);
    EXPECT_EQ(loaded->instance()->index, 1U);
    EXPECT_EQ(h.resident_bytes(), 250U);
}

TEST(ModelHost, APulledModelIsChargedItsEstimateAgainstTheBudget) {
    fixture      fx;
    host_options o;
    o.budget_bytes = 300;
    host h(specs({200, 0}), o, fx.loader());
    h.mark_pulling(1, error{error_kind::unavailable, "downloading", "", "model_pulling"});
    ASSERT_TRUE(acquire(h, 0));
    h.pulled(1, 200); // 200 + 200 > 300: the idle first model makes room
    ASSERT_TRUE(acquire(h, 1));
    EXPECT_EQ(h.snapshot()[0].state, hosted_state::unloaded);
    EXPECT_EQ(h.resident_bytes(), 200U);
}

} // namespace
} // namespace inferbox

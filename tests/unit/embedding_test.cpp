// The embedder's model-free parts: pooling resolution, truncation, normalisation and the
// batching queue's policy (FIFO across requests, token and sequence limits, admission bound,
// cancellation, shutdown).

#include "engine/embedding.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>

using namespace inferbox;

namespace {

double norm(const std::vector<float> &v) {
    double s = 0;
    for (float x : v) {
        s += static_cast<double>(x) * x;
    }
    return std::sqrt(s);
}

std::shared_ptr<embedding_task> task_of(const std::vector<size_t> &lengths) {
    auto t = std::make_shared<embedding_task>();
    t->inputs.reserve(lengths.size());
    for (size_t n : lengths) {
        t->inputs.emplace_back(n, 7);
    }
    return t;
}

// The (task, input) pairs of a batch, as task pointers and indexes.
std::vector<std::pair<embedding_task *, size_t>> items(const std::vector<embedding_batch_item> &b) {
    std::vector<std::pair<embedding_task *, size_t>> out;
    out.reserve(b.size());
    for (const auto &it : b) {
        out.emplace_back(it.task.get(), it.input);
    }
    return out;
}

} // namespace

TEST(Pooling, ParsesTheFlag) {
    EXPECT_EQ(parse_pooling_choice("auto"), pooling_choice::model);
    EXPECT_EQ(parse_pooling_choice("mean"), pooling_choice::mean);
    EXPECT_EQ(parse_pooling_choice("cls"), pooling_choice::cls);
    EXPECT_EQ(parse_pooling_choice("last"), pooling_choice::last);
    EXPECT_EQ(parse_pooling_choice("none"), pooling_choice::none);
    EXPECT_FALSE(parse_pooling_choice("rank"));
    EXPECT_FALSE(parse_pooling_choice("MEAN"));
    EXPECT_FALSE(parse_pooling_choice(""));
}

TEST(Pooling, FollowsTheMetadataOrMeanPoolsAGenerativeModel) {
    EXPECT_EQ(resolve_pooling(pooling_choice::model, std::nullopt), pooling_kind::mean); // generative model
    EXPECT_EQ(resolve_pooling(pooling_choice::model, 0), pooling_kind::mean);            // declares NONE
    EXPECT_EQ(resolve_pooling(pooling_choice::model, 1), pooling_kind::mean);
    EXPECT_EQ(resolve_pooling(pooling_choice::model, 2), pooling_kind::cls);
    EXPECT_EQ(resolve_pooling(pooling_choice::model, 3), pooling_kind::last);
    EXPECT_EQ(resolve_pooling(pooling_choice::model, 4), pooling_kind::rank);
    EXPECT_EQ(resolve_pooling(pooling_choice::model, 99), pooling_kind::mean);
    EXPECT_EQ(resolve_pooling(pooling_choice::model, -1), pooling_kind::mean);
}

TEST(Pooling, TheFlagOverridesTheMetadata) {
    EXPECT_EQ(resolve_pooling(pooling_choice::cls, 1), pooling_kind::cls);
    EXPECT_EQ(resolve_pooling(pooling_choice::last, std::nullopt), pooling_kind::last);
    EXPECT_EQ(resolve_pooling(pooling_choice::mean, 4), pooling_kind::mean); // a reranker embedding
    EXPECT_EQ(resolve_pooling(pooling_choice::none, 2), pooling_kind::none);
    EXPECT_STREQ(pooling_name(pooling_kind::rank), "rank");
    EXPECT_STREQ(pooling_name(pooling_kind::none), "none");
}

TEST(Truncate, FittingInputsAreUntouched) {
    std::vector<token_id> t = {1, 2, 3};
    EXPECT_TRUE(truncate_tokens(t, 3, truncate_mode::none));
    EXPECT_EQ(t, (std::vector<token_id>{1, 2, 3}));
}

TEST(Truncate, NoneRefusesAndLeavesTheTokens) {
    std::vector<token_id> t = {1, 2, 3, 4};
    EXPECT_FALSE(truncate_tokens(t, 3, truncate_mode::none));
    EXPECT_EQ(t.size(), 4u);
}

TEST(Truncate, StartDropsFromTheStartAndEndFromTheEnd) {
    std::vector<token_id> a = {1, 2, 3, 4, 5};
    EXPECT_TRUE(truncate_tokens(a, 3, truncate_mode::start));
    EXPECT_EQ(a, (std::vector<token_id>{3, 4, 5}));
    std::vector<token_id> b = {1, 2, 3, 4, 5};
    EXPECT_TRUE(truncate_tokens(b, 3, truncate_mode::end));
    EXPECT_EQ(b, (std::vector<token_id>{1, 2, 3}));
}

TEST(Truncate, KeepsTheTokenizersFrame) {
    // BOS=100, content 1..6, SEP=200.
    std::vector<token_id> a = {100, 1, 2, 3, 4, 5, 6, 200};
    EXPECT_TRUE(truncate_tokens(a, 5, truncate_mode::start, {1, 1}));
    EXPECT_EQ(a, (std::vector<token_id>{100, 4, 5, 6, 200}));
    std::vector<token_id> b = {100, 1, 2, 3, 4, 5, 6, 200};
    EXPECT_TRUE(truncate_tokens(b, 5, truncate_mode::end, {1, 1}));
    EXPECT_EQ(b, (std::vector<token_id>{100, 1, 2, 3, 200}));
    std::vector<token_id> c = {100, 1, 2, 3};
    EXPECT_TRUE(truncate_tokens(c, 2, truncate_mode::start, {1, 0}));
    EXPECT_EQ(c, (std::vector<token_id>{100, 3}));
}

TEST(Truncate, AFrameThatLeavesNoRoomCutsTheRawSequence) {
    std::vector<token_id> a = {100, 1, 2, 200};
    EXPECT_TRUE(truncate_tokens(a, 2, truncate_mode::end, {1, 1}));
    EXPECT_EQ(a, (std::vector<token_id>{100, 1}));
    std::vector<token_id> b = {100, 1, 2, 200};
    EXPECT_TRUE(truncate_tokens(b, 1, truncate_mode::start, {1, 1}));
    EXPECT_EQ(b, (std::vector<token_id>{200}));
}

TEST(Normalize, UnitLengthAndDirectionKept) {
    std::vector<float> v = {3, 4};
    l2_normalize(v);
    EXPECT_NEAR(v[0], 0.6, 1e-7);
    EXPECT_NEAR(v[1], 0.8, 1e-7);
    std::vector<float> z = {0, 0, 0};
    l2_normalize(z);
    EXPECT_EQ(z, (std::vector<float>{0, 0, 0}));
    std::vector<float> tiny = {1e-30f, 1e-30f};
    l2_normalize(tiny);
    EXPECT_NEAR(norm(tiny), 1.0, 1e-6);
}

TEST(Normalize, ShortenKeepsThePrefixAndRenormalises) {
    std::vector<float> v = {0.5f, 0.5f, 0.5f, 0.5f};
    const auto         s = shorten_embedding(v, 2);
    ASSERT_EQ(s.size(), 2u);
    EXPECT_NEAR(s[0], std::sqrt(0.5), 1e-7);
    EXPECT_NEAR(s[1], std::sqrt(0.5), 1e-7);
    EXPECT_NEAR(norm(s), 1.0, 1e-6);
    EXPECT_EQ(shorten_embedding(v, 4), v);
    EXPECT_EQ(shorten_embedding(v, 9), v);
    const auto one = shorten_embedding({-2.0f, 1.0f}, 1);
    EXPECT_EQ(one, (std::vector<float>{-1.0f}));
}

TEST(EmbeddingQueue, BatchesAcrossRequestsInArrivalOrder) {
    embedding_queue q(100);
    auto            a = task_of({3, 3});
    auto            b = task_of({2});
    ASSERT_FALSE(q.push(a));
    ASSERT_FALSE(q.push(b));
    EXPECT_EQ(q.n_queued(), 3u);
    const auto batch = q.try_take({100, 10});
    EXPECT_EQ(items(batch),
              (std::vector<std::pair<embedding_task *, size_t>>{{a.get(), 0}, {a.get(), 1}, {b.get(), 0}}));
    EXPECT_EQ(q.n_queued(), 0u);
    EXPECT_FALSE(q.idle()); // a batch is in flight
    q.batch_done();
    EXPECT_TRUE(q.idle());
    EXPECT_TRUE(q.try_take({100, 10}).empty());
}

TEST(EmbeddingQueue, StopsAtTheTokenLimitWithoutSkippingAhead) {
    embedding_queue q(100);
    auto            a = task_of({4, 5, 1});
    ASSERT_FALSE(q.push(a));
    // 4 + 5 > 8: the second input waits for the next batch, and the short third does not
    // overtake it.
    EXPECT_EQ(items(q.try_take({8, 10})), (std::vector<std::pair<embedding_task *, size_t>>{{a.get(), 0}}));
    q.batch_done();
    EXPECT_EQ(items(q.try_take({8, 10})),
              (std::vector<std::pair<embedding_task *, size_t>>{{a.get(), 1}, {a.get(), 2}}));
    q.batch_done();
    EXPECT_TRUE(q.idle());
}

TEST(EmbeddingQueue, StopsAtTheSequenceLimit) {
    embedding_queue q(100);
    auto            a = task_of({1, 1, 1, 1, 1});
    ASSERT_FALSE(q.push(a));
    EXPECT_EQ(q.try_take({100, 2}).size(), 2u);
    EXPECT_EQ(q.try_take({100, 2}).size(), 2u);
    EXPECT_EQ(q.try_take({100, 2}).size(), 1u);
    EXPECT_TRUE(q.try_take({100, 2}).empty());
}

TEST(EmbeddingQueue, AnInputAsLongAsTheLimitGoesAlone) {
    embedding_queue q(100);
    auto            a = task_of({1, 8, 1});
    ASSERT_FALSE(q.push(a));
    EXPECT_EQ(q.try_take({8, 10}).size(), 1u);
    EXPECT_EQ(q.try_take({8, 10}).size(), 1u);
    EXPECT_EQ(q.try_take({8, 10}).size(), 1u);
}

TEST(EmbeddingQueue, AdmitsAllInputsOrNoneAndStatesTheLimit) {
    embedding_queue q(4);
    ASSERT_FALSE(q.push(task_of({1, 1, 1})));
    const auto err = q.push(task_of({1, 1}));
    ASSERT_TRUE(err);
    EXPECT_EQ(err->kind, error_kind::overloaded);
    EXPECT_NE(err->message.find("limit 4"), std::string::npos) << err->message;
    EXPECT_EQ(q.n_queued(), 3u);
    ASSERT_FALSE(q.push(task_of({1})));
    EXPECT_EQ(q.n_queued(), 4u);
    (void)q.try_take({100, 2}); // two inputs leave the queue: room for two more
    EXPECT_FALSE(q.push(task_of({1, 1})));
}

TEST(EmbeddingQueue, DropsCancelledTasksAndTheirRemainingInputs) {
    embedding_queue q(100);
    auto            a = task_of({1, 1, 1});
    auto            b = task_of({1});
    ASSERT_FALSE(q.push(a));
    ASSERT_FALSE(q.push(b));
    EXPECT_EQ(q.try_take({100, 1}).size(), 1u); // a's first input is taken
    q.batch_done();
    a->cancel();
    EXPECT_EQ(items(q.try_take({100, 10})), (std::vector<std::pair<embedding_task *, size_t>>{{b.get(), 0}}));
    q.batch_done();
    EXPECT_EQ(q.n_queued(), 0u);
    EXPECT_TRUE(q.idle());
}

TEST(EmbeddingQueue, CloseRefusesPushesAndDrainsWhatIsLeft) {
    embedding_queue q(100);
    auto            a = task_of({1, 1});
    ASSERT_FALSE(q.push(a));
    (void)q.try_take({100, 1});
    q.batch_done();
    q.close();
    const auto err = q.push(task_of({1}));
    ASSERT_TRUE(err);
    EXPECT_EQ(err->kind, error_kind::unavailable);
    EXPECT_FALSE(q.wait_take({100, 10})); // closed: returns at once
    const auto left = q.drain();
    ASSERT_EQ(left.size(), 1u);
    EXPECT_EQ(left[0].get(), a.get());
    EXPECT_EQ(q.n_queued(), 0u);
}

TEST(EmbeddingQueue, WaitTakeWakesForWorkAndForClose) {
    embedding_queue q(100);
    auto            a = task_of({2});
    std::thread     producer([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        ASSERT_FALSE(q.push(a));
    });
    const auto      batch = q.wait_take({100, 10});
    producer.join();
    ASSERT_TRUE(batch);
    ASSERT_EQ(batch->size(), 1u);
    EXPECT_EQ((*batch)[0].task.get(), a.get());
    q.batch_done();

    // Only cancelled work queued: wait_take drops it and answers an empty batch.
    auto c = task_of({1});
    c->cancel();
    ASSERT_FALSE(q.push(c));
    const auto dropped = q.wait_take({100, 10});
    ASSERT_TRUE(dropped);
    EXPECT_TRUE(dropped->empty());
    EXPECT_EQ(q.n_queued(), 0u);
    EXPECT_TRUE(q.idle());
    std::thread closer([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        q.close();
    });
    EXPECT_FALSE(q.wait_take({100, 10})); // woken by close()
    closer.join();
}

TEST(EmbeddingQueue, ConcurrentProducersNeverExceedTheBound) {
    embedding_queue          q(50);
    std::atomic<int>         accepted{0}, refused{0};
    std::vector<std::thread> producers;
    producers.reserve(4);
    for (int p = 0; p < 4; ++p) {
        producers.emplace_back([&] {
            for (int i = 0; i < 100; ++i) {
                if (q.push(task_of({1, 1}))) {
                    ++refused;
                } else {
                    ++accepted;
                }
            }
        });
    }
    size_t       taken     = 0;
    const size_t max_taken = 800; // 4 producers × 100 tasks × 2 inputs
    while (taken < max_taken && (accepted + refused < 400 || q.n_queued() > 0)) {
        EXPECT_LE(q.n_queued(), 50u);
        const auto b = q.try_take({100, 7});
        taken += b.size();
        if (!b.empty()) {
            q.batch_done();
        }
    }
    for (auto &t : producers) {
        t.join();
    }
    while (true) {
        const auto b = q.try_take({100, 7});
        if (b.empty()) {
            break;
        }
        taken += b.size();
        q.batch_done();
    }
    EXPECT_EQ(accepted + refused, 400);
    EXPECT_EQ(taken, static_cast<size_t>(accepted.load()) * 2U);
}

TEST(EmbeddingQueue, ReportsEveryChangeOfItsLength) {
    std::vector<size_t> seen;
    embedding_queue     q(10, [&](size_t n) { seen.push_back(n); });
    auto                a = task_of({1, 1, 1});
    ASSERT_FALSE(q.push(a));
    (void)q.try_take({100, 1});
    q.batch_done();
    EXPECT_TRUE(q.push(task_of(std::vector<size_t>(9, 1)))); // refused: no change reported
    a->cancel();
    (void)q.try_take({100, 1}); // drops a's two remaining inputs
    ASSERT_FALSE(q.push(task_of({1})));
    q.close();
    (void)q.drain();
    EXPECT_EQ(seen, (std::vector<size_t>{3, 2, 0, 1, 0}));
}

#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

using namespace inferbox;

namespace {

// A fake engine: runs plans against a model of the KV cache (what each slot holds, and under which
// kv_key each cell was computed) and checks that every step is consistent — tokens are fed at
// the positions the slot has reached, KV copies/trims leave exactly what the scheduler believes,
// and a sequence only ever extends KV computed under its own key.
struct fake_engine {
    explicit fake_engine(scheduler &s)
        : sched(s), kv(static_cast<size_t>(s.config().n_slots)), kv_keys(static_cast<size_t>(s.config().n_slots)) {}

    // Runs one step; `finish_after[id]` = tokens after which the sequence ends (default never).
    step_plan step() {
        auto plan = sched.schedule();
        for (const auto &op : plan.kv_ops) {
            if (op.src_slot >= 0) {
                kv[op.dst_slot]      = kv[op.src_slot];
                kv_keys[op.dst_slot] = kv_keys[op.src_slot];
            }
            kv[op.dst_slot].resize(std::min(kv[op.dst_slot].size(), static_cast<size_t>(op.keep)));
            kv_keys[op.dst_slot].resize(kv[op.dst_slot].size());
        }
        for (const auto &it : plan.items) {
            EXPECT_EQ(static_cast<size_t>(it.pos), kv[it.slot].size()) << "seq " << it.id << " fed at a gap";
            if (keys.count(it.id) != 0) {
                EXPECT_EQ(plan.key, keys[it.id]) << "seq " << it.id << " computed under another key";
            }
            for (kv_key k : kv_keys[it.slot]) {
                EXPECT_EQ(k, plan.key) << "seq " << it.id << " extends KV computed under key " << k;
            }
            kv[it.slot].insert(kv[it.slot].end(), it.tokens.begin(), it.tokens.end());
            kv_keys[it.slot].insert(kv_keys[it.slot].end(), it.tokens.size(), plan.key);
            if (generated[it.id] == 0) {
                n_prompt_computed += static_cast<int32_t>(it.tokens.size());
            }
            EXPECT_EQ(kv[it.slot], sched.slots().tokens(it.slot));
        }
        for (const auto &it : plan.items) {
            if (!it.sample) {
                continue;
            }
            const int32_t n    = ++generated[it.id];
            const bool    done = finish_after.count(it.id) != 0 && n >= finish_after[it.id];
            sched.on_sampled(it.id, 1000 + n, done);
            if (done || !sched.info(it.id)) {
                finished.insert(it.id);
            }
        }
        return plan;
    }

    scheduler                         &sched;
    std::vector<std::vector<token_id>> kv;
    std::vector<std::vector<kv_key>>   kv_keys;
    std::map<uint64_t, kv_key>         keys; // the key each sequence was submitted under
    std::map<uint64_t, int32_t>        generated;
    std::map<uint64_t, int32_t>        finish_after;
    std::set<uint64_t>                 finished;
    int32_t                            n_prompt_computed = 0;
};

std::vector<token_id> prompt_of(int n, int base = 1) {
    std::vector<token_id> p(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
        p[i] = base + i;
    }
    return p;
}

scheduler_config cfg(int slots, int step, int prefill_while_decode, int max_waiting = 8) {
    scheduler_config c;
    c.n_slots              = slots;
    c.n_ctx_slot           = 1024;
    c.step_tokens          = step;
    c.prefill_while_decode = prefill_while_decode;
    c.max_waiting          = max_waiting;
    c.min_copy_gain        = 4;
    c.min_shared_wait      = 8;
    return c;
}

} // namespace

TEST(scheduler, admits_prefills_and_decodes_to_max_tokens) {
    scheduler   s(cfg(2, 64, 16));
    fake_engine e(s);
    ASSERT_TRUE(s.submit(1, prompt_of(10), 3));
    auto p1 = e.step();
    ASSERT_EQ(p1.items.size(), 1u);
    EXPECT_EQ(p1.items[0].tokens.size(), 10u);
    EXPECT_TRUE(p1.items[0].sample);
    EXPECT_EQ(p1.admitted, std::vector<uint64_t>{1});
    e.step();
    e.step();
    EXPECT_TRUE(s.idle()); // 3 tokens: one from the prompt step, two decode steps
    EXPECT_EQ(e.generated[1], 3);
}

TEST(scheduler, long_prompt_is_chunked_and_running_streams_keep_decoding) {
    scheduler   s(cfg(2, 64, 16));
    fake_engine e(s);
    ASSERT_TRUE(s.submit(1, prompt_of(4), 100));
    e.step(); // seq 1 now decodes
    ASSERT_TRUE(s.submit(2, prompt_of(100, 500), 5));
    int steps = 0;
    while (s.info(2) && s.info(2)->n_generated == 0) {
        auto plan = e.step();
        ++steps;
        bool decoded_1 = false;
        for (const auto &it : plan.items) {
            if (it.id == 1) {
                decoded_1 = true;
                EXPECT_EQ(it.tokens.size(), 1u);
            } else {
                EXPECT_LE(it.tokens.size(), 16u); // prefill chunk bounded while others decode
            }
        }
        EXPECT_TRUE(decoded_1) << "the running stream stalled at step " << steps;
        ASSERT_LT(steps, 20);
    }
    EXPECT_EQ(steps, 7); // ceil(100 / 16)
}

TEST(scheduler, without_decoding_streams_the_whole_budget_goes_to_prefill) {
    scheduler   s(cfg(2, 64, 16));
    fake_engine e(s);
    ASSERT_TRUE(s.submit(1, prompt_of(100), 2));
    auto plan = e.step();
    ASSERT_EQ(plan.items.size(), 1u);
    EXPECT_EQ(plan.items[0].tokens.size(), 64u);
    EXPECT_FALSE(plan.items[0].sample);
}

TEST(scheduler, late_arrivals_that_outnumber_the_running_streams_are_not_held_to_the_cap) {
    scheduler   s(cfg(6, 64, 8));
    fake_engine e(s);
    ASSERT_TRUE(s.submit(1, prompt_of(10), 50));
    ASSERT_TRUE(s.submit(2, prompt_of(10, 100), 50));
    e.step(); // seqs 1 and 2 run from now on
    ASSERT_TRUE(s.submit(3, prompt_of(20, 200), 5));
    ASSERT_TRUE(s.submit(4, prompt_of(20, 400), 5));
    auto plan = e.step(); // two prompts beside two streams: held to the cap of 8
    EXPECT_EQ(plan.n_tokens, 2 + 8);
    ASSERT_TRUE(s.submit(5, prompt_of(20, 600), 5));
    plan = e.step(); // three prompts beside two streams: the whole step
    EXPECT_EQ(plan.n_tokens, 2 + (20 - 8) + 20 + 20);
    for (uint64_t id = 3; id <= 5; ++id) {
        EXPECT_EQ(s.info(id)->phase, seq_phase::decoding) << "seq " << id;
    }
}

namespace {
// Three 100-token prompts with nothing in common, arriving together (ids 1, 2, 3).
void submit_burst(scheduler &s) {
    for (uint64_t id = 1; id <= 3; ++id) {
        ASSERT_TRUE(s.submit(id, prompt_of(100, static_cast<int>(id) * 1000), 10));
    }
}
} // namespace

TEST(scheduler, costly_prompts_of_a_burst_are_prefilled_one_step_each) {
    auto c            = cfg(4, 512, 256);
    c.prefill_step_us = 50'000;
    scheduler   s(c);
    fake_engine e(s);
    s.set_prefill_cost(1000); // 100 tokens: 100 ms, over the 50 ms mark
    ASSERT_NO_FATAL_FAILURE(submit_burst(s));
    auto first = e.step();
    ASSERT_EQ(first.items.size(), 1u);
    EXPECT_EQ(first.items[0].id, 1u);
    EXPECT_TRUE(first.items[0].sample);
    auto second = e.step(); // 1 decodes, 2 is prefilled alone, 3 waits
    ASSERT_EQ(second.items.size(), 2u);
    EXPECT_EQ(second.items[0].id, 1u);
    EXPECT_EQ(second.items[0].tokens.size(), 1u);
    EXPECT_EQ(second.items[1].id, 2u);
    EXPECT_EQ(second.items[1].tokens.size(), 100u);
    auto third = e.step();
    ASSERT_EQ(third.items.size(), 3u);
    EXPECT_EQ(third.items[2].id, 3u);
    EXPECT_EQ(third.items[2].tokens.size(), 100u);
}

TEST(scheduler, cheap_or_unmeasured_prompts_of_a_burst_share_a_step) {
    for (const double cost : {0.0, 10.0}) { // unknown; 100 tokens = 1 ms, under the mark
        auto c            = cfg(4, 512, 256);
        c.prefill_step_us = 50'000;
        scheduler   s(c);
        fake_engine e(s);
        s.set_prefill_cost(cost);
        ASSERT_NO_FATAL_FAILURE(submit_burst(s));
        const auto plan = e.step();
        EXPECT_EQ(plan.items.size(), 3u) << "cost " << cost;
    }
    auto c            = cfg(4, 512, 256); // the mark off: costly prompts share a step too
    c.prefill_step_us = 0;
    scheduler   s(c);
    fake_engine e(s);
    s.set_prefill_cost(1000);
    ASSERT_NO_FATAL_FAILURE(submit_burst(s));
    EXPECT_EQ(e.step().items.size(), 3u);
}

TEST(scheduler, with_a_time_budget_the_cap_bounds_each_chunk_not_the_step) {
    // Streams running and fewer prompts waiting than streams: the cap (16) applies. With a time
    // budget, cheap prompts share a step up to it; a long one is still cut at the cap.
    auto c            = cfg(8, 512, 16);
    c.prefill_step_us = 50'000;
    scheduler   s(c);
    fake_engine e(s);
    s.set_prefill_cost(100); // 100 us a token: 500 tokens fill the 50 ms mark
    ASSERT_TRUE(s.submit(1, prompt_of(4), 100));
    ASSERT_TRUE(s.submit(2, prompt_of(4, 100), 100));
    e.step(); // 1 and 2 decode from now on
    ASSERT_TRUE(s.submit(3, prompt_of(12, 200), 5));
    ASSERT_TRUE(s.submit(4, prompt_of(12, 300), 5));
    auto plan = e.step(); // two decode tokens, then both 12-token prompts whole: 24 tokens > the cap
    ASSERT_EQ(plan.items.size(), 4u);
    EXPECT_EQ(plan.items[2].tokens.size(), 12u);
    EXPECT_EQ(plan.items[3].tokens.size(), 12u);
    ASSERT_TRUE(s.submit(5, prompt_of(40, 400), 5));
    ASSERT_TRUE(s.submit(6, prompt_of(4, 500), 5));
    plan = e.step(); // the 40-token prompt cut at 16; 6 waits for a later step
    const auto prompt_items =
        std::count_if(plan.items.begin(), plan.items.end(), [](const plan_item &it) { return it.tokens.size() > 1; });
    EXPECT_EQ(prompt_items, 1);
    EXPECT_EQ(plan.items.back().id, 5u);
    EXPECT_EQ(plan.items.back().tokens.size(), 16u);

    // Without a time budget the cap bounds the step: the two 12-token prompts take two steps.
    auto c0            = cfg(4, 512, 16);
    c0.prefill_step_us = 0;
    scheduler   s0(c0);
    fake_engine e0(s0);
    ASSERT_TRUE(s0.submit(1, prompt_of(4), 100));
    ASSERT_TRUE(s0.submit(2, prompt_of(4, 100), 100));
    e0.step();
    ASSERT_TRUE(s0.submit(3, prompt_of(12, 200), 5));
    ASSERT_TRUE(s0.submit(4, prompt_of(12, 300), 5));
    plan                  = e0.step();
    int32_t prompt_tokens = 0;
    for (const auto &it : plan.items) {
        prompt_tokens += it.tokens.size() > 1 || !it.sample ? static_cast<int32_t>(it.tokens.size()) : 0;
    }
    EXPECT_EQ(prompt_tokens, 16);
}

TEST(scheduler, queue_bound_refuses_at_once) {
    scheduler s(cfg(1, 64, 16, 2));
    EXPECT_TRUE(s.submit(1, prompt_of(4), 10));
    EXPECT_TRUE(s.submit(2, prompt_of(4), 10));
    EXPECT_FALSE(s.submit(3, prompt_of(4), 10)); // two waiting: full
    fake_engine e(s);
    e.step(); // 1 takes the slot
    EXPECT_EQ(s.n_waiting(), 1);
    EXPECT_TRUE(s.submit(3, prompt_of(4), 10));
}

TEST(scheduler, rejects_what_cannot_fit_a_slot) {
    auto c       = cfg(1, 64, 16);
    c.n_ctx_slot = 32;
    scheduler s(c);
    EXPECT_FALSE(s.submit(1, prompt_of(30), 3));
    EXPECT_FALSE(s.submit(2, {}, 3));
    EXPECT_FALSE(s.submit(3, prompt_of(4), 0));
    EXPECT_TRUE(s.submit(4, prompt_of(29), 3));
}

TEST(scheduler, cancel_at_every_stage_frees_the_slot) {
    for (int stage = 0; stage < 3; ++stage) {
        scheduler   s(cfg(1, 8, 4));
        fake_engine e(s);
        ASSERT_TRUE(s.submit(1, prompt_of(20), 50)); // prefill takes 3 steps of 8
        ASSERT_TRUE(s.submit(2, prompt_of(5, 900), 2));
        if (stage >= 1) {
            e.step(); // 1 prefilling
        }
        if (stage >= 2) {
            e.step();
            e.step();
            e.step(); // 1 decoding
            ASSERT_EQ(s.info(1)->phase, seq_phase::decoding);
        }
        s.cancel(1);
        EXPECT_FALSE(s.info(1).has_value());
        auto plan = e.step();
        ASSERT_FALSE(plan.items.empty()) << "stage " << stage;
        EXPECT_EQ(plan.items[0].id, 2u) << "stage " << stage;
    }
    scheduler s(cfg(1, 8, 4));
    ASSERT_TRUE(s.submit(1, prompt_of(3), 2));
    ASSERT_TRUE(s.submit(2, prompt_of(3), 2));
    s.cancel(2); // cancelled while waiting
    EXPECT_EQ(s.n_waiting(), 1);
    s.cancel(42); // unknown: ignored
}

TEST(scheduler, finished_request_prefix_is_reused_in_place) {
    scheduler   s(cfg(1, 64, 16));
    fake_engine e(s);
    ASSERT_TRUE(s.submit(1, prompt_of(20), 1));
    e.step();
    ASSERT_TRUE(s.idle());
    auto p2 = prompt_of(20);
    p2.push_back(77);
    ASSERT_TRUE(s.submit(2, p2, 1));
    auto plan = e.step();
    ASSERT_EQ(plan.items.size(), 1u);
    EXPECT_EQ(plan.items[0].pos, 20);
    EXPECT_EQ(plan.items[0].tokens, std::vector<token_id>{77});
}

TEST(scheduler, concurrent_requests_share_one_prefill_of_a_common_prefix) {
    scheduler   s(cfg(4, 64, 64));
    fake_engine e(s);
    auto        base = prompt_of(120);
    for (uint64_t id = 1; id <= 3; ++id) {
        auto p = base;
        p.push_back(static_cast<token_id>(5000 + id));
        ASSERT_TRUE(s.submit(id, p, 2));
    }
    while (!s.idle()) {
        e.step();
    }
    // One computation of the 120-token prefix plus each request's own last token.
    EXPECT_EQ(e.n_prompt_computed, 120 + 3);
    EXPECT_EQ(s.info(2), std::nullopt);
    EXPECT_EQ(e.generated[2], 2);
    EXPECT_EQ(e.generated[3], 2);
}

TEST(scheduler, follower_recovers_when_the_leader_is_cancelled) {
    scheduler   s(cfg(2, 16, 16));
    fake_engine e(s);
    auto        base = prompt_of(64);
    auto        p2   = base;
    p2.push_back(9999);
    ASSERT_TRUE(s.submit(1, base, 5));
    ASSERT_TRUE(s.submit(2, p2, 5));
    e.step(); // 1 prefills 16 tokens, 2 waits for the prefix
    ASSERT_EQ(s.info(2)->phase, seq_phase::waiting_prefix);
    s.cancel(1);
    e.step();
    ASSERT_TRUE(s.info(2).has_value());
    EXPECT_EQ(s.info(2)->n_cached, 16); // took what the leader had computed
    while (!s.idle()) {
        e.step();
    }
    EXPECT_EQ(e.generated[2], 5);
}

TEST(scheduler, failed_step_removes_its_sequences_and_forgets_their_kv) {
    scheduler   s(cfg(2, 64, 16));
    fake_engine e(s);
    ASSERT_TRUE(s.submit(1, prompt_of(10), 5));
    auto plan    = s.schedule();
    auto removed = s.fail_step(plan);
    EXPECT_EQ(removed, std::vector<uint64_t>{1});
    EXPECT_TRUE(s.idle());
    EXPECT_TRUE(s.slots().tokens(plan.items[0].slot).empty());
}

TEST(scheduler, fifo_admission_and_every_request_completes) {
    scheduler   s(cfg(2, 32, 8, 16));
    fake_engine e(s);
    for (uint64_t id = 1; id <= 6; ++id) {
        ASSERT_TRUE(s.submit(id, prompt_of(10, static_cast<int>(id) * 100), 4));
    }
    std::vector<uint64_t> order;
    for (int i = 0; i < 100 && !s.idle(); ++i) {
        auto plan = e.step();
        order.insert(order.end(), plan.admitted.begin(), plan.admitted.end());
    }
    EXPECT_TRUE(s.idle());
    EXPECT_EQ(order, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6}));
    for (uint64_t id = 1; id <= 6; ++id) {
        EXPECT_EQ(e.generated[id], 4);
    }
}

TEST(scheduler, kv_of_one_key_is_never_reused_under_another) {
    scheduler   s(cfg(2, 64, 64));
    fake_engine e(s);
    e.keys = {{1, 0}, {2, 7}, {3, 0}, {4, 7}};
    ASSERT_TRUE(s.submit(1, prompt_of(20), 1, 0));
    while (!s.idle()) {
        e.step();
    }
    EXPECT_EQ(e.n_prompt_computed, 20);
    // The same prompt under adapter key 7: nothing cached, all 20 tokens computed again.
    ASSERT_TRUE(s.submit(2, prompt_of(20), 1, 7));
    e.step();
    EXPECT_EQ(e.n_prompt_computed, 40);
    while (!s.idle()) {
        e.step();
    }
    // Both keys now have the prompt cached, each in its own slot: each reuses its own.
    auto p = prompt_of(20);
    p.push_back(99);
    ASSERT_TRUE(s.submit(3, p, 2, 0));
    ASSERT_TRUE(s.submit(4, p, 2, 7));
    e.step();
    ASSERT_TRUE(s.info(3) && s.info(4));
    EXPECT_EQ(s.info(3)->n_cached, 20);
    EXPECT_EQ(s.info(4)->n_cached, 20);
    while (!s.idle()) {
        e.step();
    }
    EXPECT_EQ(e.n_prompt_computed, 42);
}

TEST(scheduler, each_step_runs_one_key_and_running_keys_take_turns) {
    scheduler   s(cfg(4, 64, 64));
    fake_engine e(s);
    e.keys = {{1, 0}, {2, 0}, {3, 5}, {4, 9}};
    for (const auto &[id, key] : e.keys) {
        ASSERT_TRUE(s.submit(id, prompt_of(8, static_cast<int>(100 * id)), 6, key));
    }
    std::vector<kv_key> order;
    while (!s.idle()) {
        auto plan = e.step();
        if (!plan.items.empty()) {
            order.push_back(plan.key);
        }
        for (const auto &it : plan.items) {
            EXPECT_EQ(e.keys[it.id], plan.key);
        }
        ASSERT_LT(order.size(), 100u);
    }
    // Three keys with work: 0, 5, 9, 0, 5, 9, ... each gets every third step until it is done.
    ASSERT_GE(order.size(), 6u);
    for (size_t i = 0; i + 3 < order.size() && i < 15; ++i) {
        EXPECT_EQ(order[i], order[i + 3]) << "step " << i;
    }
    EXPECT_NE(order[0], order[1]);
    EXPECT_NE(order[1], order[2]);
    EXPECT_NE(order[0], order[2]);
    for (uint64_t id = 1; id <= 4; ++id) {
        EXPECT_EQ(e.generated[id], 6) << "seq " << id;
    }
}

TEST(scheduler, a_shared_prefix_is_not_waited_for_across_keys) {
    scheduler   s(cfg(4, 64, 64));
    fake_engine e(s);
    e.keys    = {{1, 0}, {2, 3}};
    auto base = prompt_of(120);
    auto p1   = base;
    p1.push_back(5001);
    auto p2 = base;
    p2.push_back(5002);
    ASSERT_TRUE(s.submit(1, p1, 2, 0));
    ASSERT_TRUE(s.submit(2, p2, 2, 3));
    e.step();
    EXPECT_NE(s.info(2)->phase, seq_phase::waiting_prefix);
    while (!s.idle()) {
        e.step();
    }
    EXPECT_EQ(e.n_prompt_computed, 2 * 121);
}

TEST(arrival_window, one_percent_of_the_expected_prefill_within_bounds) {
    using us = std::chrono::microseconds;
    EXPECT_EQ(arrival_window(4700.0, 129, 1, 8), us(2000)); // 606 ms of prefill: capped at 2 ms
    EXPECT_EQ(arrival_window(100.0, 1000, 3, 8), us(1000)); // 100 ms: 1 ms
    EXPECT_EQ(arrival_window(70.0, 105, 1, 16), us(73));    // 7.35 ms: 73 us
    EXPECT_EQ(arrival_window(40.0, 105, 1, 16), us(0));     // 42 us: not worth a wait
    EXPECT_EQ(arrival_window(0.0, 129, 1, 8), us(0));       // prefill cost not measured yet
    EXPECT_EQ(arrival_window(4700.0, 129, 1, 1), us(0));    // one slot: nobody to wait for
    EXPECT_EQ(arrival_window(4700.0, 129, 8, 8), us(0));    // the queued requests fill the slots
    EXPECT_EQ(arrival_window(4700.0, 0, 1, 8), us(0));
}

// Latency targets (scheduler_config::slo_itl_us, slo_ttft_us).

TEST(itl_prompt_tokens, what_fits_beside_the_decode_in_the_planned_share_of_the_target) {
    ASSERT_EQ(k_itl_headroom, 0.85); // the figures below are 0.85 of 200 ms
    // 200 ms target, 50 ms decode part, 5 ms a prompt token: (170 - 50) / 5 = 24 tokens.
    EXPECT_EQ(itl_prompt_tokens(200'000, 50'000, 5'000, 8), 24);
    EXPECT_EQ(itl_prompt_tokens(200'000, 0, 5'000, 8), 34); // decode cost not measured yet
    // A costlier token, or a decode that fills the target: the floor, so prompts still progress.
    EXPECT_EQ(itl_prompt_tokens(200'000, 50'000, 20'000, 8), 8);
    EXPECT_EQ(itl_prompt_tokens(200'000, 400'000, 5'000, 8), 8);
    EXPECT_EQ(itl_prompt_tokens(200'000, 50'000, 5'000, 0), 24);
    EXPECT_EQ(itl_prompt_tokens(200'000, 400'000, 5'000, 0), 1);
    // No target, or the prompt cost unknown: no bound.
    EXPECT_EQ(itl_prompt_tokens(0, 50'000, 5'000, 8), std::nullopt);
    EXPECT_EQ(itl_prompt_tokens(200'000, 50'000, 0, 8), std::nullopt);
}

TEST(expected_decode_us, measured_counts_then_the_nearest_smaller_scaled_then_a_larger) {
    const std::vector<double> by_seqs = {0, 20'000, 45'000, 0, 0, 0, 85'000, 0};
    EXPECT_EQ(expected_decode_us(by_seqs, 1), 20'000);
    EXPECT_EQ(expected_decode_us(by_seqs, 2), 45'000);
    EXPECT_EQ(expected_decode_us(by_seqs, 4), 90'000); // 2 measured: 45 ms x 4 / 2
    EXPECT_EQ(expected_decode_us(by_seqs, 6), 85'000); // measured
    EXPECT_EQ(expected_decode_us(by_seqs, 7), 85'000 * 7.0 / 6.0);
    EXPECT_EQ(expected_decode_us(by_seqs, 12), 85'000 * 12.0 / 6.0);                // past the table: its last measured
    EXPECT_EQ(expected_decode_us(std::vector<double>{0, 0, 0, 60'000}, 1), 60'000); // only a larger count measured
    EXPECT_EQ(expected_decode_us(std::vector<double>{0, 0, 0}, 2), 0.0);
    EXPECT_EQ(expected_decode_us({}, 2), 0.0);
    EXPECT_EQ(expected_decode_us(by_seqs, 0), 0.0);
}

namespace {
// One stream decoding (seq 1), then `n_prompts` 128-token prompts arrive (ids 2..); returns the
// plan of the step that takes them, as the fake engine ran it.
step_plan prompt_step_beside_a_stream(scheduler &s, double prefill_us, double decode_us, int n_prompts = 1) {
    fake_engine e(s);
    s.set_prefill_cost(prefill_us);
    s.set_step_costs({0, decode_us}, prefill_us); // one stream decodes: decode_us
    EXPECT_TRUE(s.submit(1, prompt_of(4), 500));
    e.step();
    for (int i = 0; i < n_prompts; ++i) {
        EXPECT_TRUE(s.submit(static_cast<uint64_t>(2 + i), prompt_of(128, 1000 * (i + 1)), 10));
    }
    return e.step();
}

int32_t prompt_tokens_of(const step_plan &plan) {
    int32_t n = 0;
    for (const auto &it : plan.items) {
        n += it.work == plan_work::prompt ? static_cast<int32_t>(it.tokens.size()) : 0;
    }
    return n;
}
} // namespace

TEST(scheduler, an_itl_target_shrinks_the_prompt_budget_beside_decoding_streams) {
    auto c            = cfg(4, 2048, 256);
    c.prefill_step_us = 50'000;
    c.slo_itl_us      = 200'000;
    {
        scheduler s(c); // 5 ms a prompt token, 50 ms of decode: (170 - 50) / 5 = 24 tokens
        EXPECT_EQ(prompt_tokens_of(prompt_step_beside_a_stream(s, 5'000, 50'000)), 24);
    }
    {
        scheduler s(c); // twice the cost: 12
        EXPECT_EQ(prompt_tokens_of(prompt_step_beside_a_stream(s, 10'000, 50'000)), 12);
    }
    {
        scheduler s(c); // four times: 6 fit, the floor of 8 holds
        EXPECT_EQ(prompt_tokens_of(prompt_step_beside_a_stream(s, 20'000, 50'000)), k_itl_min_prompt_tokens);
    }
    {
        scheduler s(c); // cheap prompt tokens: the whole prompt fits
        EXPECT_EQ(prompt_tokens_of(prompt_step_beside_a_stream(s, 100, 50'000)), 128);
    }
    {
        scheduler s(c); // three prompts beside one stream: the bound still holds (no lift)
        EXPECT_EQ(prompt_tokens_of(prompt_step_beside_a_stream(s, 5'000, 50'000, 3)), 24);
    }
    auto c0       = c; // the same costs without the target: the whole prompt (one chunk of the 256 cap)
    c0.slo_itl_us = 0;
    {
        scheduler s(c0);
        EXPECT_EQ(prompt_tokens_of(prompt_step_beside_a_stream(s, 5'000, 50'000)), 128);
    }
    { // with nothing decoding, the target does not bound the prompt
        scheduler   s(c);
        fake_engine e(s);
        s.set_prefill_cost(5'000);
        s.set_step_costs({0, 50'000}, 5'000);
        ASSERT_TRUE(s.submit(1, prompt_of(128), 10));
        EXPECT_EQ(prompt_tokens_of(e.step()), 128);
    }
}

TEST(scheduler, under_an_itl_target_a_long_prompt_is_spread_over_steps_and_the_stream_never_stalls) {
    auto c            = cfg(4, 2048, 256);
    c.slo_itl_us      = 200'000;
    c.prefill_step_us = 50'000;
    scheduler   s(c);
    fake_engine e(s);
    s.set_prefill_cost(5'000);
    s.set_step_costs({0, 50'000}, 5'000);
    ASSERT_TRUE(s.submit(1, prompt_of(4), 500));
    e.step();
    ASSERT_TRUE(s.submit(2, prompt_of(128, 1000), 10));
    int steps = 0;
    while (s.info(2)->n_generated == 0) {
        const step_plan plan = e.step();
        ++steps;
        EXPECT_EQ(plan.items.front().id, 1u) << "step " << steps;
        EXPECT_LE(prompt_tokens_of(plan), 24) << "step " << steps;
        ASSERT_LT(steps, 20);
    }
    EXPECT_EQ(steps, 6); // ceil(128 / 24)
}

TEST(scheduler, a_ttft_target_admits_and_prefills_the_earliest_deadline_first) {
    using clock   = std::chrono::steady_clock;
    const auto t0 = clock::now();
    // One slot: seq 2 arrived first but reached the scheduler second; it is admitted first.
    auto c        = cfg(1, 512, 256);
    c.slo_ttft_us = 2e6;
    {
        scheduler   s(c);
        fake_engine e(s);
        ASSERT_TRUE(s.submit(1, prompt_of(8), 2, 0, t0 + std::chrono::milliseconds(10)));
        ASSERT_TRUE(s.submit(2, prompt_of(8, 100), 2, 0, t0));
        const auto plan = e.step();
        EXPECT_EQ(plan.admitted, std::vector<uint64_t>{2});
        ASSERT_EQ(plan.items.size(), 1u);
        EXPECT_EQ(plan.items[0].id, 2u);
    }
    // Four slots, costly prompts one a step: both admitted, the earlier deadline computed first.
    auto c4            = cfg(4, 512, 256);
    c4.prefill_step_us = 50'000;
    c4.slo_ttft_us     = 2e6;
    for (const bool with_target : {true, false}) {
        c4.slo_ttft_us = with_target ? 2e6 : 0;
        scheduler   s(c4);
        fake_engine e(s);
        s.set_prefill_cost(1'000);
        ASSERT_TRUE(s.submit(1, prompt_of(100), 2, 0, t0 + std::chrono::milliseconds(10)));
        ASSERT_TRUE(s.submit(2, prompt_of(100, 1000), 2, 0, t0));
        const auto plan = e.step();
        EXPECT_EQ(plan.admitted.size(), 2u);
        ASSERT_EQ(plan.items.size(), 1u);
        EXPECT_EQ(plan.items[0].id, with_target ? 2u : 1u) << "target " << with_target;
    }
}

TEST(scheduler, without_targets_costs_and_arrivals_change_no_plan) {
    // The same workload twice: once as before the targets existed, once with step costs and
    // out-of-order arrivals handed in but no target set. Every step's plan must be identical.
    const auto  t0 = std::chrono::steady_clock::now();
    auto        c  = cfg(3, 64, 16);
    scheduler   plain(c);
    scheduler   fed(c);
    fake_engine ep(plain);
    fake_engine ef(fed);
    for (scheduler *s : {&plain, &fed}) {
        s->set_prefill_cost(5'000);
    }
    fed.set_step_costs({0, 50'000, 90'000}, 5'000);
    auto submit_both = [&](uint64_t id, int n, int base, int ms) {
        ASSERT_TRUE(plain.submit(id, prompt_of(n, base), 6));
        ASSERT_TRUE(fed.submit(id, prompt_of(n, base), 6, 0, t0 - std::chrono::milliseconds(ms)));
    };
    submit_both(1, 10, 1, 0);
    submit_both(2, 40, 100, 5); // "arrived" earlier than 1
    for (int step = 0; step < 30 && !(plain.idle() && fed.idle()); ++step) {
        if (step == 2) {
            submit_both(3, 70, 200, 50);
            submit_both(4, 5, 300, 100);
            submit_both(5, 30, 400, 200);
        }
        const step_plan a = ep.step();
        const step_plan b = ef.step();
        EXPECT_EQ(a.admitted, b.admitted) << "step " << step;
        ASSERT_EQ(a.items.size(), b.items.size()) << "step " << step;
        for (size_t i = 0; i < a.items.size(); ++i) {
            EXPECT_EQ(a.items[i].id, b.items[i].id) << "step " << step;
            EXPECT_EQ(a.items[i].pos, b.items[i].pos) << "step " << step;
            EXPECT_EQ(a.items[i].tokens, b.items[i].tokens) << "step " << step;
        }
    }
    EXPECT_TRUE(plain.idle());
    EXPECT_TRUE(fed.idle());
}

TEST(scheduler, the_itl_budget_uses_the_decode_cost_of_the_streams_running_now) {
    // Two streams decode; their measured 90 ms leaves (170 - 90) / 5 = 16 tokens of a 200 ms
    // target (one stream's 20 ms would leave 30).
    auto c       = cfg(4, 2048, 256);
    c.slo_itl_us = 200'000;
    scheduler   s(c);
    fake_engine e(s);
    s.set_prefill_cost(5'000);
    s.set_step_costs({0, 20'000, 90'000}, 5'000);
    ASSERT_TRUE(s.submit(1, prompt_of(4), 500));
    ASSERT_TRUE(s.submit(2, prompt_of(4, 50), 500));
    e.step();
    ASSERT_TRUE(s.submit(3, prompt_of(128, 1000), 10));
    EXPECT_EQ(prompt_tokens_of(e.step()), 16);
}

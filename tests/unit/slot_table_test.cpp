#include "kv/slot_table.h"

#include <gtest/gtest.h>

using namespace inferbox;

TEST(slot_table, acquires_until_full_and_releases) {
    slot_table            t(2, 16);
    std::vector<token_id> p = {1, 2, 3};
    auto                  a = t.acquire(p, true);
    auto                  b = t.acquire(p, true);
    ASSERT_TRUE(a && b);
    EXPECT_NE(a->slot, b->slot);
    EXPECT_FALSE(t.acquire(p, true).has_value());
    t.release(a->slot);
    EXPECT_EQ(t.n_idle(), 1);
}

TEST(slot_table, reuses_longest_idle_prefix_but_never_the_last_prompt_token) {
    slot_table            t(2, 16);
    std::vector<token_id> p = {1, 2, 3, 4};
    auto                  a = t.acquire(p, true);
    t.tokens(a->slot)       = {1, 2, 3, 4, 9};
    t.release(a->slot);
    auto g = t.acquire(p, true);
    ASSERT_TRUE(g);
    EXPECT_EQ(g->slot, a->slot);
    EXPECT_EQ(g->n_reused, 3); // the 4th token is recomputed for its logits
    EXPECT_EQ(g->copy_from, -1);
    EXPECT_EQ(t.tokens(g->slot), (std::vector<token_id>{1, 2, 3}));
}

TEST(slot_table, copies_from_a_busy_slot_when_it_saves_enough) {
    slot_table            t(2, 4);
    std::vector<token_id> shared(40);
    for (int i = 0; i < 40; ++i) {
        shared[i] = i + 1;
    }
    auto busy               = t.acquire(shared, true);
    t.tokens(busy->slot)    = shared; // computed, still running
    std::vector<token_id> p = shared;
    p.push_back(100);
    auto g = t.acquire(p, true);
    ASSERT_TRUE(g);
    EXPECT_NE(g->slot, busy->slot);
    EXPECT_EQ(g->copy_from, busy->slot);
    EXPECT_EQ(g->n_reused, 40);
    EXPECT_EQ(t.tokens(g->slot), shared);
}

TEST(slot_table, reuse_disabled_gives_a_clean_slot) {
    slot_table            t(1, 4);
    std::vector<token_id> p = {5, 6, 7};
    auto                  a = t.acquire(p, false);
    t.tokens(a->slot)       = p;
    t.release(a->slot);
    auto g = t.acquire(p, false);
    EXPECT_EQ(g->n_reused, 0);
    EXPECT_TRUE(t.tokens(g->slot).empty());
}

TEST(slot_table, kv_of_another_key_is_neither_reused_nor_copied) {
    slot_table            t(2, 4);
    std::vector<token_id> p(40);
    for (size_t i = 0; i < p.size(); ++i) {
        p[i] = static_cast<token_id>(i + 1);
    }
    auto a            = t.acquire(p, true, 3); // busy under key 3, holding the whole prompt
    t.tokens(a->slot) = p;
    EXPECT_EQ(t.key(a->slot), 3u);
    EXPECT_EQ(t.common_prefix(a->slot, p, 3), 40);
    EXPECT_EQ(t.common_prefix(a->slot, p, 0), 0);
    EXPECT_EQ(t.best_prefix(p, 0).first, -1);
    auto g = t.acquire(p, true, 0); // the base model: nothing of key 3's KV is usable
    ASSERT_TRUE(g);
    EXPECT_EQ(g->n_reused, 0);
    EXPECT_EQ(g->copy_from, -1);
    t.release(a->slot);
    t.release(g->slot);
    auto h = t.acquire(p, true, 3); // key 3 again: its idle slot's prefix is reused in place
    ASSERT_TRUE(h);
    EXPECT_EQ(h->slot, a->slot);
    EXPECT_EQ(h->n_reused, 39);
}

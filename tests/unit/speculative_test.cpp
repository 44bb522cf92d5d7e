// Speculative decoding without a model: prompt-lookup drafting, and the scheduler's handling of
// drafted tokens (budgets, verification, rollback of the KV of rejected drafts).

#include "scheduler/ngram_draft.h"
#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <vector>

using namespace inferbox;

using toks = std::vector<token_id>;

TEST(ngram_draft, continues_the_most_recent_earlier_occurrence_of_the_longest_suffix) {
    // "7 8 9" occurred twice; the later occurrence (followed by 5 6) wins over the earlier (1 2).
    const toks h = {7, 8, 9, 1, 2, 3, 7, 8, 9, 5, 6, 4, 7, 8, 9};
    EXPECT_EQ(ngram_draft(h, 2), (toks{5, 6}));
    EXPECT_EQ(ngram_draft(h, 10), (toks{5, 6, 4, 7, 8, 9})); // up to the end of the history
    // A longer suffix beats a more recent shorter one: "3 4" recently precedes 9, but "2 3 4"
    // earlier precedes 8.
    const toks g = {2, 3, 4, 8, 0, 3, 4, 9, 0, 2, 3, 4};
    EXPECT_EQ(ngram_draft(g, 1), (toks{8}));
}

TEST(ngram_draft, nothing_when_no_suffix_repeats_or_no_room) {
    EXPECT_TRUE(ngram_draft(toks{1, 2, 3, 4, 5}, 4).empty());
    EXPECT_TRUE(ngram_draft(toks{}, 4).empty());
    EXPECT_TRUE(ngram_draft(toks{1, 2, 1, 2}, 0).empty());
    // A single repeated token is below the default minimum n-gram of 2.
    EXPECT_TRUE(ngram_draft(toks{5, 1, 2, 5}, 3).empty());
    EXPECT_EQ(ngram_draft(toks{5, 1, 2, 5}, 3, {1, 4}), (toks{1, 2, 5}));
}

TEST(ngram_draft, a_repeating_pattern_overlapping_itself_is_continued) {
    EXPECT_EQ(ngram_draft(toks{1, 2, 1, 2, 1, 2}, 3), (toks{1, 2}));
    EXPECT_EQ(ngram_draft(toks{4, 4, 4, 4}, 8), (toks{4}));
}

namespace {

scheduler_config spec_cfg(int32_t step_tokens = 64, int32_t n_ctx_slot = 1024) {
    scheduler_config c;
    c.n_slots              = 2;
    c.n_ctx_slot           = n_ctx_slot;
    c.step_tokens          = step_tokens;
    c.prefill_while_decode = 16;
    return c;
}

// Prefills a one-sequence scheduler and samples the first token, so the sequence decodes next.
void start_decoding(scheduler &s, uint64_t id, const toks &prompt, int32_t max_new) {
    ASSERT_TRUE(s.submit(id, prompt, max_new));
    const auto p = s.schedule();
    ASSERT_EQ(p.items.size(), 1u);
    s.on_sampled(id, token_id{100}, false);
}

} // namespace

TEST(scheduler_speculative, a_draft_rides_after_the_next_token_and_rejected_drafts_are_rolled_back) {
    scheduler s(spec_cfg());
    start_decoding(s, 1, {1, 2, 3, 4}, 50);
    s.set_draft(1, {101, 102, 103});
    auto p = s.schedule();
    ASSERT_EQ(p.items.size(), 1u);
    EXPECT_EQ(p.items[0].tokens, (toks{100, 101, 102, 103}));
    EXPECT_EQ(p.items[0].n_draft, 3);
    EXPECT_EQ(p.items[0].pos, 4);
    EXPECT_EQ(s.slots().tokens(p.items[0].slot), (toks{1, 2, 3, 4, 100, 101, 102, 103}));

    // The model agreed with 101 and then said 222: KV keeps 100 and 101; 222 is decoded next.
    const toks accepted = {101, 222};
    s.on_sampled(1, accepted, false);
    EXPECT_EQ(s.info(1)->n_past, 6);
    EXPECT_EQ(s.info(1)->n_generated, 3);
    EXPECT_EQ(s.slots().tokens(p.items[0].slot), (toks{1, 2, 3, 4, 100, 101}));
    p = s.schedule(); // no draft this time
    ASSERT_EQ(p.items.size(), 1u);
    EXPECT_EQ(p.items[0].tokens, (toks{222}));
    EXPECT_EQ(p.items[0].pos, 6);
    EXPECT_EQ(p.items[0].n_draft, 0);
}

TEST(scheduler_speculative, all_drafts_accepted_moves_past_them) {
    scheduler s(spec_cfg());
    start_decoding(s, 1, {1, 2, 3}, 50);
    s.set_draft(1, {101, 102});
    auto p = s.schedule();
    s.on_sampled(1, toks{101, 102, 300}, false);
    EXPECT_EQ(s.info(1)->n_past, 6);
    EXPECT_EQ(s.info(1)->n_generated, 4);
    p = s.schedule();
    EXPECT_EQ(p.items[0].tokens, (toks{300}));
    EXPECT_EQ(p.items[0].pos, 6);
}

TEST(scheduler_speculative, drafts_are_trimmed_to_the_tokens_left_the_slot_room_and_the_step_budget) {
    {
        scheduler s(spec_cfg());
        start_decoding(s, 1, {1, 2, 3}, 4); // one generated, three to go: the next token and two drafts
        EXPECT_EQ(s.draft_room(1), 2);
        EXPECT_EQ(s.draft_room(99), 0); // unknown
        s.set_draft(1, {101, 102, 103, 104, 105});
        const auto p = s.schedule();
        EXPECT_EQ(p.items[0].n_draft, 2);
        EXPECT_EQ(p.items[0].tokens.size(), 3u);
    }
    {
        scheduler s(spec_cfg(64, 8)); // 8 tokens per slot
        start_decoding(s, 1, {1, 2, 3, 4}, 4);
        s.set_draft(1, {101, 102, 103, 104, 105});
        const auto p = s.schedule();
        EXPECT_EQ(p.items[0].pos, 4);
        EXPECT_LE(p.items[0].pos + static_cast<int32_t>(p.items[0].tokens.size()), 8);
    }
    {
        scheduler s(spec_cfg(4)); // a 4-token step: the next token and three drafts at most
        start_decoding(s, 1, {1, 2}, 50);
        s.set_draft(1, {101, 102, 103, 104, 105});
        const auto p = s.schedule();
        EXPECT_EQ(p.items[0].n_draft, 3);
        EXPECT_EQ(p.n_tokens, 4);
    }
}

TEST(scheduler_speculative, a_draft_is_for_one_step_and_only_for_decoding_sequences) {
    scheduler s(spec_cfg());
    ASSERT_TRUE(s.submit(1, {1, 2, 3}, 50));
    EXPECT_EQ(s.draft_room(1), 0);
    s.set_draft(1, {7, 8}); // still waiting: ignored
    auto p = s.schedule();
    EXPECT_EQ(p.items[0].n_draft, 0);
    EXPECT_EQ(p.items[0].tokens, (toks{1, 2, 3}));
    s.on_sampled(1, token_id{100}, false);
    s.set_draft(1, {7});
    p = s.schedule();
    EXPECT_EQ(p.items[0].n_draft, 1);
    s.on_sampled(1, toks{55}, false); // the draft was rejected
    p = s.schedule();                 // and is not offered again
    EXPECT_EQ(p.items[0].n_draft, 0);
    EXPECT_EQ(p.items[0].tokens, (toks{55}));
}

TEST(scheduler_speculative, finishing_inside_a_draft_frees_the_slot_with_only_the_kept_tokens) {
    scheduler s(spec_cfg());
    start_decoding(s, 1, {1, 2, 3}, 50);
    s.set_draft(1, {101, 102, 103});
    const auto p    = s.schedule();
    const int  slot = p.items[0].slot;
    s.on_sampled(1, toks{101}, true); // a stop string completed at 101: the rest is dropped
    EXPECT_TRUE(s.idle());
    EXPECT_EQ(s.slots().tokens(slot), (toks{1, 2, 3, 100}));
    EXPECT_FALSE(s.slots().busy(slot));
}

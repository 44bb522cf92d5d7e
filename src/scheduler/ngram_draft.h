#pragma once
// Prompt-lookup drafting for speculative decoding: when the last few tokens of a sequence occurred
// earlier in it (the prompt or the output so far), guess that what followed them then follows
// again. Free to compute and strong on outputs that quote their input (extraction, code edits,
// summaries with names), useless on free prose; the target model verifies every guess, so a bad
// one costs only the wasted positions of one step. Pure logic, unit-tested without a model.

#include "kv/slot_table.h"

#include <cstdint>
#include <span>
#include <vector>

namespace inferbox {

struct ngram_draft_config {
    int32_t min_ngram = 2; // shortest suffix that may match (1 guesses too often)
    int32_t max_ngram = 4; // longest suffix tried first: longer matches predict better
};

// Up to `max_tokens` tokens proposed to follow `history`: the tokens that followed the most recent
// earlier occurrence of the longest suffix of `history` (between max_ngram and min_ngram tokens)
// that occurs earlier. Empty when no suffix repeats or max_tokens < 1.
std::vector<token_id> ngram_draft(std::span<const token_id> history, int32_t max_tokens,
                                  const ngram_draft_config &cfg = {});

} // namespace inferbox

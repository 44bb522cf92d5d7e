#pragma once
// Untrusted search text → an SQLite FTS5 MATCH expression that cannot be anything but a list of
// terms. FTS5's query language has operators (AND, OR, NOT, NEAR(...), column filters `col:`,
// prefixes `*`, `^`, parentheses, `+`); a user's or a model's query must reach none of them. Each
// whitespace-separated term becomes one FTS5 string ("..." with every `"` doubled), which FTS5
// treats as a phrase of whatever tokens its tokenizer finds inside — operators and punctuation
// included become plain text or nothing. The terms are joined with OR, so BM25 ranks chunks by
// how many of the terms they hold and how rare those are.

#include "common/status.h"

#include <cstddef>
#include <string>
#include <string_view>

namespace inferbox::retrieval {

struct fts_query_limits {
    size_t max_bytes = 4096; // of the query text
    size_t max_terms = 64;   // distinct terms
};

// The MATCH expression for `text`, or "" when it holds no term (whitespace and control characters
// only): the caller then has no keyword ranking. Invalid UTF-8 is replaced by U+FFFD; control
// characters separate terms; terms are deduplicated ignoring ASCII case. Errors: the text over
// max_bytes, or more distinct terms than max_terms (each message names the limit).
result<std::string> fts_match_expression(std::string_view text, const fts_query_limits &limits = {});

} // namespace inferbox::retrieval

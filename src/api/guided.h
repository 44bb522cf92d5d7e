#pragma once
// Guided decoding, the part that needs no model: turning a regular expression or a list of
// choices into a GBNF grammar (llama.cpp's grammar language), quoting literals for GBNF, and a
// shape check of any GBNF text before llama.cpp's recursive parser sees it. Pure functions on
// untrusted input: every error is an invalid_request whose message says what is wrong and
// where, every input size and repetition is bounded, and nothing throws.
//
// JSON Schema compilation needs llama.cpp's converter and lives in model/grammar.h.

#include "common/status.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

struct guided_limits {
    size_t  max_regex_bytes   = 4096;      // guided_regex pattern
    size_t  max_grammar_bytes = 128 << 10; // any GBNF, given or generated
    size_t  max_schema_bytes  = 64 << 10;  // a JSON Schema, serialized
    size_t  max_choices       = 256;       // guided_choice entries
    size_t  max_choice_bytes  = 4096;      // bytes per choice
    int32_t max_repetition    = 1000;      // {m,n} bounds; nested repetitions multiply
    int32_t max_nesting       = 32;        // regex groups, GBNF parentheses
};

// GBNF for a regular expression that the whole output must match (leading ^ and trailing $ are
// accepted and change nothing). Supported: literals and escapes (\n \r \t \f \v \xHH \uHHHH and
// escaped punctuation), classes [...] with ranges and ^ negation, ., \d \w \s \D \W \S (ASCII
// semantics, as Python's re.ASCII; . excludes \n \r \u2028 \u2029), groups (...) (?:...)
// (?<name>...) (?P<name>...), alternation |, quantifiers * + ? {m} {m,} {m,n} {,n} (a lazy
// suffix ? is accepted: it does not change which strings match). Everything else
// (backreferences, lookaround, word boundaries, inline flags, possessive quantifiers, \p{...})
// is an error naming the construct and its offset. The error's param is empty: the caller
// names the field.
result<std::string> regex_to_gbnf(std::string_view pattern, const guided_limits &limits);

// GBNF whose language is exactly the given strings (UTF-8; none may contain NUL).
result<std::string> choice_to_gbnf(const std::vector<std::string> &choices, const guided_limits &limits);

// A GBNF string literal ("...") matching exactly `text` (valid UTF-8): printable ASCII stays as
// it is, '"' and '\' and every other code point become escapes the GBNF parser reads back.
std::string gbnf_literal(std::string_view text);

// Checks what llama.cpp's GBNF parser would otherwise meet unguarded: size, NUL bytes, strings
// and classes left open, parentheses unbalanced or nested deeper than limits.max_nesting (the
// parser recurses per level), and a missing `root` rule. Returns an empty string when the
// shape is fine, else the problem. A fine shape is not a valid grammar: the parser decides that.
std::string gbnf_shape_error(std::string_view gbnf, const guided_limits &limits);

} // namespace inferbox

#pragma once
// rewrite_query for vector store searches (OpenAI's `rewrite_query: true`): a natural-language
// question → a keyword query, by a fixed lexical rule, with no model call. OpenAI rewrites with a
// model; this one is deterministic (the same text always gives the same query, independent of any
// model's wording) and costs no added latency. It does not paraphrase, expand synonyms, stem or
// correct spelling: it only removes what carries no search weight.

#include <string>
#include <string_view>

namespace inferbox::retrieval {

// The keyword query for `query`:
//  - ASCII letters are lower-cased; bytes >= 0x80 are kept as they are and count as letters, so
//    UTF-8 words survive untouched (and are never stop words).
//  - Words are runs of ASCII letters and digits and bytes >= 0x80. Every other byte (whitespace,
//    control characters, punctuation) breaks words, except `-`, `'`, `.` and `_` with a word
//    character on both sides, which stay inside the word: "gpt-4", "v1.2", "don't", "snake_case"
//    (a trailing "." or a leading "-" is dropped).
//  - English stop words and conversational fillers (a fixed list of about 170 in query_rewrite.cpp:
//    articles, pronouns, auxiliaries, question words such as what, which, how, when, where, who,
//    why, and "please", "tell", "me", "find", "show", "know", "about", "can", ...) are dropped; a
//    word made of digits only is never dropped.
//  - A word already kept is not repeated (the first occurrence stays where it was).
//  - The words are joined by single spaces.
// When no word is left (only stop words or only punctuation), the whole query, ASCII lower-cased
// with its whitespace runs collapsed to single spaces and trimmed, is returned instead; so the
// result is empty only when `query` is empty or ASCII whitespace only. Pure: at most one
// allocation (the result, never longer than `query`), time O(n·w) for n bytes and w kept words
// (callers bound the query: max_query_bytes).
std::string rewrite_query(std::string_view query);

} // namespace inferbox::retrieval

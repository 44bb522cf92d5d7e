#include "retrieval/query_rewrite.h"

#include <algorithm>
#include <array>

namespace inferbox::retrieval {

namespace {

// English stop words and conversational fillers, lower-case, sorted (binary search; checked at
// compile time). Negations (no, not, nor) and words with a meaning of their own in a search
// (before, after, between, more, ...) are not here.
constexpr std::array<std::string_view, 169> stop_words = {
    "a",        "about",   "all",       "also",    "am",     "an",         "and",        "any",       "anyone",
    "anything", "are",     "aren't",    "as",      "at",     "be",         "because",    "been",      "being",
    "but",      "by",      "can",       "can't",   "cannot", "could",      "couldn't",   "describe",  "did",
    "didn't",   "do",      "does",      "doesn't", "doing",  "don't",      "each",       "explain",   "find",
    "for",      "from",    "get",       "give",    "had",    "hadn't",     "has",        "hasn't",    "have",
    "haven't",  "having",  "he",        "he'd",    "he's",   "hello",      "help",       "her",       "here",
    "hers",     "herself", "hey",       "hi",      "him",    "himself",    "his",        "how",       "how's",
    "i",        "i'd",     "i'll",      "i'm",     "i've",   "if",         "in",         "into",      "is",
    "isn't",    "it",      "it's",      "its",     "itself", "just",       "kindly",     "know",      "let",
    "let's",    "like",    "look",      "looking", "may",    "me",         "might",      "much",      "must",
    "my",       "myself",  "need",      "of",      "on",     "or",         "our",        "ours",      "ourselves",
    "please",   "really",  "regarding", "say",     "she",    "she's",      "should",     "shouldn't", "show",
    "so",       "some",    "something", "such",    "tell",   "than",       "thank",      "thanks",    "that",
    "that's",   "the",     "their",     "theirs",  "them",   "themselves", "then",       "there",     "there's",
    "these",    "they",    "they're",   "this",    "those",  "to",         "too",        "us",        "very",
    "want",     "was",     "wasn't",    "we",      "we're",  "were",       "weren't",    "what",      "what's",
    "whatever", "when",    "where",     "where's", "which",  "while",      "who",        "who's",     "whom",
    "whose",    "why",     "why's",     "will",    "with",   "won't",      "wondering",  "would",     "wouldn't",
    "you",      "you'd",   "you're",    "your",    "yours",  "yourself",   "yourselves",
};
static_assert(std::is_sorted(stop_words.begin(), stop_words.end()), "stop_words must stay sorted");

bool is_word_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

bool is_joiner(unsigned char c) {
    return c == '-' || c == '\'' || c == '.' || c == '_';
}

bool is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

char ascii_lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// Whether query[i] belongs to a word: a word byte, or a joiner between two word bytes.
bool in_word(std::string_view query, size_t i) {
    const auto c = static_cast<unsigned char>(query[i]);
    if (is_word_byte(c)) {
        return true;
    }
    return is_joiner(c) && i > 0 && i + 1 < query.size() && is_word_byte(static_cast<unsigned char>(query[i - 1])) &&
           is_word_byte(static_cast<unsigned char>(query[i + 1]));
}

bool all_digits(std::string_view w) {
    return std::all_of(w.begin(), w.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_stop_word(std::string_view w) {
    return std::binary_search(stop_words.begin(), stop_words.end(), w);
}

// Whether `kept` (words separated by single spaces) holds `w` as a whole word.
bool holds_word(std::string_view kept, std::string_view w) {
    while (!kept.empty()) {
        const size_t           space = kept.find(' ');
        const std::string_view word  = kept.substr(0, space);
        if (word == w) {
            return true;
        }
        if (space == std::string_view::npos) {
            break;
        }
        kept.remove_prefix(space + 1);
    }
    return false;
}

} // namespace

std::string rewrite_query(std::string_view query) {
    std::string out;
    out.reserve(query.size());
    for (size_t i = 0; i < query.size();) {
        if (!in_word(query, i)) {
            ++i;
            continue;
        }
        // Append the word lower-cased, then take it back out if it is a stop word or a repeat.
        const size_t kept_end = out.size();
        if (!out.empty()) {
            out.push_back(' ');
        }
        const size_t start = out.size();
        for (; i < query.size() && in_word(query, i); ++i) {
            out.push_back(ascii_lower(query[i]));
        }
        const std::string_view word(out.data() + start, out.size() - start);
        if ((!all_digits(word) && is_stop_word(word)) || holds_word(std::string_view(out.data(), kept_end), word)) {
            out.resize(kept_end);
        }
    }
    if (!out.empty()) {
        return out;
    }
    // Nothing left: the query itself, lower-cased, its whitespace collapsed.
    for (size_t i = 0; i < query.size();) {
        if (is_space(static_cast<unsigned char>(query[i]))) {
            ++i;
            continue;
        }
        if (!out.empty()) {
            out.push_back(' ');
        }
        for (; i < query.size() && !is_space(static_cast<unsigned char>(query[i])); ++i) {
            out.push_back(ascii_lower(query[i]));
        }
    }
    return out;
}

} // namespace inferbox::retrieval

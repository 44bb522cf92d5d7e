#include "retrieval/chunker.h"

#include <algorithm>
#include <cstdint>
#include <optional>

namespace inferbox::retrieval {

namespace {

constexpr size_t max_tokens_limit    = 65536;
constexpr size_t max_document_limit  = 256u << 20; // the most a caller may raise max_document_bytes to
constexpr size_t first_piece_bytes   = 64;         // the first guess when a word has to be cut
constexpr size_t long_word_increment = 6;          // approximate_tokens: bytes per extra token

// How good a place the end of a unit is to end a chunk.
enum class cut : uint8_t { inside_word = 0, word = 1, sentence = 2, paragraph = 3 };

// A word with the whitespace after it: [begin, content_end) is the word, [content_end, end) the
// whitespace. `after` says what kind of break follows it.
struct unit {
    size_t begin = 0, content_end = 0, end = 0;
    cut    after = cut::word;
};

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool is_continuation(unsigned char c) {
    return (c & 0xC0) == 0x80;
}

// The length of the valid UTF-8 sequence at `i`, or 0 when the bytes there are not one (overlong
// forms, surrogates and values above U+10FFFF included).
size_t sequence_length(std::string_view s, size_t i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
        return 1;
    }
    size_t   n     = 0;
    uint32_t value = 0;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        n = 2, value = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        n = 3, value = b0 & 0x0F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        n = 4, value = b0 & 0x07;
    } else {
        return 0;
    }
    if (i + n > s.size()) {
        return 0;
    }
    for (size_t k = 1; k < n; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if (!is_continuation(b)) {
            return 0;
        }
        value = (value << 6) | (b & 0x3F);
    }
    const bool overlong = (n == 3 && value < 0x800) || (n == 4 && value < 0x10000);
    if (overlong || (value >= 0xD800 && value <= 0xDFFF) || value > 0x10FFFF) {
        return 0;
    }
    return n;
}

// The offset of the first byte that does not start a valid sequence, or npos.
size_t first_invalid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        const size_t n = sequence_length(s, i);
        if (n == 0) {
            return i;
        }
        i += n;
    }
    return std::string_view::npos;
}

// 。！？ end a sentence in CJK text, which has no space after them.
bool cjk_sentence_end(std::string_view s, size_t i) {
    if (i + 3 > s.size()) {
        return false;
    }
    const auto p = s.substr(i, 3);
    return p == "\xE3\x80\x82" || p == "\xEF\xBC\x81" || p == "\xEF\xBC\x9F";
}

// Whether the word [begin, end) ends a sentence: . ! ? possibly followed by closing quotes or
// brackets.
bool ends_sentence(std::string_view s, size_t begin, size_t end) {
    while (end > begin && (s[end - 1] == '"' || s[end - 1] == '\'' || s[end - 1] == ')' || s[end - 1] == ']')) {
        --end;
    }
    return end > begin && (s[end - 1] == '.' || s[end - 1] == '!' || s[end - 1] == '?');
}

std::vector<unit> split_units(std::string_view t) {
    std::vector<unit> units;
    size_t            i = 0;
    while (i < t.size() && is_space(t[i])) {
        ++i;
    }
    while (i < t.size()) {
        unit u;
        u.begin         = i;
        size_t j        = i;
        bool   cjk_stop = false;
        while (j < t.size() && !is_space(t[j])) {
            if (cjk_sentence_end(t, j)) {
                j += 3;
                cjk_stop = true;
                break;
            }
            ++j;
        }
        u.content_end   = j;
        size_t newlines = 0;
        while (j < t.size() && is_space(t[j])) {
            newlines += t[j] == '\n' ? 1 : 0;
            ++j;
        }
        u.end = j;
        if (j == t.size() || newlines >= 2) {
            u.after = cut::paragraph;
        } else if (newlines == 1 || cjk_stop || (j > u.content_end && ends_sentence(t, u.begin, u.content_end))) {
            u.after = cut::sentence;
        } else {
            u.after = cut::word;
        }
        units.push_back(u);
        i = j;
    }
    return units;
}

size_t next_boundary(std::string_view t, size_t i) {
    ++i;
    while (i < t.size() && is_continuation(static_cast<unsigned char>(t[i]))) {
        ++i;
    }
    return i;
}

size_t boundary_at_or_before(std::string_view t, size_t i) {
    while (i > 0 && i < t.size() && is_continuation(static_cast<unsigned char>(t[i]))) {
        --i;
    }
    return i;
}

// Cuts a unit whose count is over `max` into pieces of at most `max` tokens between characters
// (one character alone is kept whole even when it counts more). Exponential then binary search on
// each piece's length, so a long word costs O(its length × log) in counting, never its length
// squared. Candidate ends are the character boundaries in (pos, content_end].
void cut_long_unit(std::string_view t, const unit &u, size_t max, const token_counter &count, std::vector<unit> &out,
                   std::vector<size_t> &costs) {
    size_t pos = u.begin;
    while (pos < u.content_end) {
        // A piece that ends the word carries its whitespace, as whole units do, so that a chunk's
        // count is the sum of its pieces' for any counter.
        auto   piece = [&](size_t end) { return t.substr(pos, (end == u.content_end ? u.end : end) - pos); };
        auto   fits  = [&](size_t end) { return count(piece(end)) <= max; };
        size_t good  = next_boundary(t, pos); // taken even when it does not fit: progress
        size_t bad   = u.content_end + 1;     // the smallest end known not to fit; this one is a sentinel
        if (fits(good)) {
            for (size_t len = first_piece_bytes; pos + len <= u.content_end; len *= 2) {
                const size_t probe = boundary_at_or_before(t, pos + len);
                if (probe <= good) {
                    continue;
                }
                if (!fits(probe)) {
                    bad = probe;
                    break;
                }
                good = probe;
            }
            while (good < u.content_end && next_boundary(t, good) < bad) {
                size_t mid = boundary_at_or_before(t, std::min(good + (bad - good) / 2, u.content_end));
                if (mid <= good) {
                    mid = next_boundary(t, good);
                }
                (fits(mid) ? good : bad) = mid;
            }
        }
        const bool last = good == u.content_end;
        out.push_back(unit{pos, good, last ? u.end : good, last ? u.after : cut::inside_word});
        costs.push_back(count(piece(good)));
        pos = good;
    }
}

std::optional<error> check_options(std::string_view text, const chunking_options &opts) {
    if (opts.max_tokens < 1 || opts.max_tokens > max_tokens_limit) {
        return error::invalid("max_chunk_size_tokens must be between 1 and " + std::to_string(max_tokens_limit) +
                                  "; it is " + std::to_string(opts.max_tokens),
                              "max_chunk_size_tokens");
    }
    if (opts.overlap_tokens > opts.max_tokens / 2) {
        return error::invalid("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens (" +
                                  std::to_string(opts.max_tokens / 2) + "); it is " +
                                  std::to_string(opts.overlap_tokens),
                              "chunk_overlap_tokens");
    }
    if (opts.max_document_bytes > max_document_limit || opts.max_chunks < 1) {
        return error::invalid("the chunker's limits are out of range (document bytes at most " +
                              std::to_string(max_document_limit) + ", at least one chunk)");
    }
    if (text.size() > opts.max_document_bytes) {
        return error{error_kind::payload_too_large,
                     "the document's text is " + std::to_string(text.size()) + " bytes; the limit is " +
                         std::to_string(opts.max_document_bytes),
                     "", "document_too_large"};
    }
    if (const size_t bad = first_invalid_utf8(text); bad != std::string_view::npos) {
        return error::invalid("the document's text is not valid UTF-8 (byte offset " + std::to_string(bad) + ")", "",
                              "invalid_utf8");
    }
    return std::nullopt;
}

// Where the chunk that starts at unit `s` ends (exclusive): as many units as fit, then, unless the
// text ends there, back to the best break whose chunk is still at least half full.
size_t choose_end(const std::vector<unit> &units, const std::vector<size_t> &prefix, size_t s, size_t max) {
    size_t e = s;
    while (e < units.size() && prefix[e + 1] - prefix[s] <= max) {
        ++e;
    }
    if (e == s) {
        return s + 1; // one character counted over the limit: it stands alone
    }
    if (e == units.size()) {
        return e;
    }
    for (const cut level : {cut::paragraph, cut::sentence, cut::word}) {
        for (size_t j = e; j > s && 2 * (prefix[j] - prefix[s]) >= max; --j) {
            if (units[j - 1].after >= level) {
                return j;
            }
        }
    }
    return e;
}

// Where the chunk after [s, e) starts: back from `e` by at most `overlap` tokens (and at most half
// of this chunk, so that a chunk cut short at a break still moves on), on a word boundary when
// one is there, and always after `s`.
size_t choose_next_start(const std::vector<unit> &units, const std::vector<size_t> &prefix, size_t s, size_t e,
                         size_t overlap) {
    const size_t budget = std::min(overlap, (prefix[e] - prefix[s]) / 2);
    size_t       j      = e;
    while (j > s + 1 && prefix[e] - prefix[j - 1] <= budget) {
        --j;
    }
    while (j < e && units[j - 1].after == cut::inside_word) {
        ++j;
    }
    return j;
}

} // namespace

size_t approximate_tokens(std::string_view text) {
    size_t tokens = 0;
    for (size_t i = 0; i < text.size();) {
        if (is_space(text[i])) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < text.size() && !is_space(text[j])) {
            ++j;
        }
        tokens += 1 + (j - i - 1) / long_word_increment;
        i = j;
    }
    return tokens;
}

result<std::vector<text_chunk>> chunk_text(std::string_view text, const chunking_options &opts) {
    if (auto err = check_options(text, opts)) {
        return *err;
    }
    const token_counter count = opts.count_tokens ? opts.count_tokens : token_counter(approximate_tokens);

    std::vector<unit>   units;
    std::vector<size_t> costs;
    for (const unit &u : split_units(text)) {
        const size_t c = count(text.substr(u.begin, u.end - u.begin));
        if (c <= opts.max_tokens) {
            units.push_back(u);
            costs.push_back(c);
        } else {
            cut_long_unit(text, u, opts.max_tokens, count, units, costs);
        }
    }
    std::vector<size_t> prefix(units.size() + 1, 0);
    for (size_t i = 0; i < units.size(); ++i) {
        prefix[i + 1] = prefix[i] + costs[i];
    }

    std::vector<text_chunk> chunks;
    for (size_t s = 0; s < units.size();) {
        if (chunks.size() == opts.max_chunks) {
            return error{error_kind::payload_too_large,
                         "the document makes more than " + std::to_string(opts.max_chunks) +
                             " chunks (the limit per document); split it or use larger chunks",
                         "", "too_many_chunks"};
        }
        const size_t e     = choose_end(units, prefix, s, opts.max_tokens);
        const size_t begin = units[s].begin;
        chunks.push_back(text_chunk{begin, prefix[e] - prefix[s],
                                    std::string(text.substr(begin, units[e - 1].content_end - begin))});
        if (e == units.size()) {
            break;
        }
        s = choose_next_start(units, prefix, s, e, opts.overlap_tokens);
    }
    return chunks;
}

} // namespace inferbox::retrieval

#include "retrieval/fts_query.h"

#include "common/utf8.h"

#include <algorithm>
#include <unordered_set>
#include <vector>

namespace inferbox::retrieval {

namespace {

// Whitespace and the C0 controls and DEL: term separators. Bytes >= 0x80 are parts of UTF-8
// sequences (the text is sanitized first) and belong to terms.
bool separates(unsigned char c) {
    return c <= 0x20 || c == 0x7F;
}

std::string ascii_lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
    return out;
}

} // namespace

result<std::string> fts_match_expression(std::string_view text, const fts_query_limits &limits) {
    if (text.size() > limits.max_bytes) {
        return error::invalid("the search query is " + std::to_string(text.size()) + " bytes; the limit is " +
                                  std::to_string(limits.max_bytes),
                              "query", "query_too_long");
    }
    const std::string clean = utf8_sanitize(text);

    std::vector<std::string_view>   terms;
    std::unordered_set<std::string> seen;
    for (size_t i = 0; i < clean.size();) {
        if (separates(static_cast<unsigned char>(clean[i]))) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < clean.size() && !separates(static_cast<unsigned char>(clean[j]))) {
            ++j;
        }
        const std::string_view term(clean.data() + i, j - i);
        if (seen.insert(ascii_lower(term)).second) {
            if (terms.size() == limits.max_terms) {
                return error::invalid("the search query has more than " + std::to_string(limits.max_terms) +
                                          " distinct terms (the limit)",
                                      "query", "query_too_long");
            }
            terms.push_back(term);
        }
        i = j;
    }

    std::string out;
    for (const auto term : terms) {
        if (!out.empty()) {
            out += " OR ";
        }
        out += '"';
        for (const char c : term) {
            out += c;
            if (c == '"') {
                out += '"'; // FTS5 strings escape a quote by doubling it, as SQL does
            }
        }
        out += '"';
    }
    return out;
}

} // namespace inferbox::retrieval

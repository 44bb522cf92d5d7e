#include "api/guided.h"

#include "common/utf8.h"

#include <algorithm>
#include <cstdio>
#include <set>

namespace inferbox {

namespace {

// Valid UTF-8 (checked by the caller) to code points.
std::u32string decode_utf8(std::string_view s) {
    std::u32string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        int        n = 0;
        char32_t   cp;
        if (c < 0x80) {
            cp = c;
        } else if (c < 0xE0) {
            cp = c & 0x1Fu;
            n  = 1;
        } else if (c < 0xF0) {
            cp = c & 0x0Fu;
            n  = 2;
        } else {
            cp = c & 0x07u;
            n  = 3;
        }
        ++i;
        for (int k = 0; k < n && i < s.size(); ++k, ++i) {
            cp = (cp << 6) | (static_cast<unsigned char>(s[i]) & 0x3Fu);
        }
        out.push_back(cp);
    }
    return out;
}

// A GBNF escape for one code point: \xHH, \uHHHH or \UHHHHHHHH (the forms llama.cpp parses).
std::string hex_escape(char32_t c) {
    char buf[16];
    if (c < 0x100) {
        std::snprintf(buf, sizeof(buf), "\\x%02X", static_cast<unsigned>(c));
    } else if (c < 0x10000) {
        std::snprintf(buf, sizeof(buf), "\\u%04X", static_cast<unsigned>(c));
    } else {
        std::snprintf(buf, sizeof(buf), "\\U%08X", static_cast<unsigned>(c));
    }
    return buf;
}

std::string literal_of(const std::u32string &cps) {
    std::string out = "\"";
    for (char32_t c : cps) {
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
            out += static_cast<char>(c);
        } else {
            out += hex_escape(c);
        }
    }
    return out + "\"";
}

bool is_alnum_ascii(char32_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

struct cp_range {
    char32_t lo;
    char32_t hi;
};

// A GBNF character class over the union of `ranges`; endpoints other than ASCII letters and
// digits are escaped, so '^', '-', ']' and '\' never need context to be read right.
std::string gbnf_class(std::vector<cp_range> ranges, bool negated) {
    std::sort(ranges.begin(), ranges.end(), [](const cp_range &a, const cp_range &b) { return a.lo < b.lo; });
    std::vector<cp_range> merged;
    for (const auto &r : ranges) {
        if (!merged.empty() && r.lo <= merged.back().hi + 1) {
            merged.back().hi = std::max(merged.back().hi, r.hi);
        } else {
            merged.push_back(r);
        }
    }
    const auto one = [](char32_t c) {
        return is_alnum_ascii(c) ? std::string(1, static_cast<char>(c)) : hex_escape(c);
    };
    std::string out = negated ? "[^" : "[";
    for (const auto &r : merged) {
        out += one(r.lo);
        if (r.hi != r.lo) {
            out += "-" + one(r.hi);
        }
    }
    return out + "]";
}

// The shorthand classes, ASCII semantics.
enum class shorthand { digit, word, space };

std::vector<cp_range> shorthand_ranges(shorthand s) {
    switch (s) {
    case shorthand::digit:
        return {{'0', '9'}};
    case shorthand::word:
        return {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
    case shorthand::space:
        break;
    }
    return {{'\t', '\r'}, {' ', ' '}};
}

std::string dot_class() {
    return gbnf_class({{'\n', '\n'}, {'\r', '\r'}, {0x2028, 0x2029}}, true);
}

// One piece of a sequence: a GBNF primary (a one-character literal, a class or a parenthesized
// group) and, for an unquantified literal, its code point so neighbours merge into one string.
struct item {
    std::string text;
    bool        literal    = false;
    char32_t    cp         = 0;
    bool        quantified = false;
    int64_t     weight     = 1; // product of the nested repetition counts inside
};

// Recursive descent over code points. Depth is bounded by limits.max_nesting, so a hostile
// pattern cannot exhaust the stack; every loop consumes input.
class regex_parser {
  public:
    regex_parser(const std::u32string &pattern, const guided_limits &limits)
        : p_(pattern.begin(), pattern.end()), limits_(limits) {}

    result<std::string> run() {
        size_t end = p_.size();
        if (!p_.empty() && p_[0] == '^') {
            pos_ = 1;
        }
        if (end > pos_ && p_[end - 1] == '$') {
            size_t n_backslashes = 0;
            for (size_t k = end - 1; k > pos_ && p_[k - 1] == '\\'; --k) {
                ++n_backslashes;
            }
            if (n_backslashes % 2 == 0) {
                --end;
            }
        }
        end_ = end;
        std::string out;
        int64_t     weight = 1;
        if (!alternation(0, out, weight)) {
            return error::invalid(err_);
        }
        if (pos_ < end_) { // only a ')' without its '(' stops the top level early
            return fail_at("unbalanced ')'");
        }
        std::string g = "root ::= " + out + "\n";
        if (g.size() > limits_.max_grammar_bytes) {
            return error::invalid("the pattern expands to a grammar of " + std::to_string(g.size()) +
                                  " bytes; the limit is " + std::to_string(limits_.max_grammar_bytes));
        }
        return g;
    }

  private:
    error fail_at(const std::string &what) {
        err_ = what + " at offset " + std::to_string(pos_);
        return error::invalid(err_);
    }
    bool fail(const std::string &what) {
        fail_at(what);
        return false;
    }
    bool     at_end() const { return pos_ >= end_; }
    char32_t peek(size_t ahead = 0) const { return pos_ + ahead < end_ ? p_[pos_ + ahead] : U'\0'; }

    bool alternation(int depth, std::string &out, int64_t &weight) {
        std::vector<std::string> alts;
        for (;;) {
            std::string seq;
            if (!sequence(depth, seq, weight)) {
                return false;
            }
            alts.push_back(std::move(seq));
            if (!at_end() && peek() == '|') {
                ++pos_;
                continue;
            }
            break;
        }
        out.clear();
        for (size_t i = 0; i < alts.size(); ++i) {
            out += (i == 0 ? "" : " | ") + alts[i];
        }
        return true;
    }

    bool sequence(int depth, std::string &out, int64_t &weight) {
        std::vector<item> items;
        while (!at_end() && peek() != '|' && peek() != ')') {
            int32_t    min = 0, max = 0; // max -1 = unbounded
            size_t     q_len = 0;
            const auto q     = quantifier_at(pos_, min, max, q_len);
            if (q == quant::bad) {
                return false;
            }
            if (q == quant::found) {
                if (items.empty()) {
                    return fail("nothing to repeat");
                }
                item &last = items.back();
                if (last.quantified) {
                    return fail("multiple repeat");
                }
                pos_ += q_len;
                if (!at_end() && peek() == '?') {
                    ++pos_; // lazy: the same strings match
                } else if (!at_end() && peek() == '+') {
                    return fail("possessive quantifiers are not supported");
                }
                const int64_t count = max < 0 ? std::max(min, 1) : std::max(max, 1);
                last.weight *= count;
                if (last.weight > limits_.max_repetition) {
                    return fail("nested repetitions multiply to " + std::to_string(last.weight) +
                                ", over the limit of " + std::to_string(limits_.max_repetition));
                }
                last.quantified = true;
                last.literal    = false;
                if (max == 0) {
                    last.text = "\"\"";
                } else if (min == 0 && max < 0) {
                    last.text += "*";
                } else if (min == 1 && max < 0) {
                    last.text += "+";
                } else if (min == 0 && max == 1) {
                    last.text += "?";
                } else if (min == max) {
                    last.text += min == 1 ? "" : "{" + std::to_string(min) + "}";
                } else {
                    last.text += "{" + std::to_string(min) + "," + (max < 0 ? "" : std::to_string(max)) + "}";
                }
                continue;
            }
            item it;
            if (!atom(depth, it)) {
                return false;
            }
            items.push_back(std::move(it));
        }
        out.clear();
        std::u32string run;
        const auto     flush = [&] {
            if (!run.empty()) {
                out += (out.empty() ? "" : " ") + literal_of(run);
                run.clear();
            }
        };
        for (const auto &it : items) {
            weight = std::max(weight, it.weight);
            if (it.literal) {
                run.push_back(it.cp);
                continue;
            }
            flush();
            out += (out.empty() ? "" : " ") + it.text;
        }
        flush();
        if (out.empty()) {
            out = "\"\"";
        }
        return true;
    }

    // A quantifier starting at `at`: * + ? {m} {m,} {m,n} {,n}. A '{' that does not open one is
    // a literal (as in Python). Counts over the limit are reported here.
    enum class quant { none, found, bad };
    quant quantifier_at(size_t at, int32_t &min, int32_t &max, size_t &len) {
        if (at >= end_) {
            return quant::none;
        }
        const char32_t c = p_[at];
        if (c == '*' || c == '+' || c == '?') {
            min = c == '+' ? 1 : 0;
            max = c == '?' ? 1 : -1;
            len = 1;
            return quant::found;
        }
        if (c != '{') {
            return quant::none;
        }
        size_t     i        = at + 1;
        const auto read_int = [&](int64_t &v) {
            const size_t start = i;
            v                  = 0;
            while (i < end_ && p_[i] >= '0' && p_[i] <= '9') {
                v = std::min<int64_t>(v * 10 + (p_[i] - '0'), int64_t{1} << 40);
                ++i;
            }
            return i > start;
        };
        int64_t    lo = 0, hi = -1;
        const bool has_lo = read_int(lo);
        bool       has_hi = false;
        if (i < end_ && p_[i] == ',') {
            ++i;
            has_hi = read_int(hi);
            if (!has_hi) {
                hi = -1;
            }
        } else {
            hi     = lo;
            has_hi = has_lo;
        }
        if (i >= end_ || p_[i] != '}' || (!has_lo && !has_hi)) {
            return quant::none;
        }
        for (int64_t v : {lo, hi}) {
            if (v > limits_.max_repetition) {
                pos_ = at;
                fail("repetition count " + std::to_string(v) + " exceeds the limit of " +
                     std::to_string(limits_.max_repetition));
                return quant::bad;
            }
        }
        if (hi >= 0 && lo > hi) {
            pos_ = at;
            fail("repetition {" + std::to_string(lo) + "," + std::to_string(hi) + "} has min > max");
            return quant::bad;
        }
        min = static_cast<int32_t>(lo);
        max = static_cast<int32_t>(hi);
        len = i + 1 - at;
        return quant::found;
    }

    bool atom(int depth, item &it) {
        const char32_t c = peek();
        if (c == '(') {
            return group(depth, it);
        }
        if (c == '[') {
            return klass(depth, it);
        }
        if (c == '.') {
            ++pos_;
            it.text = dot_class();
            return true;
        }
        if (c == '^' || c == '$') {
            return fail("anchors (^, $) are supported only at the start and the end of the pattern");
        }
        if (c == '\\') {
            return escape(it);
        }
        return literal(c, it);
    }

    bool literal(char32_t c, item &it) {
        if (c == 0) {
            return fail("NUL characters cannot be generated");
        }
        ++pos_;
        it.literal = true;
        it.cp      = c;
        it.text    = literal_of(std::u32string(1, c));
        return true;
    }

    bool group(int depth, item &it) {
        if (depth + 1 > limits_.max_nesting) {
            return fail("groups nest deeper than " + std::to_string(limits_.max_nesting) + " levels");
        }
        const size_t open = pos_;
        ++pos_;
        if (peek() == '?') {
            const char32_t k = peek(1);
            if (k == ':') {
                pos_ += 2;
            } else if ((k == '<' && peek(2) != '=' && peek(2) != '!') || (k == 'P' && peek(2) == '<')) {
                pos_ += k == 'P' ? 3 : 2;
                size_t n = 0;
                while (!at_end() && peek() != '>') {
                    if (!is_alnum_ascii(peek()) && peek() != '_') {
                        return fail("invalid group name");
                    }
                    ++pos_;
                    ++n;
                }
                if (at_end() || n == 0) {
                    return fail("unterminated or empty group name");
                }
                ++pos_;
            } else if (k == '=' || k == '!' || k == '<') {
                return fail("lookaround assertions are not supported");
            } else if (k == 'P' && peek(2) == '=') {
                return fail("backreferences are not supported");
            } else if (k == '>') {
                return fail("atomic groups are not supported");
            } else {
                return fail("this group syntax (inline flags, comments, conditionals) is not supported");
            }
        }
        std::string inner;
        int64_t     weight = 1;
        if (!alternation(depth + 1, inner, weight)) {
            return false;
        }
        if (at_end() || peek() != ')') {
            pos_ = open;
            return fail("unterminated group '('");
        }
        ++pos_;
        it.text   = "(" + inner + ")";
        it.weight = weight;
        return true;
    }

    // Reads \xHH or \uHHHH after the letter at pos_; pos_ ends after the digits.
    bool hex_digits(int n, char32_t &out) {
        out = 0;
        for (int k = 1; k <= n; ++k) {
            const char32_t h = peek(static_cast<size_t>(k));
            int            v;
            if (h >= '0' && h <= '9') {
                v = static_cast<int>(h - '0');
            } else if (h >= 'a' && h <= 'f') {
                v = static_cast<int>(h - 'a' + 10);
            } else if (h >= 'A' && h <= 'F') {
                v = static_cast<int>(h - 'A' + 10);
            } else {
                return fail(std::string("expected ") + std::to_string(n) + " hex digits in escape");
            }
            out = out * 16 + static_cast<char32_t>(v);
        }
        pos_ += static_cast<size_t>(n) + 1;
        if (out >= 0xD800 && out <= 0xDFFF) {
            return fail("escape names a surrogate code point");
        }
        return true;
    }

    // An escape after '\' (pos_ at the backslash). Sets exactly one of: a code point, or a
    // shorthand (with `negated`).
    bool escape_code(bool in_class, char32_t &cp, bool &is_short, shorthand &sh, bool &negated) {
        is_short = false;
        negated  = false;
        ++pos_;
        if (at_end()) {
            return fail("trailing backslash");
        }
        const char32_t c = peek();
        switch (c) {
        case 'd':
        case 'D':
        case 'w':
        case 'W':
        case 's':
        case 'S':
            is_short = true;
            sh       = (c == 'd' || c == 'D')   ? shorthand::digit
                       : (c == 'w' || c == 'W') ? shorthand::word
                                                : shorthand::space;
            negated  = c == 'D' || c == 'W' || c == 'S';
            ++pos_;
            return true;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'v':
            cp = '\v';
            break;
        case 'x':
            return hex_digits(2, cp) && (cp != 0 || fail("NUL characters cannot be generated"));
        case 'u':
            return hex_digits(4, cp) && (cp != 0 || fail("NUL characters cannot be generated"));
        case '0':
            return fail("NUL characters cannot be generated");
        case 'b':
            if (in_class) {
                cp = '\b';
                break;
            }
            return fail("word boundaries (\\b) are not supported");
        case 'B':
            return fail("word boundaries (\\B) are not supported");
        case 'A':
        case 'Z':
        case 'z':
        case 'G':
            return fail("anchors other than a leading ^ and a trailing $ are not supported");
        case 'k':
            return fail("backreferences are not supported");
        case 'p':
        case 'P':
            return fail("Unicode property classes (\\p, \\P) are not supported");
        default:
            if (c >= '1' && c <= '9') {
                return fail("backreferences are not supported");
            }
            if (is_alnum_ascii(c)) {
                return fail(std::string("unknown escape \\") + static_cast<char>(c));
            }
            cp = c; // escaped punctuation, space or any non-ASCII character: itself
            break;
        }
        ++pos_;
        return true;
    }

    bool escape(item &it) {
        char32_t  cp = 0;
        bool      is_short, negated;
        shorthand sh = shorthand::digit;
        if (!escape_code(false, cp, is_short, sh, negated)) {
            return false;
        }
        if (is_short) {
            it.text = gbnf_class(shorthand_ranges(sh), negated);
            return true;
        }
        it.literal = true;
        it.cp      = cp;
        it.text    = literal_of(std::u32string(1, cp));
        return true;
    }

    // One class member at pos_: a code point, or a shorthand.
    bool class_member(char32_t &cp, bool &is_short, shorthand &sh, bool &negated) {
        if (peek() == '\\') {
            return escape_code(true, cp, is_short, sh, negated);
        }
        is_short = false;
        cp       = peek();
        if (cp == 0) {
            return fail("NUL characters cannot be generated");
        }
        ++pos_;
        return true;
    }

    bool klass(int depth, item &it) {
        const size_t open = pos_;
        ++pos_;
        bool negated_class = false;
        if (peek() == '^' && !at_end()) {
            negated_class = true;
            ++pos_;
        }
        std::vector<cp_range>  ranges;
        std::vector<shorthand> negated_shorts;
        bool                   first = true;
        while (!at_end() && (peek() != ']' || first)) {
            first       = false;
            char32_t  a = 0;
            bool      a_short, a_neg;
            shorthand a_sh = shorthand::digit;
            if (!class_member(a, a_short, a_sh, a_neg)) {
                return false;
            }
            if (!at_end() && peek() == '-' && pos_ + 1 < end_ && p_[pos_ + 1] != ']') {
                if (a_short) {
                    return fail("a class range cannot start at a shorthand class");
                }
                ++pos_;
                char32_t  b = 0;
                bool      b_short, b_neg;
                shorthand b_sh = shorthand::digit;
                if (!class_member(b, b_short, b_sh, b_neg)) {
                    return false;
                }
                if (b_short) {
                    return fail("a class range cannot end at a shorthand class");
                }
                if (b < a) {
                    return fail("class range out of order");
                }
                ranges.push_back({a, b});
                continue;
            }
            if (a_short) {
                if (a_neg) {
                    negated_shorts.push_back(a_sh);
                } else {
                    const auto r = shorthand_ranges(a_sh);
                    ranges.insert(ranges.end(), r.begin(), r.end());
                }
            } else {
                ranges.push_back({a, a});
            }
        }
        if (at_end()) {
            pos_ = open;
            return fail("unterminated character class '['");
        }
        ++pos_; // ']'
        if (negated_class) {
            if (!negated_shorts.empty()) {
                return fail("\\D, \\W or \\S inside a negated class is not supported");
            }
            it.text = gbnf_class(ranges, true);
            return true;
        }
        if (negated_shorts.empty()) {
            it.text = gbnf_class(ranges, false);
            return true;
        }
        // [a\D]: the members and each negated shorthand as alternatives, in parentheses that count
        // as one level of nesting.
        if (depth + 1 > limits_.max_nesting) {
            return fail("groups nest deeper than " + std::to_string(limits_.max_nesting) + " levels");
        }
        std::string alts;
        if (!ranges.empty()) {
            alts = gbnf_class(ranges, false);
        }
        for (const auto s : negated_shorts) {
            alts += (alts.empty() ? "" : " | ") + gbnf_class(shorthand_ranges(s), true);
        }
        it.text = "(" + alts + ")";
        return true;
    }

    std::vector<char32_t> p_;
    const guided_limits  &limits_;
    size_t                pos_ = 0;
    size_t                end_ = 0;
    std::string           err_;
};

} // namespace

std::string gbnf_literal(std::string_view text) {
    return literal_of(decode_utf8(text));
}

result<std::string> regex_to_gbnf(std::string_view pattern, const guided_limits &limits) {
    if (pattern.size() > limits.max_regex_bytes) {
        return error::invalid("the pattern is " + std::to_string(pattern.size()) + " bytes; the limit is " +
                              std::to_string(limits.max_regex_bytes));
    }
    if (!utf8_valid(pattern)) {
        return error::invalid("the pattern is not valid UTF-8");
    }
    regex_parser parser(decode_utf8(pattern), limits);
    return parser.run();
}

result<std::string> choice_to_gbnf(const std::vector<std::string> &choices, const guided_limits &limits) {
    if (choices.empty()) {
        return error::invalid("at least one choice is required");
    }
    if (choices.size() > limits.max_choices) {
        return error::invalid(std::to_string(choices.size()) + " choices; the limit is " +
                              std::to_string(limits.max_choices));
    }
    std::string g = "root ::= ";
    for (size_t i = 0; i < choices.size(); ++i) {
        const auto &c = choices[i];
        if (c.size() > limits.max_choice_bytes) {
            return error::invalid("choice " + std::to_string(i) + " is " + std::to_string(c.size()) +
                                  " bytes; the limit is " + std::to_string(limits.max_choice_bytes));
        }
        if (!utf8_valid(c)) {
            return error::invalid("choice " + std::to_string(i) + " is not valid UTF-8");
        }
        if (c.find('\0') != std::string::npos) {
            return error::invalid("choice " + std::to_string(i) + " holds a NUL character, which cannot be generated");
        }
        g += (i == 0 ? "" : " | ") + gbnf_literal(c);
    }
    g += "\n";
    if (g.size() > limits.max_grammar_bytes) {
        return error::invalid("the choices make a grammar of " + std::to_string(g.size()) + " bytes; the limit is " +
                              std::to_string(limits.max_grammar_bytes));
    }
    return g;
}

std::string gbnf_shape_error(std::string_view g, const guided_limits &limits) {
    if (g.size() > limits.max_grammar_bytes) {
        return "the grammar is " + std::to_string(g.size()) + " bytes; the limit is " +
               std::to_string(limits.max_grammar_bytes);
    }
    if (const auto nul = g.find('\0'); nul != std::string_view::npos) {
        return "the grammar holds a NUL byte at offset " + std::to_string(nul);
    }
    if (!utf8_valid(g)) {
        return "the grammar is not valid UTF-8";
    }
    const auto is_name = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    };
    std::set<std::string_view> defined;
    std::string_view           last_name;
    int32_t                    depth = 0;
    for (size_t i = 0; i < g.size();) {
        const char c = g[i];
        if (c == '#') {
            while (i < g.size() && g[i] != '\n' && g[i] != '\r') {
                ++i;
            }
        } else if (c == '"' || c == '[' || c == '<') {
            const char close = c == '"' ? '"' : c == '[' ? ']' : '>';
            size_t     j     = i + 1;
            while (j < g.size() && g[j] != close) {
                j += (g[j] == '\\' && c != '<') ? 2 : 1;
            }
            if (j >= g.size()) {
                return std::string(c == '"'   ? "a string"
                                   : c == '[' ? "a character class"
                                              : "a token reference") +
                       " opened at offset " + std::to_string(i) + " is never closed";
            }
            i         = j + 1;
            last_name = {};
        } else if (c == '(') {
            if (++depth > limits.max_nesting) {
                return "parentheses nest deeper than " + std::to_string(limits.max_nesting) + " levels at offset " +
                       std::to_string(i);
            }
            ++i;
            last_name = {};
        } else if (c == ')') {
            if (--depth < 0) {
                return "unbalanced ')' at offset " + std::to_string(i);
            }
            ++i;
            last_name = {};
        } else if (g.substr(i, 3) == "::=") {
            if (!last_name.empty()) {
                defined.insert(last_name);
            }
            i += 3;
            last_name = {};
        } else if (is_name(c)) {
            const size_t start = i;
            while (i < g.size() && is_name(g[i])) {
                ++i;
            }
            last_name = g.substr(start, i - start);
        } else {
            if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
                last_name = {};
            }
            ++i;
        }
    }
    if (depth != 0) {
        return "a '(' is never closed";
    }
    if (defined.count("root") == 0) {
        return "the grammar has no root rule (root ::= ...)";
    }
    return {};
}

} // namespace inferbox

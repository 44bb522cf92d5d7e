#include "files/multipart.h"

#include <algorithm>
#include <utility>

namespace inferbox {

namespace {

error bad(std::string message) {
    return error::invalid("multipart/form-data body: " + std::move(message), "", "invalid_multipart");
}

error too_large(std::string message) {
    return error{error_kind::payload_too_large, "multipart/form-data body: " + std::move(message), "",
                 "invalid_multipart"};
}

bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// RFC 2046's bchars (the characters of a boundary).
bool is_bchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return std::string_view("'()+_,-./:=? ").find(c) != std::string_view::npos;
}

// A header value's byte: HTAB, visible ASCII, space, or obs-text (bytes >= 0x80).
bool is_field_byte(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7F);
}

void skip_ows(std::string_view s, size_t &i) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) {
        ++i;
    }
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto &c : out) {
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
    }
    return out;
}

std::string_view token_at(std::string_view s, size_t &i) {
    const size_t start = i;
    while (i < s.size() && is_tchar(s[i])) {
        ++i;
    }
    return s.substr(start, i - start);
}

// A quoted-string at s[i] (the opening quote), unescaped; nullopt when malformed.
std::optional<std::string> quoted_at(std::string_view s, size_t &i) {
    std::string out;
    for (++i; i < s.size(); ++i) {
        char c = s[i];
        if (c == '"') {
            ++i;
            return out;
        }
        if (c == '\\') {
            if (++i == s.size()) {
                return std::nullopt;
            }
            c = s[i];
        }
        if (!is_field_byte(c)) {
            return std::nullopt;
        }
        out += c;
    }
    return std::nullopt; // no closing quote
}

// Whether every CR and LF of a header block is part of a CRLF, and it holds no NUL.
bool line_breaks_are_crlf(std::string_view block) {
    for (size_t i = 0; i < block.size(); ++i) {
        const char c = block[i];
        if (c == '\0' || (c == '\r' && (i + 1 == block.size() || block[i + 1] != '\n')) ||
            (c == '\n' && (i == 0 || block[i - 1] != '\r'))) {
            return false;
        }
    }
    return true;
}

using param_list = std::vector<std::pair<std::string, std::string>>;

// `; name=value` parameters after a header value's first token (names lower-cased). `what` names
// the header in errors. A name given twice is an error: which one counts would be a guess.
result<param_list> parse_params(std::string_view s, size_t i, const std::string &what) {
    param_list out;
    for (;;) {
        skip_ows(s, i);
        if (i == s.size()) {
            return out;
        }
        if (s[i] != ';') {
            return bad(what + " has '" + std::string(1, s[i]) + "' where ';' or the end was expected");
        }
        ++i;
        skip_ows(s, i);
        if (i == s.size()) {
            return out; // a trailing ';'
        }
        const auto name = lower(token_at(s, i));
        if (name.empty() || i == s.size() || s[i] != '=') {
            return bad(what + " has a malformed parameter (expected name=value)");
        }
        ++i;
        std::string value;
        if (i < s.size() && s[i] == '"') {
            auto q = quoted_at(s, i);
            if (!q) {
                return bad(what + "'s parameter '" + name + "' has a malformed quoted string");
            }
            value = std::move(*q);
        } else {
            value = std::string(token_at(s, i));
            if (value.empty()) {
                return bad(what + "'s parameter '" + name + "' has no value");
            }
        }
        if (std::any_of(out.begin(), out.end(), [&](const auto &p) { return p.first == name; })) {
            return bad(what + " has the parameter '" + name + "' twice");
        }
        out.emplace_back(name, std::move(value));
    }
}

const std::string *find_param(const param_list &params, std::string_view name) {
    for (const auto &p : params) {
        if (p.first == name) {
            return &p.second;
        }
    }
    return nullptr;
}

// Reads one part's header block (lines, each ending in CRLF, without the blank line) into `part`.
std::optional<error> read_part_headers(std::string_view block, size_t index, multipart_part &part) {
    const std::string where        = "part " + std::to_string(index + 1);
    bool              disposition  = false;
    bool              content_type = false;
    size_t            pos          = 0;
    while (pos < block.size()) {
        const auto eol  = block.find("\r\n", pos);
        const auto line = block.substr(pos, eol - pos); // the block ends in CRLF: eol is found
        pos             = eol + 2;
        if (line.front() == ' ' || line.front() == '\t') {
            return bad(where + " folds a header line (obsolete line folding is not accepted)");
        }
        size_t     i    = 0;
        const auto name = lower(token_at(line, i));
        if (name.empty() || i == line.size() || line[i] != ':') {
            return bad(where + " has a malformed header line (expected Name: value)");
        }
        ++i;
        if (!std::all_of(line.begin() + static_cast<std::ptrdiff_t>(i), line.end(), is_field_byte)) {
            return bad(where + "'s header '" + name + "' holds a control character");
        }
        skip_ows(line, i);
        auto value = line.substr(i);
        while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
            value.remove_suffix(1);
        }
        if (name == "content-disposition") {
            if (disposition) {
                return bad(where + " has two Content-Disposition headers");
            }
            disposition     = true;
            size_t     j    = 0;
            const auto type = lower(token_at(value, j));
            if (type != "form-data") {
                return bad(where + "'s Content-Disposition is '" + type + "', not form-data");
            }
            auto params = parse_params(value, j, where + "'s Content-Disposition");
            if (!params) {
                return params.err();
            }
            const auto *n = find_param(*params, "name");
            if (n == nullptr || n->empty()) {
                return bad(where + "'s Content-Disposition has no name");
            }
            part.name = *n;
            if (const auto *f = find_param(*params, "filename")) {
                part.filename = *f;
            }
        } else if (name == "content-type") {
            if (content_type) {
                return bad(where + " has two Content-Type headers");
            }
            content_type      = true;
            part.content_type = std::string(value);
        } else if (name == "content-transfer-encoding") {
            const auto enc = lower(value);
            if (enc != "7bit" && enc != "8bit" && enc != "binary") {
                return bad(where + " has Content-Transfer-Encoding '" + std::string(value.substr(0, 40)) +
                           "' (only 7bit, 8bit and binary are accepted)");
            }
        }
        // Other headers carry nothing form-data needs; they are ignored.
    }
    if (!disposition) {
        return bad(where + " has no Content-Disposition header");
    }
    return std::nullopt;
}

} // namespace

result<std::string> multipart_boundary(std::string_view content_type) {
    size_t     i    = 0;
    const auto type = lower(token_at(content_type, i));
    if (i == content_type.size() || content_type[i] != '/') {
        return bad("the Content-Type is '" + std::string(content_type.substr(0, 100)) + "', not multipart/form-data");
    }
    ++i;
    const auto subtype = lower(token_at(content_type, i));
    if (type != "multipart" || subtype != "form-data") {
        return bad("the Content-Type is '" + type + "/" + subtype + "', not multipart/form-data");
    }
    auto params = parse_params(content_type, i, "the Content-Type");
    if (!params) {
        return params.err();
    }
    const auto *b = find_param(*params, "boundary");
    if (b == nullptr) {
        return bad("the Content-Type has no boundary parameter");
    }
    if (b->empty() || b->size() > 70 || !std::all_of(b->begin(), b->end(), is_bchar) || b->back() == ' ') {
        return bad("the boundary must be 1 to 70 letters, digits or '()+_,-./:=? (not ending in a space)");
    }
    return *b;
}

result<std::vector<multipart_part>> parse_multipart(std::string_view content_type, std::string_view body,
                                                    const multipart_limits &limits) {
    if (body.size() > limits.max_body_bytes) {
        return too_large("the body is " + std::to_string(body.size()) + " bytes; the limit is " +
                         std::to_string(limits.max_body_bytes));
    }
    auto boundary = multipart_boundary(content_type);
    if (!boundary) {
        return boundary.err();
    }
    const std::string first = "--" + *boundary;
    const std::string delim = "\r\n--" + *boundary;
    if (body.substr(0, first.size()) != first) {
        return bad("the body does not start with its boundary line (--" + *boundary + ")");
    }
    std::vector<multipart_part> parts;
    size_t                      pos = first.size();
    for (;;) {
        // Just after a delimiter: "--" closes the body, else optional padding and CRLF.
        if (body.substr(pos, 2) == "--") {
            if (parts.empty()) {
                return bad("the body has no parts");
            }
            return parts;
        }
        skip_ows(body, pos);
        if (body.substr(pos, 2) != "\r\n") {
            return bad(pos >= body.size() ? "the body ends before its closing boundary"
                                          : "a boundary line is followed by neither CRLF nor --");
        }
        pos += 2;
        if (parts.size() == limits.max_parts) {
            return too_large("more than " + std::to_string(limits.max_parts) + " parts (the limit)");
        }
        const std::string where = "part " + std::to_string(parts.size() + 1);
        // The header block, with its blank line, within max_header_bytes.
        size_t block_end = pos; // one past the block's last CRLF
        if (body.substr(pos, 2) != "\r\n") {
            const auto window = body.substr(pos, limits.max_header_bytes);
            const auto blank  = window.find("\r\n\r\n");
            if (blank == std::string_view::npos) {
                return window.size() == limits.max_header_bytes
                           ? too_large(where + "'s headers exceed " + std::to_string(limits.max_header_bytes) +
                                       " bytes (the limit)")
                           : bad("the body ends inside " + where + "'s headers");
            }
            block_end = pos + blank + 2;
        }
        const auto block = body.substr(pos, block_end - pos);
        if (!line_breaks_are_crlf(block)) {
            return bad(where + "'s headers hold a bare CR, LF or NUL");
        }
        multipart_part part;
        if (auto err = read_part_headers(block, parts.size(), part)) {
            return *err;
        }
        pos             = block_end + 2;
        const auto next = body.find(delim, pos);
        if (next == std::string_view::npos) {
            return bad("the body ends inside " + where + " (no boundary after its data)");
        }
        part.data = body.substr(pos, next - pos);
        parts.push_back(std::move(part));
        pos = next + delim.size();
    }
}

} // namespace inferbox

#include "files/extract.h"

#include "common/utf8.h"

#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

namespace inferbox {

namespace {

std::string ascii_lower(std::string_view s) {
    std::string out(s);
    for (auto &c : out) {
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
    }
    return out;
}

bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

error too_much_text(size_t max_bytes) {
    return error{error_kind::payload_too_large,
                 "the file's text is more than " + std::to_string(max_bytes) + " bytes (the limit)", "file",
                 "text_too_large"};
}

void append_utf8(std::string &out, uint32_t cp) {
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        cp = 0xFFFD;
    }
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

struct named_entity {
    const char *name;
    uint32_t    cp;
};

// The named character references documents use most; others stay as written.
constexpr std::array<named_entity, 33> named_entities = {{
    {"amp", '&'},      {"lt", '<'},       {"gt", '>'},        {"quot", '"'},      {"apos", '\''},    {"nbsp", 0xA0},
    {"copy", 0xA9},    {"reg", 0xAE},     {"trade", 0x2122},  {"hellip", 0x2026}, {"mdash", 0x2014}, {"ndash", 0x2013},
    {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C},  {"rdquo", 0x201D},  {"laquo", 0xAB},   {"raquo", 0xBB},
    {"bull", 0x2022},  {"middot", 0xB7},  {"deg", 0xB0},      {"euro", 0x20AC},   {"pound", 0xA3},   {"yen", 0xA5},
    {"cent", 0xA2},    {"sect", 0xA7},    {"para", 0xB6},     {"times", 0xD7},    {"divide", 0xF7},  {"plusmn", 0xB1},
    {"ensp", 0x2002},  {"emsp", 0x2003},  {"thinsp", 0x2009},
}};

// A character reference at html[i] ('&'): its code point and length, or nullopt (then the '&' is
// text). Bounded: at most 8 digits or a 10-letter name before the ';'.
std::optional<std::pair<uint32_t, size_t>> char_ref(std::string_view html, size_t i) {
    size_t j = i + 1;
    if (j < html.size() && html[j] == '#') {
        ++j;
        const bool hex = j < html.size() && (html[j] == 'x' || html[j] == 'X');
        j += hex ? 1 : 0;
        const size_t d0 = j;
        uint32_t     cp = 0;
        while (j < html.size() && j - d0 < 8) {
            const int v = hex ? hex_value(html[j]) : (is_digit(html[j]) ? html[j] - '0' : -1);
            if (v < 0) {
                break;
            }
            cp = cp * (hex ? 16 : 10) + static_cast<uint32_t>(v);
            ++j;
        }
        if (j == d0 || j >= html.size() || html[j] != ';') {
            return std::nullopt;
        }
        return std::make_pair(cp, j + 1 - i);
    }
    const size_t n0 = j;
    while (j < html.size() && j - n0 < 10 && (is_alpha(html[j]) || is_digit(html[j]))) {
        ++j;
    }
    if (j == n0 || j >= html.size() || html[j] != ';') {
        return std::nullopt;
    }
    const auto name = html.substr(n0, j - n0);
    for (const auto &e : named_entities) {
        if (name == e.name) {
            return std::make_pair(e.cp, j + 1 - i);
        }
    }
    return std::nullopt;
}

// Elements whose end (or start) ends a line of text.
bool is_block(const std::string &tag) {
    static constexpr std::array<const char *, 34> blocks = {
        "address", "article",  "aside",      "blockquote", "br",     "caption", "dd",   "div", "dl",
        "dt",      "fieldset", "figcaption", "figure",     "footer", "form",    "h1",   "h2",  "h3",
        "h4",      "h5",       "h6",         "header",     "hr",     "li",      "main", "nav", "ol",
        "p",       "pre",      "section",    "table",      "title",  "tr",      "ul"};
    return std::any_of(blocks.begin(), blocks.end(), [&](const char *b) { return tag == b; });
}

// Elements whose content is not text a reader sees.
bool is_hidden(const std::string &tag) {
    return tag == "script" || tag == "style" || tag == "noscript" || tag == "template" || tag == "svg";
}

// Builds the text: whitespace runs collapse to one space, line ends collapse to at most one blank
// line, and the size is checked as it grows.
class text_builder {
  public:
    explicit text_builder(size_t max_bytes) : max_(max_bytes) {}
    void space() { space_ = !out_.empty() && out_.back() != '\n'; }
    void line_end() {
        space_ = false;
        if (out_.empty() || (out_.size() >= 2 && out_.compare(out_.size() - 2, 2, "\n\n") == 0)) {
            return;
        }
        out_ += '\n';
    }
    bool add(std::string_view s) {
        if (space_) {
            out_ += ' ';
            space_ = false;
        }
        out_.append(s);
        return out_.size() <= max_;
    }
    std::string finish() {
        while (!out_.empty() && is_space(out_.back())) {
            out_.pop_back();
        }
        return std::move(out_);
    }

  private:
    std::string out_;
    size_t      max_;
    bool        space_ = false;
};

// The end of a tag that starts at html[i] ('<'): one past its '>', quoted attribute values
// (a quote right after '=') skipped; html.size() when it never closes.
size_t tag_end(std::string_view html, size_t i) {
    char quote = 0;
    char last  = 0; // the last non-space byte outside quotes
    for (size_t j = i + 1; j < html.size(); ++j) {
        const char c = html[j];
        if (quote != 0) {
            if (c == quote) {
                quote = 0;
            }
        } else if ((c == '"' || c == '\'') && last == '=') {
            quote = c;
        } else if (c == '>') {
            return j + 1;
        }
        if (!is_space(c)) {
            last = c;
        }
    }
    return html.size();
}

// Where the content of a hidden element that starts at `from` ends: the start of its "</name"
// (any case), or html.size().
size_t hidden_end(std::string_view html, size_t from, const std::string &name) {
    for (size_t j = html.find("</", from); j != std::string_view::npos; j = html.find("</", j + 2)) {
        const auto candidate = html.substr(j + 2, name.size());
        const auto after     = j + 2 + name.size();
        if (ascii_lower(candidate) == name &&
            (after == html.size() || !(is_alpha(html[after]) || is_digit(html[after])))) {
            return j;
        }
    }
    return html.size();
}

result<std::string> plain_text(std::string_view bytes, size_t max_bytes) {
    if (bytes.substr(0, 3) == "\xEF\xBB\xBF") {
        bytes.remove_prefix(3);
    }
    if (!utf8_valid(bytes)) {
        return error::invalid("the file is not valid UTF-8 text", "file", "invalid_utf8");
    }
    if (bytes.size() > max_bytes) {
        return too_much_text(max_bytes);
    }
    return std::string(bytes);
}

void ignore_poppler_message(const std::string & /*message*/, void * /*closure*/) {}

result<std::string> pdf_text(std::string_view bytes, size_t max_bytes) {
    // poppler reports every oddity of a damaged file on stderr; the error we return says enough.
    static std::once_flag quiet;
    std::call_once(quiet, [] { poppler::set_debug_error_function(&ignore_poppler_message, nullptr); });
    if (bytes.size() > static_cast<size_t>(INT_MAX)) {
        return error::invalid("the PDF is larger than poppler reads (2 GiB)", "file", "invalid_pdf");
    }
    std::unique_ptr<poppler::document> doc(
        poppler::document::load_from_raw_data(bytes.data(), static_cast<int>(bytes.size())));
    if (!doc) {
        return error::invalid("the file cannot be read as a PDF", "file", "invalid_pdf");
    }
    if (doc->is_locked()) {
        return error::invalid("the PDF is encrypted (its text cannot be read without its password)", "file",
                              "invalid_pdf");
    }
    std::string out;
    for (int i = 0; i < doc->pages(); ++i) {
        std::unique_ptr<poppler::page> page(doc->create_page(i));
        if (!page) {
            continue;
        }
        const auto text = page->text(poppler::rectf(), poppler::page::non_raw_non_physical_layout).to_utf8();
        if (i > 0) {
            out += '\f';
        }
        out.append(text.data(), text.size());
        if (out.size() > max_bytes) {
            return too_much_text(max_bytes);
        }
    }
    // poppler's text is UTF-8 already; a damaged font map must not put anything else downstream.
    return utf8_sanitize(out);
}

} // namespace

file_text_kind file_text_kind_of(std::string_view filename) {
    const auto dot = filename.rfind('.');
    if (dot == std::string_view::npos || filename.find('/', dot) != std::string_view::npos) {
        return file_text_kind::unsupported;
    }
    const auto                                    ext       = ascii_lower(filename.substr(dot + 1));
    static constexpr std::array<const char *, 30> text_exts = {
        "txt", "text", "md",   "markdown", "csv", "tsv", "json", "jsonl", "yaml", "yml",
        "xml", "log",  "rst",  "tex",      "c",   "cc",  "cpp",  "h",     "hpp",  "py",
        "js",  "ts",   "java", "go",       "rs",  "rb",  "sh",   "sql",   "css",  "php"};
    if (std::any_of(text_exts.begin(), text_exts.end(), [&](const char *e) { return ext == e; })) {
        return file_text_kind::text;
    }
    if (ext == "html" || ext == "htm" || ext == "xhtml") {
        return file_text_kind::html;
    }
    if (ext == "pdf") {
        return file_text_kind::pdf;
    }
    return file_text_kind::unsupported;
}

result<std::string> html_text(std::string_view html, size_t max_bytes) {
    if (!utf8_valid(html)) {
        return error::invalid("the file is not valid UTF-8 text", "file", "invalid_utf8");
    }
    text_builder out(max_bytes);
    size_t       i = 0;
    while (i < html.size()) {
        const char c = html[i];
        if (c == '<') {
            if (html.substr(i, 4) == "<!--") {
                const auto end = html.find("-->", i + 4);
                i              = end == std::string_view::npos ? html.size() : end + 3;
                continue;
            }
            const size_t name_at = i + (i + 1 < html.size() && html[i + 1] == '/' ? 2 : 1);
            const bool   closing = name_at == i + 2;
            if (name_at < html.size() &&
                (is_alpha(html[name_at]) || (!closing && (html[name_at] == '!' || html[name_at] == '?')))) {
                size_t n = name_at;
                while (n < html.size() && (is_alpha(html[n]) || is_digit(html[n]) || html[n] == '-')) {
                    ++n;
                }
                const auto name         = ascii_lower(html.substr(name_at, n - name_at));
                const auto end          = tag_end(html, i);
                const bool self_closing = end >= 2 && end <= html.size() && html[end - 2] == '/';
                if (is_block(name)) {
                    out.line_end();
                } else if (name == "td" || name == "th") {
                    out.space();
                }
                i = end;
                if (!closing && !self_closing && is_hidden(name)) {
                    i = hidden_end(html, i, name);
                }
                continue;
            }
        } else if (c == '&') {
            if (auto ref = char_ref(html, i)) {
                const auto cp = ref->first;
                if (cp == 0xA0 || cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == '\f') {
                    out.space();
                } else if (cp != 0xAD) { // a soft hyphen shows only where a line breaks
                    std::string s;
                    append_utf8(s, cp);
                    if (!out.add(s)) {
                        return too_much_text(max_bytes);
                    }
                }
                i += ref->second;
                continue;
            }
        } else if (is_space(c)) {
            out.space();
            ++i;
            continue;
        }
        // A run of plain text up to the next markup or whitespace.
        size_t j = i + 1;
        while (j < html.size() && html[j] != '<' && html[j] != '&' && !is_space(html[j])) {
            ++j;
        }
        if (!out.add(html.substr(i, j - i))) {
            return too_much_text(max_bytes);
        }
        i = j;
    }
    return out.finish();
}

result<std::string> extract_text(std::string_view bytes, std::string_view filename, size_t max_bytes) {
    switch (file_text_kind_of(filename)) {
    case file_text_kind::text:
        return plain_text(bytes, max_bytes);
    case file_text_kind::html:
        return html_text(bytes, max_bytes);
    case file_text_kind::pdf:
        return pdf_text(bytes, max_bytes);
    case file_text_kind::unsupported:
        break;
    }
    return error::invalid("'" + std::string(filename.substr(0, 200)) +
                              "' is not a supported type for text extraction (text: .txt .md .markdown .csv .json "
                              ".jsonl .yaml .yml .xml .log .rst .tex and source code; .html .htm .xhtml; .pdf)",
                          "file", "unsupported_file_type");
}

} // namespace inferbox

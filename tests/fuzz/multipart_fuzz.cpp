// Upload body bytes -> parse_multipart / parse_file_upload (files/multipart.h, files/file_store.h),
// and the same bytes as a document -> html_text (files/extract.h): the readers of untrusted bytes
// behind POST /v1/files and retrieval. Invariants:
//   - nothing crashes, hangs or leaks, whatever the bytes;
//   - an accepted body has 1..max_parts parts, each with a name, each part's data a view inside
//     the body; writing the parts back as a body and reading it again gives the same parts;
//   - the content type may come from the input too (its first line): the reader never accepts a
//     type other than multipart/form-data;
//   - html_text's text is valid UTF-8, within its bound, with no blank-line runs and no
//     whitespace at either end.

#include "common/utf8.h"
#include "files/extract.h"
#include "files/file_store.h"
#include "files/multipart.h"
#include "fuzz_check.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace inferbox;

namespace {

constexpr std::string_view fixed_type = "multipart/form-data; boundary=XyZ";

std::string quoted_value(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    return out + "\"";
}

void check_parts(std::string_view body, const std::vector<multipart_part> &parts, const multipart_limits &lim) {
    FUZZ_CHECK(!parts.empty() && parts.size() <= lim.max_parts);
    std::string again;
    for (const auto &p : parts) {
        FUZZ_CHECK(!p.name.empty());
        FUZZ_CHECK(p.data.data() >= body.data() && p.data.data() + p.data.size() <= body.data() + body.size());
        again += "--XyZ\r\nContent-Disposition: form-data; name=" + quoted_value(p.name);
        if (p.filename) {
            again += "; filename=" + quoted_value(*p.filename);
        }
        again += "\r\n";
        if (!p.content_type.empty()) {
            again += "Content-Type: " + p.content_type + "\r\n";
        }
        again += "\r\n" + std::string(p.data) + "\r\n";
    }
    again += "--XyZ--\r\n";
    multipart_limits wide = lim;
    wide.max_header_bytes = 1 << 20; // a name's escapes may lengthen its header
    wide.max_body_bytes   = size_t{1} << 30;
    auto reread           = parse_multipart(fixed_type, again, wide);
    FUZZ_CHECK(reread.ok());
    FUZZ_CHECK(reread->size() == parts.size());
    for (size_t i = 0; i < parts.size(); ++i) {
        const auto &a = parts[i];
        const auto &b = (*reread)[i];
        FUZZ_CHECK(a.name == b.name && a.filename == b.filename && a.content_type == b.content_type &&
                   a.data == b.data);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string_view bytes(reinterpret_cast<const char *>(data), size);
    multipart_limits       lim;
    lim.max_parts        = 8;
    lim.max_header_bytes = 512;
    lim.max_body_bytes   = 1 << 20;

    if (auto parts = parse_multipart(fixed_type, bytes, lim); parts.ok()) {
        check_parts(bytes, *parts, lim);
    }
    (void)parse_file_upload(fixed_type, bytes, 256);

    // The first line as the Content-Type, the rest as the body.
    const auto eol = bytes.find('\n');
    if (eol != std::string_view::npos) {
        const auto type = bytes.substr(0, eol);
        const auto body = bytes.substr(eol + 1);
        if (auto parts = parse_multipart(type, body, lim); parts.ok()) {
            FUZZ_CHECK(multipart_boundary(type).ok());
            FUZZ_CHECK(!parts->empty() && parts->size() <= lim.max_parts);
        }
    }

    constexpr size_t max_text = 4096;
    if (auto text = html_text(bytes, max_text); text.ok()) {
        FUZZ_CHECK(text->size() <= max_text);
        FUZZ_CHECK(utf8_valid(*text));
        FUZZ_CHECK(text->find("\n\n\n") == std::string::npos);
        FUZZ_CHECK(text->empty() ||
                   (text->front() != ' ' && text->front() != '\n' && text->back() != ' ' && text->back() != '\n'));
    }
    return 0;
}

#pragma once
// A strict multipart/form-data reader (RFC 7578 over RFC 2046) for request bodies, which are
// untrusted bytes: tests/fuzz/multipart_fuzz.cpp fuzzes it. It reads what browsers, curl and the
// OpenAI SDKs send and refuses the rest with an error naming the problem:
//   - the boundary comes from the Content-Type (1 to 70 of RFC 2046's characters, optionally
//     quoted); the body must start with the first delimiter (no preamble) and end with the close
//     delimiter (anything after it, the epilogue, is ignored);
//   - each part's header block is CRLF-terminated lines (no obsolete folding), at most
//     max_header_bytes, with a Content-Disposition of form-data carrying a `name` (and, for a
//     file, a `filename`); Content-Transfer-Encoding other than 7bit, 8bit or binary is refused;
//   - at most max_parts parts, and a body of at most max_body_bytes.
// Linear in the body: the delimiter holds exactly one CR, so a failed match never rescans more
// than the bytes up to the next CR. Parts are views into the body: keep the body alive.

#include "common/status.h"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

struct multipart_limits {
    size_t max_parts        = 16;
    size_t max_header_bytes = 8192; // one part's header block, its blank line included
    size_t max_body_bytes   = size_t{64} << 20;
};

struct multipart_part {
    std::string                name;         // Content-Disposition's name
    std::optional<std::string> filename;     // present (possibly empty) when the part names a file
    std::string                content_type; // the part's Content-Type; "" when it has none
    std::string_view           data;         // the part's bytes, a view into the body
};

// The boundary of a `multipart/form-data; boundary=...` Content-Type; an error (invalid_request,
// code invalid_multipart) when the type is another or the boundary is missing or malformed.
result<std::string> multipart_boundary(std::string_view content_type);

// The parts of a multipart/form-data body, in order. Errors are invalid_request with code
// invalid_multipart (payload_too_large for the body and part-count limits), each naming the
// problem and, for a limit, the limit.
result<std::vector<multipart_part>> parse_multipart(std::string_view content_type, std::string_view body,
                                                    const multipart_limits &limits);

} // namespace inferbox

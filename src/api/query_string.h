#pragma once
// Request targets and header lists: percent-decoding of a path segment, the query string's
// parameters, and the two header lists the console's files are negotiated by (Accept-Encoding,
// If-None-Match). Untrusted bytes, all of them: tests/fuzz/query_fuzz.cpp fuzzes every function.

#include "common/status.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace inferbox {

// "%2F" -> "/"; nullopt when an escape is malformed. '+' stays '+' (paths keep it).
std::optional<std::string> percent_decoded(std::string_view s);

// The parameters after the target's '?' (none when it has no query), each name and value
// percent-decoded with '+' read as a space. A name given twice keeps its last value. An error
// (invalid_request) for a malformed escape or more than 32 parameters.
result<std::map<std::string, std::string>> query_params(std::string_view target);

// A list's paging, as OpenAI's list endpoints take it: limit (1..a list's own maximum), order
// (asc|desc, newest first by default) and after (the last id of the previous page).
struct page_query {
    int32_t     limit     = 20;
    bool        ascending = false;
    std::string after;
};

// Reads one query parameter into `page` when it is limit, order or after: true when it was one
// of them, false when it is another list's own parameter, an error (naming the parameter and its
// limit) when its value is bad.
result<bool> read_page_param(const std::string &name, const std::string &value, int32_t max_limit, page_query &page);

// Whether an Accept-Encoding header allows gzip: an explicit "gzip" entry decides (q=0 refuses
// it), else "*" does; neither: no. Codings and parameter names are case-insensitive.
bool accepts_gzip(std::string_view accept_encoding);

// Whether an If-None-Match list holds `etag` (weak comparison: a W/ prefix is ignored).
bool if_none_match_lists(std::string_view list, std::string_view etag);

} // namespace inferbox

#pragma once
// Request targets: percent-decoding of a path segment, and the query string's parameters.

#include "common/status.h"

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

} // namespace inferbox

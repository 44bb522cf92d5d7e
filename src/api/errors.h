#pragma once
// The one mapping from an inferbox error to HTTP: status code, OpenAI error type, JSON body.

#include "common/status.h"

#include <string>

namespace inferbox {

struct http_error_info {
    unsigned    status;
    const char *type; // OpenAI's error.type
};

http_error_info map_error(error_kind kind);

// {"error": {"message", "type", "param", "code"}} — param and code are null when empty.
std::string error_body(const error &err);

} // namespace inferbox

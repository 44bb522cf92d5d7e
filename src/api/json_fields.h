#pragma once
// Reading optional fields of a request body, shared by the request parsers (schema.cpp,
// embeddings_schema.cpp) so that every endpoint treats absent and null fields, and reports a
// field of the wrong type or size, the same way.

#include "common/status.h"

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <string>

namespace inferbox {

// The field `name` of the object `body`, or nullptr when it is absent or JSON null (OpenAI's
// clients send null for "not set").
const nlohmann::json *json_field(const nlohmann::json &body, const char *name);

// The string field `name`: "" when absent or null; a 400 naming the field when it is not a
// string or holds more than `max_bytes` bytes.
result<std::string> string_field(const nlohmann::json &body, const char *name, size_t max_bytes);

// The `model` field: "" when absent or null (the default model answers). A present but empty id
// is a client bug, and an id holding a control character (NUL included) names no model: both are
// a 400 ("invalid_model") rather than the default model or a 404.
result<std::string> model_field(const nlohmann::json &body);

} // namespace inferbox

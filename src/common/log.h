#pragma once
// Process-wide logging on spdlog: readable lines by default, or one JSON object per line
// (INFERBOX_LOG_FORMAT=json) for Fluentd, Loki or CloudWatch. Structured events carry typed
// key/value fields; in text mode they follow the message as key=value pairs.
//
// Thread-safety: init_logging() runs once at start-up, before other threads log; log_event()
// and spdlog's own functions are safe from any thread afterwards.

#include <spdlog/common.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace inferbox {

enum class log_format { text, json };

// Reads "text" or "json" (case-insensitive); anything else is an error naming the value.
bool parse_log_format(std::string_view s, log_format &out);

void       init_logging(log_format fmt, spdlog::level::level_enum level = spdlog::level::info);
log_format current_log_format();

using log_value  = std::variant<std::string, int64_t, double, bool>;
using log_fields = std::vector<std::pair<std::string, log_value>>;

void log_event(spdlog::level::level_enum level, std::string_view msg, const log_fields &fields);

// JSON string escaping (quotes, backslashes, control characters); invalid UTF-8 becomes U+FFFD.
std::string json_escape(std::string_view s);

} // namespace inferbox

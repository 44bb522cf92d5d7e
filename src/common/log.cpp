#include "common/log.h"

#include "common/utf8.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cctype>
#include <charconv>
#include <cmath>
#include <ctime>

namespace inferbox {

namespace {

std::atomic<log_format> g_format{log_format::text};

// The fields of the event being logged on this thread. spdlog's default logger is synchronous,
// so the formatter runs on the logging thread inside log_event() and can read them; plain
// spdlog calls see nullptr. Passing them this way keeps untrusted message text from ever being
// spliced into the JSON as anything but an escaped string.
thread_local const log_fields *t_fields = nullptr;

void append_value(std::string &out, const log_value &v, bool json) {
    if (const auto *s = std::get_if<std::string>(&v)) {
        if (json) {
            out += '"' + json_escape(*s) + '"';
            return;
        }
        const bool plain = !s->empty() && s->find_first_of(" \t\r\n\"=") == std::string::npos;
        out += plain ? utf8_sanitize(*s) : '"' + json_escape(*s) + '"';
    } else if (const auto *i = std::get_if<int64_t>(&v)) {
        out += std::to_string(*i);
    } else if (const auto *d = std::get_if<double>(&v)) {
        if (!std::isfinite(*d)) {
            out += json ? "null" : "nan";
            return;
        }
        char       buf[32];
        const auto r = std::to_chars(buf, buf + sizeof(buf), *d, std::chars_format::fixed, 3);
        out.append(buf, r.ptr);
    } else {
        out += std::get<bool>(v) ? "true" : "false";
    }
}

class json_formatter final : public spdlog::formatter {
  public:
    void format(const spdlog::details::log_msg &msg, spdlog::memory_buf_t &dest) override {
        const auto t  = std::chrono::system_clock::to_time_t(msg.time);
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()) % 1000;
        std::tm    tm{};
        gmtime_r(&t, &tm);
        char ts[96];
        std::snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                      tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms.count()));
        const auto  lv   = spdlog::level::to_string_view(msg.level);
        std::string line = std::string("{\"time\":\"") + ts + "\",\"level\":\"" + std::string(lv.data(), lv.size()) +
                           "\",\"msg\":\"" + json_escape(std::string_view(msg.payload.data(), msg.payload.size())) +
                           "\"";
        if (t_fields != nullptr) {
            for (const auto &[k, v] : *t_fields) {
                line += ",\"" + json_escape(k) + "\":";
                append_value(line, v, true);
            }
        }
        line += "}\n";
        dest.append(line.data(), line.data() + line.size());
    }
    std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<json_formatter>(); }
};

} // namespace

bool parse_log_format(std::string_view s, log_format &out) {
    std::string l(s);
    for (auto &c : l) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (l == "text") {
        out = log_format::text;
        return true;
    }
    if (l == "json") {
        out = log_format::json;
        return true;
    }
    return false;
}

void init_logging(log_format fmt, spdlog::level::level_enum level) {
    g_format.store(fmt);
    auto logger = spdlog::stderr_color_mt("inferbox");
    if (fmt == log_format::json) {
        logger->set_formatter(std::make_unique<json_formatter>());
    } else {
        logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
    }
    logger->set_level(level);
    spdlog::set_default_logger(logger);
}

log_format current_log_format() {
    return g_format.load();
}

void log_event(spdlog::level::level_enum level, std::string_view msg, const log_fields &fields) {
    auto *logger = spdlog::default_logger_raw();
    if (!logger->should_log(level)) {
        return;
    }
    if (g_format.load() == log_format::json) {
        t_fields = &fields;
        logger->log(level, "{}", msg);
        t_fields = nullptr;
        return;
    }
    std::string line(msg);
    for (const auto &[k, v] : fields) {
        line += ' ' + k + '=';
        append_value(line, v, false);
    }
    logger->log(level, "{}", line);
}

std::string json_escape(std::string_view in) {
    const std::string s = utf8_sanitize(in);
    std::string       out;
    out.reserve(s.size() + 8);
    for (char c : s) {
        switch (c) {
        case '"':
            out += "\\\"";
            break;
        case '\\':
            out += "\\\\";
            break;
        case '\n':
            out += "\\n";
            break;
        case '\r':
            out += "\\r";
            break;
        case '\t':
            out += "\\t";
            break;
        default:
            if (static_cast<unsigned char>(c) < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
                out += buf;
            } else {
                out += c;
            }
        }
    }
    return out;
}

} // namespace inferbox

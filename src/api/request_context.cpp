#include "api/request_context.h"

#include <random>

namespace inferbox {

namespace {

bool is_lower_hex(std::string_view s) {
    for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

bool all_zero(std::string_view s) {
    return s.find_first_not_of('0') == std::string_view::npos;
}

} // namespace

std::string random_hex(size_t n_digits) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    static constexpr char               digits[] = "0123456789abcdef";
    std::string                         out;
    out.reserve(n_digits);
    uint64_t bits = 0;
    for (size_t i = 0; i < n_digits; ++i) {
        if (i % 16 == 0) {
            bits = rng();
        }
        out += digits[bits & 0xf];
        bits >>= 4;
    }
    return out;
}

std::string request_id_from(std::string_view h) {
    bool ok = !h.empty() && h.size() <= 128;
    for (char c : h) {
        ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == ':' || c == '+' || c == '=' || c == '/' || c == '-');
    }
    return ok ? std::string(h) : random_hex(32);
}

std::string trace_context::header() const {
    return "00-" + trace_id + "-" + span_id + "-" + flags;
}

trace_context trace_from(std::string_view h) {
    trace_context t;
    t.span_id = random_hex(16);
    // version "-" trace-id "-" parent-id "-" flags: 2+1+32+1+16+1+2 = 55 characters. Later
    // versions may append fields after another "-"; we read the version-00 prefix.
    const bool shape =
        h.size() >= 55 && h[2] == '-' && h[35] == '-' && h[52] == '-' && (h.size() == 55 || h[55] == '-');
    if (shape) {
        const auto version = h.substr(0, 2), trace = h.substr(3, 32), parent = h.substr(36, 16),
                   flags = h.substr(53, 2);
        if (is_lower_hex(version) && version != "ff" && is_lower_hex(trace) && is_lower_hex(parent) &&
            is_lower_hex(flags) && !all_zero(trace) && !all_zero(parent) && (version != "00" || h.size() == 55)) {
            t.trace_id  = std::string(trace);
            t.parent_id = std::string(parent);
            t.flags     = std::string(flags);
            return t;
        }
    }
    t.trace_id = random_hex(32);
    return t;
}

} // namespace inferbox

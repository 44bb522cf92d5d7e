#pragma once
// quoted_for_message(s): a name from a request or a file made safe for a one-line message:
// between single quotes, printable ASCII kept, every other byte as \xHH, cut at 80 bytes ("...").

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace inferbox {

inline std::string quoted_for_message(std::string_view s) {
    static constexpr size_t max_bytes = 80;
    static constexpr char   hex[]     = "0123456789abcdef";
    std::string             out       = "'";
    for (size_t i = 0; i < s.size() && i < max_bytes; ++i) {
        const auto c = uint8_t(s[i]);
        if (c >= 0x20 && c < 0x7f) {
            out += char(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    if (s.size() > max_bytes) {
        out += "...";
    }
    return out + "'";
}

} // namespace inferbox

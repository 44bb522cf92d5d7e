#include "api/query_string.h"

#include "common/utf8.h"

namespace inferbox {

std::optional<std::string> percent_decoded(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        if (i + 2 >= s.size() || hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0) {
            return std::nullopt;
        }
        out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
        i += 2;
    }
    return out;
}

result<std::map<std::string, std::string>> query_params(std::string_view target) {
    std::map<std::string, std::string> out;
    const auto                         q = target.find('?');
    if (q == std::string_view::npos) {
        return out;
    }
    std::string_view rest  = target.substr(q + 1);
    size_t           count = 0;
    while (!rest.empty()) {
        const auto amp  = rest.find('&');
        auto       pair = rest.substr(0, amp);
        rest            = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
        if (pair.empty()) {
            continue;
        }
        if (++count > 32) {
            return error::invalid("the query string has more than 32 parameters", "", "invalid_query");
        }
        const auto  eq = pair.find('=');
        std::string name(pair.substr(0, eq));
        std::string value(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
        for (auto *s : {&name, &value}) {
            for (auto &c : *s) {
                c = c == '+' ? ' ' : c;
            }
        }
        auto dn = percent_decoded(name);
        auto dv = percent_decoded(value);
        if (!dn || !dv) {
            return error::invalid("the query parameter '" + name.substr(0, 100) + "' has a malformed percent-escape",
                                  name.substr(0, 100), "invalid_query");
        }
        out[std::move(*dn)] = std::move(*dv);
    }
    return out;
}

} // namespace inferbox

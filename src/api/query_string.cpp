#include "api/query_string.h"

#include "common/utf8.h"

#include <charconv>
#include <optional>

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

// Whether an Accept-Encoding header allows gzip: an explicit "gzip" entry decides (q=0 refuses
// it), else "*" does; none of them: no. Parameter names and codings are case-insensitive.
bool accepts_gzip(std::string_view accept) {
    std::optional<bool> gzip;
    std::optional<bool> any;
    size_t              pos = 0;
    while (pos < accept.size()) {
        const auto end  = accept.find(',', pos);
        auto       item = accept.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
        pos             = end == std::string_view::npos ? accept.size() : end + 1;
        const auto trim = [](std::string_view v) {
            while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
                v.remove_prefix(1);
            }
            while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
                v.remove_suffix(1);
            }
            return v;
        };
        const auto semi   = item.find(';');
        const auto coding = trim(item.substr(0, semi));
        bool       wanted = true;
        for (auto rest = semi == std::string_view::npos ? std::string_view() : item.substr(semi + 1); !rest.empty();) {
            const auto next  = rest.find(';');
            const auto param = trim(rest.substr(0, next));
            rest             = next == std::string_view::npos ? std::string_view() : rest.substr(next + 1);
            if (param.size() >= 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
                // q=0, q=0.0, q=0.000: refused; any other weight accepts.
                wanted = param.substr(2).find_first_not_of("0.") != std::string_view::npos;
            }
        }
        if (ascii_iequals(coding, "gzip")) {
            gzip = wanted;
        } else if (coding == "*") {
            any = wanted;
        }
    }
    return gzip.value_or(any.value_or(false));
}

// Whether an If-None-Match list holds `etag` (weak comparison: a W/ prefix is ignored).
bool if_none_match_lists(std::string_view list, std::string_view etag) {
    size_t pos = 0;
    while (pos < list.size()) {
        const auto end  = list.find(',', pos);
        auto       item = list.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
        pos             = end == std::string_view::npos ? list.size() : end + 1;
        while (!item.empty() && item.front() == ' ') {
            item.remove_prefix(1);
        }
        while (!item.empty() && item.back() == ' ') {
            item.remove_suffix(1);
        }
        if (item.substr(0, 2) == "W/") {
            item.remove_prefix(2);
        }
        if (item == etag) {
            return true;
        }
    }
    return false;
}

result<bool> read_page_param(const std::string &name, const std::string &value, int32_t max_limit, page_query &page) {
    if (name == "limit") {
        auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), page.limit);
        if (ec != std::errc() || end != value.data() + value.size() || page.limit < 1 || page.limit > max_limit) {
            return error::invalid("limit must be an integer from 1 to " + std::to_string(max_limit) + ", got '" +
                                      value.substr(0, 50) + "'",
                                  "limit");
        }
        return true;
    }
    if (name == "order") {
        if (value != "asc" && value != "desc") {
            return error::invalid("order must be asc or desc", "order");
        }
        page.ascending = value == "asc";
        return true;
    }
    if (name == "after") {
        if (value.size() > 256) {
            return error::invalid("after must be an id (at most 256 bytes)", "after");
        }
        page.after = value;
        return true;
    }
    return false;
}

} // namespace inferbox

#include "backend/backend_spec.h"

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <map>

namespace inferbox {

namespace {

std::string trim(const std::string &s) {
    const auto b = s.find_first_not_of(" \t\r");
    const auto e = s.find_last_not_of(" \t\r");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::vector<std::string> split(const std::string &s, char sep) {
    std::vector<std::string> out;
    size_t                   start = 0;
    while (true) {
        const auto at = s.find(sep, start);
        out.push_back(trim(s.substr(start, at - start)));
        if (at == std::string::npos) {
            return out;
        }
        start = at + 1;
    }
}

result<int64_t> number(const std::string &where, const std::string &key, const std::string &value, int64_t min,
                       int64_t max) {
    int64_t    n  = 0;
    const auto rc = std::from_chars(value.data(), value.data() + value.size(), n);
    if (rc.ec != std::errc() || rc.ptr != value.data() + value.size() || n < min || n > max) {
        return error::invalid(where + ": " + key + " must be an integer from " + std::to_string(min) + " to " +
                              std::to_string(max) + ", got '" + value + "'");
    }
    return n;
}

bool valid_name(const std::string &s) {
    if (s.empty() || s.size() > 64) {
        return false;
    }
    for (const char c : s) {
        if (!(std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.')) {
            return false;
        }
    }
    return true;
}

} // namespace

result<backend_spec> parse_backend_spec(const std::string &text) {
    const auto parts = split(text, ';');
    const auto eq    = parts.front().find('=');
    if (eq == std::string::npos) {
        return error::invalid("backend '" + parts.front() + "': expected NAME=URL first (e.g. cloud=https://host/v1)");
    }
    backend_spec spec;
    spec.name = trim(parts.front().substr(0, eq));
    spec.url  = trim(parts.front().substr(eq + 1));
    if (!valid_name(spec.name)) {
        return error::invalid("backend '" + spec.name +
                              "': a backend name is 1 to 64 letters, digits, '-', '_' or '.'");
    }
    const std::string where = "backend '" + spec.name + "'";
    if (spec.url.rfind("http://", 0) != 0 && spec.url.rfind("https://", 0) != 0) {
        return error::invalid(where + ": the URL must start with http:// or https://, got '" + spec.url + "'");
    }
    static const std::map<std::string, std::chrono::milliseconds backend_spec::*> durations = {
        {"connect-timeout-ms", &backend_spec::connect_timeout},
        {"first-byte-timeout-ms", &backend_spec::first_byte_timeout},
        {"idle-timeout-ms", &backend_spec::idle_timeout},
        {"probe-interval-ms", &backend_spec::probe_interval},
        {"open-ms", &backend_spec::open_time}};
    for (size_t i = 1; i < parts.size(); ++i) {
        if (parts[i].empty()) {
            continue;
        }
        const auto kv = parts[i].find('=');
        if (kv == std::string::npos) {
            return error::invalid(where + ": '" + parts[i] + "' is not key=value");
        }
        const std::string key   = trim(parts[i].substr(0, kv));
        const std::string value = trim(parts[i].substr(kv + 1));
        if (key == "models") {
            for (const auto &m : split(value, ',')) {
                if (m.empty()) {
                    continue;
                }
                const auto    rename = m.find('=');
                backend_model bm{trim(m.substr(0, rename)),
                                 rename == std::string::npos ? trim(m) : trim(m.substr(rename + 1))};
                if (bm.id.empty() || bm.remote_id.empty()) {
                    return error::invalid(where + ": models entry '" + m + "' needs an id (and after '=' a remote id)");
                }
                spec.models.push_back(std::move(bm));
            }
        } else if (key == "api-key-env") {
            spec.api_key_env = value;
        } else if (key == "api-key-file") {
            spec.api_key_file = value;
        } else if (key == "ca-file") {
            spec.ca_file = value;
        } else if (key == "max-in-flight") {
            auto n = number(where, key, value, 1, 100000);
            if (!n) {
                return n.err();
            }
            spec.max_in_flight = static_cast<int32_t>(*n);
        } else if (key == "failure-threshold") {
            auto n = number(where, key, value, 1, 1000);
            if (!n) {
                return n.err();
            }
            spec.failure_threshold = static_cast<int32_t>(*n);
        } else if (auto d = durations.find(key); d != durations.end()) {
            const int64_t min = key == "probe-interval-ms" ? 0 : 1;
            auto          n   = number(where, key, value, min, 3'600'000);
            if (!n) {
                return n.err();
            }
            spec.*(d->second) = std::chrono::milliseconds(*n);
        } else if (key.rfind("label.", 0) == 0 && key.size() > 6) {
            spec.labels[key.substr(6)] = value;
        } else {
            return error::invalid(where + ": unknown setting '" + key +
                                  "' (known: models, api-key-env, api-key-file, ca-file, max-in-flight, "
                                  "connect-timeout-ms, first-byte-timeout-ms, idle-timeout-ms, probe-interval-ms, "
                                  "failure-threshold, open-ms, label.NAME)");
        }
    }
    if (!spec.api_key_env.empty() && !spec.api_key_file.empty()) {
        return error::invalid(where + ": give api-key-env or api-key-file, not both");
    }
    return spec;
}

result<std::string> resolve_backend_key(const backend_spec &spec) {
    const std::string where = "backend '" + spec.name + "'";
    if (!spec.api_key_env.empty()) {
        const char *v = std::getenv(spec.api_key_env.c_str());
        if (v == nullptr || *v == '\0') {
            return error::invalid(where + ": api-key-env names " + spec.api_key_env + ", which is not set");
        }
        return std::string(v);
    }
    if (!spec.api_key_file.empty()) {
        std::ifstream in(spec.api_key_file);
        std::string   line;
        if (!in || !std::getline(in, line)) {
            return error::invalid(where + ": the api-key-file " + spec.api_key_file + " cannot be read");
        }
        line = trim(line);
        if (line.empty()) {
            return error::invalid(where + ": the api-key-file " + spec.api_key_file + " is empty");
        }
        return line;
    }
    return std::string();
}

} // namespace inferbox

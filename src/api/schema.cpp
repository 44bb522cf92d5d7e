#include "api/schema.h"

#include "common/utf8.h"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>
#include <sstream>

namespace inferbox {

using json = nlohmann::json;

namespace {

// Numbers in messages: integers in full (16777216, not 1.67772e+07), others as the shortest text
// that reads back as the same double.
std::string fmt_num(double v) {
    if (!std::isfinite(v)) {
        return std::isnan(v) ? "NaN" : (v > 0 ? "Infinity" : "-Infinity");
    }
    char buf[64];
    if (std::floor(v) == v && std::fabs(v) < 1e18) {
        std::snprintf(buf, sizeof(buf), "%.0f", v);
        return buf;
    }
    const auto r = std::to_chars(buf, buf + sizeof(buf), v);
    return std::string(buf, r.ptr);
}

std::string type_name(const json &v) {
    return v.type_name();
}

} // namespace

const std::vector<numeric_field> &numeric_fields() {
    static const std::vector<numeric_field> fields = {
        // name                   min      max          integer chat  completion
        {"temperature", 0, 2, false, true, true},
        {"top_p", 0, 1, false, true, true},
        {"top_k", -1, 1 << 20, true, true, true},
        {"min_p", 0, 1, false, true, true},
        {"presence_penalty", -2, 2, false, true, true},
        {"frequency_penalty", -2, 2, false, true, true},
        {"repetition_penalty", 0.01, 10, false, true, true},
        {"max_tokens", 1, 1 << 24, true, true, true},
        {"max_completion_tokens", 1, 1 << 24, true, true, false},
        {"n", 1, 128, true, true, true}, // further bounded by --max-n
        {"seed", -9.2e18, 9.2e18, true, true, true},
        {"top_logprobs", 0, 20, true, true, false},
        {"logprobs", 0, 5, true, false, true}, // completions: an integer; chat: a boolean
    };
    return fields;
}

result<json> parse_json_body(const std::string &body, int32_t max_depth) {
    if (body.empty()) {
        return error::invalid("the request body is empty; expected a JSON object", "", "invalid_json");
    }
    // JSON never holds a raw NUL (strings escape it as \u0000); the parser would stop at one and
    // ignore what follows, so a body with one is refused whole.
    if (const auto nul = body.find('\0'); nul != std::string::npos) {
        return error::invalid("the request body has a NUL byte at offset " + std::to_string(nul) +
                                  ", which JSON does not allow",
                              "", "invalid_json");
    }
    bool too_deep = false;
    json j        = json::parse(
               body,
               [&](int depth, json::parse_event_t, json &) {
            if (depth > max_depth) {
                too_deep = true;
                return false;
            }
            return true;
        },
               /*allow_exceptions=*/false);
    if (too_deep) {
        return error::invalid("the request body nests deeper than " + std::to_string(max_depth) + " levels", "",
                              "invalid_json");
    }
    if (j.is_discarded()) {
        std::string detail;
        try {
            const json again = json::parse(body);
            (void)again;
        } catch (const json::exception &e) {
            // Not only parse_error: a number beyond double's range (1e400) is out_of_range.
            detail = std::string(": ") + e.what();
        }
        return error::invalid("the request body is not valid JSON" + detail, "", "invalid_json");
    }
    if (!j.is_object()) {
        return error::invalid("the request body must be a JSON object, got " + type_name(j), "", "invalid_json");
    }
    return j;
}

namespace {

const json *field(const json &body, const char *name) {
    auto it = body.find(name);
    if (it == body.end() || it->is_null()) {
        return nullptr;
    }
    return &*it;
}

result<std::string> get_string(const json &body, const char *name, size_t max_bytes = 1u << 20) {
    const json *v = field(body, name);
    if (v == nullptr) {
        return std::string();
    }
    if (!v->is_string()) {
        return error::invalid(std::string(name) + " must be a string, got " + type_name(*v), name);
    }
    const auto &s = v->get_ref<const std::string &>();
    if (s.size() > max_bytes) {
        return error::invalid(std::string(name) + " is longer than " + std::to_string(max_bytes) + " bytes", name);
    }
    return s;
}

result<bool> get_bool(const json &body, const char *name, bool def) {
    const json *v = field(body, name);
    if (v == nullptr) {
        return def;
    }
    if (!v->is_boolean()) {
        return error::invalid(std::string(name) + " must be a boolean, got " + type_name(*v), name);
    }
    return v->get<bool>();
}

// Validates every numeric field of the table that the body carries.
std::optional<error> check_numbers(api_kind kind, const json &body, const api_limits &limits) {
    for (const auto &f : numeric_fields()) {
        if (!(kind == api_kind::chat ? f.chat : f.completion)) {
            continue;
        }
        const json *v = field(body, f.name);
        if (v == nullptr) {
            continue;
        }
        if (kind == api_kind::chat && std::string_view(f.name) == "logprobs") {
            continue;
        }
        // n's bound is the server's --max-n, not the table's ceiling.
        const double      max   = std::string_view(f.name) == "n" ? std::min<double>(f.max, limits.max_n) : f.max;
        const std::string range = "between " + fmt_num(f.min) + " and " + fmt_num(max);
        if (!v->is_number()) {
            return error::invalid(std::string(f.name) + " must be " + (f.integer ? "an integer" : "a number") + " " +
                                      range + ", got " + type_name(*v),
                                  f.name);
        }
        const double d = v->get<double>();
        if (f.integer && !v->is_number_integer() && std::floor(d) != d) {
            return error::invalid(std::string(f.name) + " must be an integer " + range + ", got " + fmt_num(d), f.name);
        }
        if (!std::isfinite(d) || d < f.min || d > max) {
            return error::invalid(std::string(f.name) + " must be " + range + ", got " + fmt_num(d), f.name);
        }
    }
    return std::nullopt;
}

template <typename T> T num(const json &body, const char *name, T def) {
    const json *v = field(body, name);
    return v == nullptr ? def : static_cast<T>(v->get<double>());
}

result<std::vector<token_id>> token_array(const json &arr, const char *name) {
    std::vector<token_id> out;
    out.reserve(arr.size());
    for (const auto &t : arr) {
        if (!t.is_number_integer()) {
            return error::invalid(std::string(name) + " token arrays must hold integers, got " + type_name(t), name);
        }
        const auto v = t.get<int64_t>();
        if (v < 0 || v > INT32_MAX) {
            return error::invalid(std::string(name) + " holds token id " + std::to_string(v) + ", outside [0, 2^31)",
                                  name);
        }
        out.push_back(static_cast<token_id>(v));
    }
    return out;
}

result<std::string> message_content(const json &m, size_t index) {
    const std::string param = "messages[" + std::to_string(index) + "].content";
    auto              it    = m.find("content");
    if (it == m.end() || it->is_null()) {
        return std::string();
    }
    if (it->is_string()) {
        return it->get<std::string>();
    }
    if (!it->is_array()) {
        return error::invalid(param + " must be a string or an array of text parts, got " + type_name(*it), param);
    }
    std::string text;
    for (size_t k = 0; k < it->size(); ++k) {
        const auto &part = (*it)[k];
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
            return error::invalid(param + "[" + std::to_string(k) + "] must be an object with a \"type\"", param);
        }
        const auto &type = part["type"].get_ref<const std::string &>();
        if (type != "text") {
            return error::invalid(param + "[" + std::to_string(k) + "] has type \"" + type +
                                      "\"; this model accepts only \"text\" parts",
                                  param);
        }
        if (!part.contains("text") || !part["text"].is_string()) {
            return error::invalid(param + "[" + std::to_string(k) + "].text must be a string", param);
        }
        text += part["text"].get<std::string>();
    }
    return text;
}

} // namespace

result<api_request> parse_request(api_kind kind, const json &body, const api_limits &limits) {
    api_request r;
    r.kind = kind;
    if (auto e = check_numbers(kind, body, limits)) {
        return *e;
    }
    auto model = get_string(body, "model", 1024);
    if (!model) {
        return model.err();
    }
    r.model   = *model;
    auto user = get_string(body, "user", 1024);
    if (!user) {
        return user.err();
    }
    r.user      = *user;
    auto stream = get_bool(body, "stream", false);
    if (!stream) {
        return stream.err();
    }
    r.stream = *stream;
    if (const json *so = field(body, "stream_options")) {
        if (!so->is_object()) {
            return error::invalid("stream_options must be an object, got " + type_name(*so), "stream_options");
        }
        auto iu = get_bool(*so, "include_usage", false);
        if (!iu) {
            return error::invalid("stream_options.include_usage must be a boolean", "stream_options.include_usage");
        }
        r.include_usage = *iu;
    }
    auto ignore_eos = get_bool(body, "ignore_eos", false);
    if (!ignore_eos) {
        return ignore_eos.err();
    }

    auto &s              = r.sampling;
    s.ignore_eos         = *ignore_eos;
    s.temperature        = num<float>(body, "temperature", 1.0f);
    s.top_p              = num<float>(body, "top_p", 1.0f);
    s.top_k              = num<int32_t>(body, "top_k", 0);
    s.min_p              = num<float>(body, "min_p", 0.0f);
    s.presence_penalty   = num<float>(body, "presence_penalty", 0.0f);
    s.frequency_penalty  = num<float>(body, "frequency_penalty", 0.0f);
    s.repetition_penalty = num<float>(body, "repetition_penalty", 1.0f);
    if (const json *seed = field(body, "seed")) {
        // Any 64-bit seed is accepted; the sampler uses its low 32 bits.
        s.seed = static_cast<uint32_t>(static_cast<uint64_t>(seed->get<int64_t>()) & 0xFFFFFFFFu);
    }
    r.n = num<int32_t>(body, "n", 1);
    if (r.n > limits.max_n) {
        return error::invalid(
            "n must be between 1 and " + std::to_string(limits.max_n) + ", got " + std::to_string(r.n), "n");
    }
    if (const json *mt = field(body, "max_completion_tokens")) {
        r.max_tokens       = static_cast<int32_t>(mt->get<double>());
        r.max_tokens_param = "max_completion_tokens";
    } else if (const json *mt2 = field(body, "max_tokens")) {
        r.max_tokens = static_cast<int32_t>(mt2->get<double>());
    }

    if (const json *lb = field(body, "logit_bias")) {
        if (!lb->is_object()) {
            return error::invalid("logit_bias must be an object mapping token ids to numbers, got " + type_name(*lb),
                                  "logit_bias");
        }
        if (lb->size() > static_cast<size_t>(limits.max_logit_bias)) {
            return error::invalid("logit_bias has " + std::to_string(lb->size()) + " entries; the limit is " +
                                      std::to_string(limits.max_logit_bias),
                                  "logit_bias");
        }
        for (const auto &[k, v] : lb->items()) {
            char      *end = nullptr;
            const long id  = std::strtol(k.c_str(), &end, 10);
            if (k.empty() || end == nullptr || *end != '\0' || id < 0 || id > INT32_MAX) {
                return error::invalid("logit_bias keys must be token ids, got \"" + utf8_sanitize(k) + "\"",
                                      "logit_bias");
            }
            if (!v.is_number() || v.get<double>() < -100 || v.get<double>() > 100) {
                return error::invalid("logit_bias values must be numbers between -100 and 100", "logit_bias");
            }
            s.logit_bias.emplace_back(static_cast<token_id>(id), v.get<float>());
        }
    }

    if (const json *stop = field(body, "stop")) {
        std::vector<std::string> stops;
        if (stop->is_string()) {
            stops.push_back(stop->get<std::string>());
        } else if (stop->is_array()) {
            for (const auto &x : *stop) {
                if (!x.is_string()) {
                    return error::invalid("stop must be a string or an array of strings", "stop");
                }
                stops.push_back(x.get<std::string>());
            }
        } else {
            return error::invalid("stop must be a string or an array of strings, got " + type_name(*stop), "stop");
        }
        if (stops.size() > static_cast<size_t>(limits.max_stop)) {
            return error::invalid("stop has " + std::to_string(stops.size()) + " strings; the limit is " +
                                      std::to_string(limits.max_stop),
                                  "stop");
        }
        for (const auto &x : stops) {
            if (x.size() > static_cast<size_t>(limits.max_stop_bytes)) {
                return error::invalid(
                    "each stop string must be at most " + std::to_string(limits.max_stop_bytes) + " bytes", "stop");
            }
            if (!x.empty()) {
                r.stop.push_back(x);
            }
        }
    }

    if (kind == api_kind::chat) {
        auto lp = get_bool(body, "logprobs", false);
        if (!lp) {
            return lp.err();
        }
        if (*lp) {
            s.top_logprobs = num<int32_t>(body, "top_logprobs", 0);
        } else if (field(body, "top_logprobs") != nullptr) {
            return error::invalid("top_logprobs requires logprobs to be true", "top_logprobs");
        }
        const json *msgs = field(body, "messages");
        if (msgs == nullptr || !msgs->is_array() || msgs->empty()) {
            return error::invalid("messages must be a non-empty array of {role, content} objects", "messages");
        }
        if (msgs->size() > static_cast<size_t>(limits.max_messages)) {
            return error::invalid("messages has " + std::to_string(msgs->size()) + " entries; the limit is " +
                                      std::to_string(limits.max_messages),
                                  "messages");
        }
        for (size_t i = 0; i < msgs->size(); ++i) {
            const auto       &m     = (*msgs)[i];
            const std::string param = "messages[" + std::to_string(i) + "]";
            if (!m.is_object()) {
                return error::invalid(param + " must be an object, got " + type_name(m), param);
            }
            auto role_it = m.find("role");
            if (role_it == m.end() || !role_it->is_string()) {
                return error::invalid(param + ".role must be a string", param + ".role");
            }
            const auto &role = role_it->get_ref<const std::string &>();
            if (role != "system" && role != "user" && role != "assistant" && role != "developer") {
                return error::invalid(param + ".role must be one of system, developer, user, assistant; got \"" +
                                          utf8_sanitize(role) + "\"",
                                      param + ".role");
            }
            const auto c_it = m.find("content");
            if (role != "assistant" && (c_it == m.end() || c_it->is_null())) {
                return error::invalid(param + ".content is required for a " + role + " message", param + ".content");
            }
            auto content = message_content(m, i);
            if (!content) {
                return content.err();
            }
            r.messages.push_back({role == "developer" ? "system" : role, *content});
        }
    } else {
        if (const json *lp = field(body, "logprobs")) {
            s.top_logprobs = static_cast<int32_t>(lp->get<double>());
        }
        auto echo = get_bool(body, "echo", false);
        if (!echo) {
            return echo.err();
        }
        r.echo           = *echo;
        const json *prmt = field(body, "prompt");
        if (prmt == nullptr) {
            return error::invalid("prompt is required: a string, an array of strings, or token ids", "prompt");
        }
        if (prmt->is_string()) {
            r.prompts.emplace_back(prmt->get<std::string>());
        } else if (prmt->is_array() && !prmt->empty() && (*prmt)[0].is_number()) {
            auto toks = token_array(*prmt, "prompt");
            if (!toks) {
                return toks.err();
            }
            r.prompts.emplace_back(std::move(*toks));
        } else if (prmt->is_array() && !prmt->empty()) {
            if (prmt->size() > static_cast<size_t>(limits.max_prompts)) {
                return error::invalid("prompt has " + std::to_string(prmt->size()) + " entries; the limit is " +
                                          std::to_string(limits.max_prompts),
                                      "prompt");
            }
            for (const auto &p : *prmt) {
                if (p.is_string()) {
                    r.prompts.emplace_back(p.get<std::string>());
                } else if (p.is_array()) {
                    auto toks = token_array(p, "prompt");
                    if (!toks) {
                        return toks.err();
                    }
                    r.prompts.emplace_back(std::move(*toks));
                } else {
                    return error::invalid("prompt arrays must hold strings or token-id arrays, got " + type_name(p),
                                          "prompt");
                }
            }
        } else {
            return error::invalid(
                "prompt must be a non-empty string, array of strings, or token ids; got " + type_name(*prmt), "prompt");
        }
        if (static_cast<int64_t>(r.prompts.size()) * r.n > limits.max_n) {
            return error::invalid("prompts × n = " + std::to_string(r.prompts.size() * r.n) +
                                      " choices; the limit is " + std::to_string(limits.max_n),
                                  "n");
        }
    }
    return r;
}

} // namespace inferbox

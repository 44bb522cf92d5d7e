#include "api/embeddings_schema.h"

#include "api/json_fields.h"

#include "common/utf8.h"

#include <nlohmann/json.hpp>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>

namespace inferbox {

using json = nlohmann::json;

namespace {

result<std::string> short_string(const json &body, const char *name) {
    return string_field(body, name, 1024);
}

std::string upper(std::string s) {
    for (char &c : s) {
        if (c >= 'a' && c <= 'z') {
            c = static_cast<char>(c - 'a' + 'A');
        }
    }
    return s;
}

result<truncate_mode> parse_truncate(const json &body) {
    const json *v = json_field(body, "truncate");
    if (v == nullptr) {
        return truncate_mode::none;
    }
    if (v->is_string()) {
        const std::string s = upper(v->get<std::string>());
        if (s == "NONE") {
            return truncate_mode::none;
        }
        if (s == "START") {
            return truncate_mode::start;
        }
        if (s == "END") {
            return truncate_mode::end;
        }
    }
    return error::invalid("truncate must be one of \"NONE\", \"START\", \"END\"; got " +
                              (v->is_string() ? "\"" + utf8_sanitize(v->get<std::string>()).substr(0, 64) + "\""
                                              : std::string(v->type_name())),
                          "truncate");
}

// One token array of `input`; `where` names it in errors ("input" or "input[3]").
result<std::vector<token_id>> token_array(const json &arr, const std::string &where) {
    if (arr.empty()) {
        return error::invalid(where + " is an empty token array", "input");
    }
    std::vector<token_id> out;
    out.reserve(arr.size());
    for (size_t i = 0; i < arr.size(); ++i) {
        const auto &t = arr[i];
        if (!t.is_number_integer()) {
            return error::invalid(where + " must hold only integer token ids; element " + std::to_string(i) + " is " +
                                      t.type_name(),
                                  "input");
        }
        const auto v = t.get<int64_t>();
        if (t.is_number_unsigned() ? t.get<uint64_t>() > INT32_MAX : (v < 0 || v > INT32_MAX)) {
            return error::invalid(where + " holds token id " +
                                      (t.is_number_unsigned() ? std::to_string(t.get<uint64_t>()) : std::to_string(v)) +
                                      ", outside [0, 2^31)",
                                  "input");
        }
        out.push_back(static_cast<token_id>(v));
    }
    return out;
}

std::string count_error(const char *what, size_t n, int32_t limit) {
    return std::string(what) + " has " + std::to_string(n) + " entries; the limit is " + std::to_string(limit) +
           " (--embedding-max-inputs)";
}

} // namespace

result<embedding_request> parse_embedding_request(const json &body, const embedding_limits &limits) {
    embedding_request r;
    auto              model = model_field(body);
    if (!model) {
        return model.err();
    }
    r.model   = *model;
    auto user = short_string(body, "user");
    if (!user) {
        return user.err();
    }
    r.user = *user;

    if (const json *ef = json_field(body, "encoding_format")) {
        if (ef->is_string() && ef->get_ref<const std::string &>() == "float") {
            r.encoding = embedding_encoding::float32;
        } else if (ef->is_string() && ef->get_ref<const std::string &>() == "base64") {
            r.encoding = embedding_encoding::base64;
        } else {
            return error::invalid("encoding_format must be \"float\" or \"base64\"; got " +
                                      (ef->is_string()
                                           ? "\"" + utf8_sanitize(ef->get<std::string>()).substr(0, 64) + "\""
                                           : std::string(ef->type_name())),
                                  "encoding_format");
        }
    }
    if (const json *d = json_field(body, "dimensions")) {
        const bool   integral = d->is_number_integer() || (d->is_number_float() && std::isfinite(d->get<double>()) &&
                                                         std::floor(d->get<double>()) == d->get<double>());
        const double v        = d->is_number() ? d->get<double>() : 0.0;
        if (!integral || v < 1 || v > (1 << 20)) {
            return error::invalid("dimensions must be an integer between 1 and 1048576 (and at most the model's "
                                  "embedding size)",
                                  "dimensions");
        }
        r.dimensions = static_cast<int32_t>(v);
    }
    auto trunc = parse_truncate(body);
    if (!trunc) {
        return trunc.err();
    }
    r.truncate = *trunc;
    if (const json *it = json_field(body, "input_type")) {
        const std::string s = it->is_string() ? it->get<std::string>() : std::string();
        if (s != "query" && s != "passage") {
            return error::invalid(
                "input_type must be \"query\" or \"passage\"; got " +
                    (it->is_string() ? "\"" + utf8_sanitize(s).substr(0, 64) + "\"" : std::string(it->type_name())),
                "input_type");
        }
        r.input_type = s;
    }

    const json *in = json_field(body, "input");
    if (in == nullptr) {
        return error::invalid("input is required: a string, an array of strings, an array of token ids, or an array "
                              "of token-id arrays",
                              "input");
    }
    if (in->is_string()) {
        if (in->get_ref<const std::string &>().empty()) {
            return error::invalid("input is an empty string", "input");
        }
        r.inputs.emplace_back(in->get<std::string>());
        return r;
    }
    if (!in->is_array()) {
        return error::invalid(std::string("input must be a string or an array, got ") + in->type_name(), "input");
    }
    if (in->empty()) {
        return error::invalid("input is an empty array", "input");
    }
    if ((*in)[0].is_number()) { // one token array
        auto toks = token_array(*in, "input");
        if (!toks) {
            return toks.err();
        }
        r.inputs.emplace_back(std::move(*toks));
        return r;
    }
    if (in->size() > static_cast<size_t>(limits.max_inputs)) {
        return error::invalid(count_error("input", in->size(), limits.max_inputs), "input");
    }
    const bool strings = (*in)[0].is_string();
    for (size_t i = 0; i < in->size(); ++i) {
        const auto       &e     = (*in)[i];
        const std::string where = "input[" + std::to_string(i) + "]";
        if (strings && e.is_string()) {
            if (e.get_ref<const std::string &>().empty()) {
                return error::invalid(where + " is an empty string", "input");
            }
            r.inputs.emplace_back(e.get<std::string>());
        } else if (!strings && e.is_array()) {
            auto toks = token_array(e, where);
            if (!toks) {
                return toks.err();
            }
            r.inputs.emplace_back(std::move(*toks));
        } else {
            return error::invalid(where + " is " + e.type_name() +
                                      "; input arrays must hold only strings or only token-id arrays",
                                  "input");
        }
    }
    return r;
}

result<ranking_request> parse_ranking_request(const json &body, const embedding_limits &limits) {
    ranking_request r;
    auto            model = model_field(body);
    if (!model) {
        return model.err();
    }
    r.model    = *model;
    auto trunc = parse_truncate(body);
    if (!trunc) {
        return trunc.err();
    }
    r.truncate = *trunc;

    const json *q = json_field(body, "query");
    if (q == nullptr || !q->is_object() || !q->contains("text") || !(*q)["text"].is_string()) {
        return error::invalid("query must be an object {\"text\": string}", "query");
    }
    r.query = (*q)["text"].get<std::string>();
    if (r.query.empty()) {
        return error::invalid("query.text is an empty string", "query");
    }
    const json *ps = json_field(body, "passages");
    if (ps == nullptr || !ps->is_array() || ps->empty()) {
        return error::invalid("passages must be a non-empty array of {\"text\": string} objects", "passages");
    }
    if (ps->size() > static_cast<size_t>(limits.max_inputs)) {
        return error::invalid(count_error("passages", ps->size(), limits.max_inputs), "passages");
    }
    for (size_t i = 0; i < ps->size(); ++i) {
        const auto       &p     = (*ps)[i];
        const std::string where = "passages[" + std::to_string(i) + "]";
        if (!p.is_object() || !p.contains("text") || !p["text"].is_string()) {
            return error::invalid(where + " must be an object {\"text\": string}", "passages");
        }
        if (p["text"].get_ref<const std::string &>().empty()) {
            return error::invalid(where + ".text is an empty string", "passages");
        }
        r.passages.push_back(p["text"].get<std::string>());
    }
    return r;
}

std::string base64_encode(const unsigned char *data, size_t n) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string       out;
    out.reserve((n + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        const uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8) | uint32_t{data[i + 2]};
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += alphabet[v & 63];
    }
    if (const size_t rest = n - i; rest > 0) {
        const uint32_t v = (uint32_t{data[i]} << 16) | (rest == 2 ? uint32_t{data[i + 1]} << 8 : 0U);
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += rest == 2 ? alphabet[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

std::string embedding_base64(const std::vector<float> &v) {
    std::vector<unsigned char> bytes(v.size() * 4);
    for (size_t i = 0; i < v.size(); ++i) {
        const auto bits = std::bit_cast<uint32_t>(v[i]);
        for (size_t k = 0; k < 4; ++k) { // little-endian whatever the host's order
            bytes[i * 4 + k] = static_cast<unsigned char>((bits >> (8 * k)) & 0xFF);
        }
    }
    return base64_encode(bytes.data(), bytes.size());
}

std::string embedding_response_body(const std::string &model, const std::vector<std::vector<float>> &vectors,
                                    embedding_encoding encoding, int64_t n_prompt_tokens) {
    std::string out = R"({"object":"list","data":[)";
    char        buf[32];
    for (size_t i = 0; i < vectors.size(); ++i) {
        if (i > 0) {
            out += ',';
        }
        out += R"({"object":"embedding","index":)" + std::to_string(i) + R"(,"embedding":)";
        if (encoding == embedding_encoding::base64) {
            out += '"' + embedding_base64(vectors[i]) + '"';
        } else {
            out += '[';
            for (size_t k = 0; k < vectors[i].size(); ++k) {
                if (k > 0) {
                    out += ',';
                }
                const auto r = std::to_chars(buf, buf + sizeof(buf), vectors[i][k]);
                out.append(buf, r.ptr);
            }
            out += ']';
        }
        out += '}';
    }
    out += R"(],"model":)" + json(model).dump(-1, ' ', false, json::error_handler_t::replace);
    out += R"(,"usage":{"prompt_tokens":)" + std::to_string(n_prompt_tokens) + R"(,"total_tokens":)" +
           std::to_string(n_prompt_tokens) + "}}";
    return out;
}

} // namespace inferbox

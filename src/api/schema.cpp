#include "api/schema.h"

#include "api/json_fields.h"

#include "common/utf8.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <optional>
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
        {"max_completion_tokens", 1, 1 << 24, true, true, true}, // completions take it as max_tokens
        {"n", 1, 128, true, true, true},                         // further bounded by --max-n
        {"seed", -9.2e18, 9.2e18, true, true, true},
        {"top_logprobs", 0, 20, true, true, false},
        {"logprobs", 0, 5, true, false, true},   // completions: an integer; chat: a boolean
        {"lora_scale", 0, 4, false, true, true}, // an adapter model's scale (inferbox extension)
    };
    return fields;
}

namespace {

result<std::string> get_string(const json &body, const char *name, size_t max_bytes = 1u << 20) {
    return string_field(body, name, max_bytes);
}

result<bool> get_bool(const json &body, const char *name, bool def) {
    const json *v = json_field(body, name);
    if (v == nullptr) {
        return def;
    }
    if (!v->is_boolean()) {
        return error::invalid(std::string(name) + " must be a boolean, got " + type_name(*v), name);
    }
    return v->get<bool>();
}

// Reads the boolean `name` of `obj` into `out`, or `def` when it is absent.
std::optional<error> read_bool(const json &obj, const char *name, bool def, bool &out) {
    auto v = get_bool(obj, name, def);
    if (!v) {
        return v.err();
    }
    out = *v;
    return std::nullopt;
}

// What a field the body leaves out defaults to: the structs' member initializers (schema.h,
// engine/types.h), so a default is written in one place.
const api_request &request_defaults() {
    static const api_request defaults;
    return defaults;
}

// Validates every numeric field of the table that the body carries.
std::optional<error> check_numbers(api_kind kind, const json &body, const api_limits &limits) {
    for (const auto &f : numeric_fields()) {
        if (!(kind == api_kind::chat ? f.chat : f.completion)) {
            continue;
        }
        const json *v = json_field(body, f.name);
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
    const json *v = json_field(body, name);
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

// The JSON Schema keywords whose values json_schema_to_grammar turns into GBNF repetition
// counts; unbounded, they would expand into grammars too large to parse or to sample with.
constexpr const char *repetition_keywords[] = {"minItems",      "maxItems",      "minLength",   "maxLength",
                                               "minProperties", "maxProperties", "minContains", "maxContains"};

// Walks a schema (its depth is already bounded by the body's) and refuses repetition counts over
// the limit, including {m,n} counts inside "pattern" regexes. Values under enum/const/default/
// examples are data, not schema, and are not inspected.
std::optional<error> check_schema_bounds(const json &schema, const std::string &path, const std::string &param,
                                         const guided_limits &limits) {
    if (schema.is_array()) {
        for (size_t i = 0; i < schema.size(); ++i) {
            if (auto e = check_schema_bounds(schema[i], path + "/" + std::to_string(i), param, limits)) {
                return e;
            }
        }
        return std::nullopt;
    }
    if (!schema.is_object()) {
        return std::nullopt;
    }
    const auto too_big = [&](const std::string &what, double v) {
        return error::invalid(param + ": " + what + " " + fmt_num(v) + " at " + (path.empty() ? "/" : path) +
                                  " exceeds the limit of " + std::to_string(limits.max_repetition),
                              param);
    };
    for (const auto &[key, value] : schema.items()) {
        for (const char *kw : repetition_keywords) {
            if (key == kw && value.is_number() && value.get<double>() > limits.max_repetition) {
                return too_big(key, value.get<double>());
            }
        }
        if (key == "pattern" && value.is_string()) {
            const auto &pat = value.get_ref<const std::string &>();
            for (size_t i = 0; i < pat.size(); ++i) {
                if (pat[i] < '0' || pat[i] > '9' || i == 0 || (pat[i - 1] != '{' && pat[i - 1] != ',')) {
                    continue;
                }
                double v = 0;
                for (size_t j = i; j < pat.size() && pat[j] >= '0' && pat[j] <= '9' && v <= 1e12; ++j) {
                    v = v * 10 + (pat[j] - '0');
                }
                if (v > limits.max_repetition) {
                    return too_big("the pattern repetition count", v);
                }
            }
            // Validated as guided_regex is: llama.cpp's converter drops a pattern it cannot read
            // (the string then takes any value), which would ignore the client's constraint.
            if (auto g = regex_to_gbnf(pat, limits); !g) {
                return error::invalid(param + ": the pattern at " + path + "/pattern is not a usable regular " +
                                          "expression: " + g.err().message,
                                      param);
            }
        }
        if (key == "enum" || key == "const" || key == "default" || key == "examples") {
            continue;
        }
        if (auto e = check_schema_bounds(value, path + "/" + key, param, limits)) {
            return e;
        }
    }
    return std::nullopt;
}

// A schema given as an object, or (guided_json) as JSON text.
// Written back with its keys in the order the client sent them (`order`: the body's key order),
// since the grammar generates an object's properties in the schema's order. The size is checked
// before the walk over the schema; both are linear in the schema.
result<std::string> schema_text(const json &v, const std::string &param, const api_limits &limits,
                                const key_order *order) {
    json        from_text;
    key_order   text_order;
    const json *schema = &v;
    if (v.is_string()) {
        const auto &s = v.get_ref<const std::string &>();
        if (s.size() > limits.guided.max_schema_bytes) {
            return error::invalid(param + " is " + std::to_string(s.size()) + " bytes; the limit is " +
                                      std::to_string(limits.guided.max_schema_bytes),
                                  param);
        }
        auto p = parse_json_body(s, limits.max_json_depth, &text_order);
        if (!p) {
            return error::invalid(param + " is a string but not a JSON object: " + p.err().message, param);
        }
        from_text = std::move(*p);
        schema    = &from_text;
        order     = &text_order;
    } else if (!v.is_object()) {
        return error::invalid(param + " must be a JSON Schema object, got " + type_name(v), param);
    }
    std::string text = dump_in_order(*schema, order);
    if (text.size() > limits.guided.max_schema_bytes) {
        return error::invalid(param + " is " + std::to_string(text.size()) + " bytes; the limit is " +
                                  std::to_string(limits.guided.max_schema_bytes),
                              param);
    }
    if (auto e = check_schema_bounds(*schema, "", param, limits.guided)) {
        return *e;
    }
    return text;
}

} // namespace

result<std::string> json_schema_text(const json &v, const std::string &param, const api_limits &limits,
                                     const key_order *order) {
    return schema_text(v, param, limits, order);
}

namespace {

result<output_constraint> parse_response_format(const json &rf, const api_limits &limits, const key_order *order) {
    output_constraint c;
    c.param = "response_format";
    if (!rf.is_object()) {
        return error::invalid("response_format must be an object, got " + type_name(rf), "response_format");
    }
    const json *type = json_field(rf, "type");
    if (type == nullptr || !type->is_string()) {
        return error::invalid("response_format.type must be one of \"text\", \"json_object\", \"json_schema\"",
                              "response_format.type");
    }
    const auto &t = type->get_ref<const std::string &>();
    if (t == "text") {
        return c;
    }
    if (t == "json_object") {
        c.kind = constraint_kind::json_object;
        return c;
    }
    if (t != "json_schema") {
        return error::invalid("response_format.type must be one of \"text\", \"json_object\", \"json_schema\"; got \"" +
                                  utf8_sanitize(t.substr(0, 64)) + "\"",
                              "response_format.type");
    }
    const json *js = json_field(rf, "json_schema");
    if (js == nullptr || !js->is_object()) {
        return error::invalid("response_format.json_schema must be an object {name, schema, strict}",
                              "response_format.json_schema");
    }
    if (const json *name = json_field(*js, "name");
        name != nullptr && (!name->is_string() || name->get_ref<const std::string &>().size() > 256)) {
        return error::invalid("response_format.json_schema.name must be a string of at most 256 bytes",
                              "response_format.json_schema.name");
    }
    if (const json *strict = json_field(*js, "strict"); strict != nullptr && !strict->is_boolean()) {
        return error::invalid("response_format.json_schema.strict must be a boolean",
                              "response_format.json_schema.strict");
    }
    const json *schema = json_field(*js, "schema");
    if (schema == nullptr || !schema->is_object()) {
        return error::invalid("response_format.json_schema.schema must be a JSON Schema object",
                              "response_format.json_schema.schema");
    }
    auto text = schema_text(*schema, "response_format.json_schema.schema", limits, order);
    if (!text) {
        return text.err();
    }
    c.kind   = constraint_kind::json_schema;
    c.param  = "response_format.json_schema.schema";
    c.schema = std::move(*text);
    return c;
}

// One guided_* field (vLLM / NIM), value non-null.
result<output_constraint> parse_guided(const std::string &name, const std::string &param, const json &v,
                                       const api_limits &limits, const key_order *order) {
    output_constraint c;
    c.param = param;
    if (name == "guided_json") {
        auto text = schema_text(v, param, limits, order);
        if (!text) {
            return text.err();
        }
        c.kind   = constraint_kind::json_schema;
        c.schema = std::move(*text);
        return c;
    }
    if (name == "guided_choice") {
        if (!v.is_array()) {
            return error::invalid(param + " must be an array of strings, got " + type_name(v), param);
        }
        if (v.size() > limits.guided.max_choices) {
            return error::invalid(param + " has " + std::to_string(v.size()) + " entries; the limit is " +
                                      std::to_string(limits.guided.max_choices),
                                  param);
        }
        std::vector<std::string> choices;
        for (const auto &x : v) {
            if (!x.is_string()) {
                return error::invalid(param + " must be an array of strings, got an element of type " + type_name(x),
                                      param);
            }
            choices.push_back(x.get<std::string>());
        }
        auto g = choice_to_gbnf(choices, limits.guided);
        if (!g) {
            return error::invalid(param + ": " + g.err().message, param);
        }
        c.kind = constraint_kind::choice;
        c.gbnf = std::move(*g);
        return c;
    }
    if (!v.is_string()) {
        return error::invalid(param + " must be a string, got " + type_name(v), param);
    }
    const auto &text = v.get_ref<const std::string &>();
    if (name == "guided_regex") {
        auto g = regex_to_gbnf(text, limits.guided);
        if (!g) {
            return error::invalid(param + ": " + g.err().message, param);
        }
        c.kind = constraint_kind::regex;
        c.gbnf = std::move(*g);
        return c;
    }
    if (auto problem = gbnf_shape_error(text, limits.guided); !problem.empty()) {
        return error::invalid(param + " is not a usable GBNF grammar: " + problem, param);
    }
    c.kind = constraint_kind::grammar;
    c.gbnf = text;
    return c;
}

bool valid_tool_name(const std::string &name) {
    if (name.empty() || name.size() > 64) {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
}

// tools, tool_choice, parallel_tool_calls (chat).
std::optional<error> parse_tools(const json &body, const api_limits &limits, const key_order *order, api_request &r) {
    if (const json *tools = json_field(body, "tools")) {
        if (!tools->is_array()) {
            return error::invalid(
                "tools must be an array of {type: \"function\", function: {...}}, got " + type_name(*tools), "tools");
        }
        if (tools->size() > static_cast<size_t>(limits.max_tools)) {
            return error::invalid("tools has " + std::to_string(tools->size()) + " entries; the limit is " +
                                      std::to_string(limits.max_tools),
                                  "tools");
        }
        for (size_t i = 0; i < tools->size(); ++i) {
            const auto       &t     = (*tools)[i];
            const std::string param = "tools[" + std::to_string(i) + "]";
            const json       *type  = t.is_object() ? json_field(t, "type") : nullptr;
            if (type == nullptr || !type->is_string() || type->get_ref<const std::string &>() != "function") {
                return error::invalid(param + " must be an object with type \"function\"", param + ".type");
            }
            const json *fn = json_field(t, "function");
            if (fn == nullptr || !fn->is_object()) {
                return error::invalid(param + ".function must be an object {name, description, parameters}",
                                      param + ".function");
            }
            chat_tool   tool;
            const json *name = json_field(*fn, "name");
            if (name == nullptr || !name->is_string() || !valid_tool_name(name->get<std::string>())) {
                return error::invalid(param + ".function.name must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -",
                                      param + ".function.name");
            }
            tool.name = name->get<std::string>();
            for (const auto &other : r.tools) {
                if (other.name == tool.name) {
                    return error::invalid("tools has two functions named \"" + tool.name + "\"",
                                          param + ".function.name");
                }
            }
            if (const json *d = json_field(*fn, "description")) {
                if (!d->is_string()) {
                    return error::invalid(param + ".function.description must be a string",
                                          param + ".function.description");
                }
                tool.description = d->get<std::string>();
            }
            if (const json *strict = json_field(*fn, "strict"); strict != nullptr && !strict->is_boolean()) {
                return error::invalid(param + ".function.strict must be a boolean", param + ".function.strict");
            }
            if (const json *params = json_field(*fn, "parameters")) {
                if (!params->is_object()) {
                    return error::invalid(param + ".function.parameters must be a JSON Schema object",
                                          param + ".function.parameters");
                }
                auto text = schema_text(*params, param + ".function.parameters", limits, order);
                if (!text) {
                    return text.err();
                }
                tool.parameters = std::move(*text);
            }
            r.tools.push_back(std::move(tool));
        }
    }
    if (auto e =
            read_bool(body, "parallel_tool_calls", request_defaults().parallel_tool_calls, r.parallel_tool_calls)) {
        return e;
    }
    const json *tc = json_field(body, "tool_choice");
    if (tc == nullptr) {
        return std::nullopt;
    }
    if (tc->is_string()) {
        const auto &c = tc->get_ref<const std::string &>();
        if (c == "none") {
            r.choice = tool_choice::none;
        } else if (c == "auto") {
            r.choice = tool_choice::automatic;
        } else if (c == "required") {
            r.choice = tool_choice::required;
        } else {
            return error::invalid("tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                                  "\"function\": {\"name\": ...}}; got \"" +
                                      utf8_sanitize(c.substr(0, 64)) + "\"",
                                  "tool_choice");
        }
        if (r.choice != tool_choice::none && r.tools.empty()) {
            return error::invalid("tool_choice \"" + c + "\" needs tools", "tool_choice");
        }
        return std::nullopt;
    }
    const json *type = tc->is_object() ? json_field(*tc, "type") : nullptr;
    const json *fn   = tc->is_object() ? json_field(*tc, "function") : nullptr;
    const json *name = fn != nullptr && fn->is_object() ? json_field(*fn, "name") : nullptr;
    if (type == nullptr || !type->is_string() || type->get_ref<const std::string &>() != "function" ||
        name == nullptr || !name->is_string()) {
        return error::invalid("tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                              "\"function\": {\"name\": ...}}",
                              "tool_choice");
    }
    const auto &wanted = name->get_ref<const std::string &>();
    for (const auto &t : r.tools) {
        if (t.name == wanted) {
            const chat_tool only = t;
            r.tools              = {only};
            r.choice             = tool_choice::required;
            return std::nullopt;
        }
    }
    return error::invalid("tool_choice names the function \"" + utf8_sanitize(wanted.substr(0, 64)) +
                              "\", which is not among tools",
                          "tool_choice.function.name");
}

// An assistant message's tool_calls: [{id, type: "function", function: {name, arguments}}].
result<std::vector<chat_tool_call>> message_tool_calls(const json &v, const std::string &param) {
    if (!v.is_array()) {
        return error::invalid(param + " must be an array, got " + type_name(v), param);
    }
    if (v.size() > 128) {
        return error::invalid(param + " has " + std::to_string(v.size()) + " entries; the limit is 128", param);
    }
    std::vector<chat_tool_call> calls;
    for (size_t k = 0; k < v.size(); ++k) {
        const auto       &c  = v[k];
        const std::string p  = param + "[" + std::to_string(k) + "]";
        const json       *id = c.is_object() ? json_field(c, "id") : nullptr;
        const json       *fn = c.is_object() ? json_field(c, "function") : nullptr;
        if (id == nullptr || !id->is_string() || fn == nullptr || !fn->is_object()) {
            return error::invalid(p + " must be {id, type: \"function\", function: {name, arguments}}", p);
        }
        const json *name = json_field(*fn, "name");
        const json *args = json_field(*fn, "arguments");
        if (name == nullptr || !name->is_string() || (args != nullptr && !args->is_string())) {
            return error::invalid(p + ".function needs a string name and string arguments (JSON text)",
                                  p + ".function");
        }
        calls.push_back({id->get<std::string>(), name->get<std::string>(),
                         args == nullptr ? std::string("{}") : args->get<std::string>()});
    }
    return calls;
}

// The field a constraint's param belongs to, as errors name it: "response_format" for any of
// its parts, else the param itself ("guided_regex", "nvext.guided_json", ...).
std::string constraint_field(const std::string &param) {
    return param.rfind("response_format", 0) == 0 ? std::string("response_format") : param;
}

// Collects every constraint the body carries and refuses more than one.
result<output_constraint> parse_constraint(const json &body, const api_limits &limits, const key_order *order) {
    output_constraint chosen;
    const auto        take = [&](output_constraint c) -> std::optional<error> {
        if (c.kind == constraint_kind::none) {
            return std::nullopt;
        }
        if (chosen.kind != constraint_kind::none) {
            const std::string first  = constraint_field(chosen.param);
            const std::string second = constraint_field(c.param);
            return error::invalid(first + " and " + second +
                                             " both constrain the output; send at most one of response_format, guided_json, "
                                                    "guided_regex, guided_choice, guided_grammar (top level or under nvext)",
                                         second);
        }
        chosen = std::move(c);
        return std::nullopt;
    };
    if (const json *rf = json_field(body, "response_format")) {
        auto c = parse_response_format(*rf, limits, order);
        if (!c) {
            return c.err();
        }
        if (auto e = take(std::move(*c))) {
            return *e;
        }
    }
    static const char *const guided_names[] = {"guided_json", "guided_regex", "guided_choice", "guided_grammar"};
    const json              *nvext          = json_field(body, "nvext");
    if (nvext != nullptr && !nvext->is_object()) {
        return error::invalid("nvext must be an object, got " + type_name(*nvext), "nvext");
    }
    for (const json *scope : {&body, nvext}) {
        if (scope == nullptr) {
            continue;
        }
        for (const char *name : guided_names) {
            const json *v = json_field(*scope, name);
            if (v == nullptr) {
                continue;
            }
            const std::string param = scope == nvext ? std::string("nvext.") + name : std::string(name);
            auto              c     = parse_guided(name, param, *v, limits, order);
            if (!c) {
                return c.err();
            }
            if (auto e = take(std::move(*c))) {
                return *e;
            }
        }
    }
    return chosen;
}

// model, user, stream, stream_options, ignore_eos and speculative, checked in that order.
std::optional<error> parse_options(const json &body, api_request &r) {
    const api_request &d     = request_defaults();
    auto               model = model_field(body);
    if (!model) {
        return model.err();
    }
    r.model   = *model;
    auto user = get_string(body, "user", 1024);
    if (!user) {
        return user.err();
    }
    r.user = *user;
    if (auto e = read_bool(body, "stream", d.stream, r.stream)) {
        return e;
    }
    if (const json *so = json_field(body, "stream_options")) {
        if (!so->is_object()) {
            return error::invalid("stream_options must be an object, got " + type_name(*so), "stream_options");
        }
        auto iu = get_bool(*so, "include_usage", d.include_usage);
        if (!iu) {
            return error::invalid("stream_options.include_usage must be a boolean", "stream_options.include_usage");
        }
        r.include_usage = *iu;
    }
    if (auto e = read_bool(body, "ignore_eos", d.sampling.ignore_eos, r.sampling.ignore_eos)) {
        return e;
    }
    return read_bool(body, "speculative", d.speculative, r.speculative);
}

// nvext.placement and nvext.timeout_ms. An nvext that is not an object is refused later, by
// parse_constraint.
std::optional<error> parse_nvext_routing(const json &body, api_request &r) {
    const json *nvext = json_field(body, "nvext");
    if (nvext == nullptr || !nvext->is_object()) {
        return std::nullopt;
    }
    if (const json *pl = json_field(*nvext, "placement")) {
        if (!pl->is_string()) {
            return error::invalid("nvext.placement must be a string, got " + type_name(*pl), "nvext.placement");
        }
        auto pin = parse_placement(pl->get_ref<const std::string &>(), "nvext.placement");
        if (!pin) {
            return pin.err();
        }
        r.placement = *pin;
    }
    if (const json *t = json_field(*nvext, "timeout_ms")) {
        if (!t->is_number_integer() || t->get<int64_t>() < 1 || t->get<int64_t>() > 3'600'000) {
            return error::invalid("nvext.timeout_ms must be an integer from 1 to 3600000 (milliseconds)",
                                  "nvext.timeout_ms");
        }
        r.timeout = std::chrono::milliseconds(t->get<int64_t>());
    }
    return std::nullopt;
}

struct float_sampling_field {
    const char *name;
    float sampling_params::*member;
};

// The float sampling fields, taken as they are (check_numbers has bounded them).
constexpr float_sampling_field float_sampling_fields[] = {
    {"temperature", &sampling_params::temperature},
    {"top_p", &sampling_params::top_p},
    {"min_p", &sampling_params::min_p},
    {"presence_penalty", &sampling_params::presence_penalty},
    {"frequency_penalty", &sampling_params::frequency_penalty},
    {"repetition_penalty", &sampling_params::repetition_penalty},
};

// The numeric sampling fields and seed; absent ones keep sampling_params' defaults. Never fails.
void parse_sampling(const json &body, sampling_params &s) {
    const sampling_params &d = request_defaults().sampling;
    for (const auto &f : float_sampling_fields) {
        s.*f.member = num<float>(body, f.name, d.*f.member);
    }
    s.top_k = num<int32_t>(body, "top_k", d.top_k);
    if (const json *seed = json_field(body, "seed")) {
        // Any 64-bit seed is accepted; the sampler uses its low 32 bits.
        s.seed = static_cast<uint32_t>(static_cast<uint64_t>(seed->get<int64_t>()) & 0xFFFFFFFFu);
    }
}

// lora_scale, n (bounded by --max-n), best_of, and max_completion_tokens or max_tokens.
std::optional<error> parse_counts(const json &body, const api_limits &limits, api_request &r) {
    if (const json *ls = json_field(body, "lora_scale")) {
        r.lora_scale = static_cast<float>(ls->get<double>());
    }
    r.n = num<int32_t>(body, "n", request_defaults().n);
    if (r.n > limits.max_n) {
        return error::invalid(
            "n must be between 1 and " + std::to_string(limits.max_n) + ", got " + std::to_string(r.n), "n");
    }
    // best_of (legacy completions; vLLM takes it on chat too) generates best_of candidates and
    // returns the n most likely. inferbox does not rank candidates, so only best_of = n (what
    // the client would get anyway) is accepted; anything else would silently change the answer.
    if (const json *bo = json_field(body, "best_of")) {
        if (!bo->is_number_integer() || bo->get<int64_t>() != r.n) {
            return error::invalid("best_of " + (bo->is_number() ? fmt_num(bo->get<double>()) : type_name(*bo)) +
                                      " is not supported: inferbox does not rank extra candidates; leave best_of "
                                      "out or set it equal to n (" +
                                      std::to_string(r.n) + ")",
                                  "best_of", "unsupported_parameter");
        }
    }
    if (const json *mt = json_field(body, "max_completion_tokens")) {
        r.max_tokens       = static_cast<int32_t>(mt->get<double>());
        r.max_tokens_param = "max_completion_tokens";
    } else if (const json *mt2 = json_field(body, "max_tokens")) {
        r.max_tokens = static_cast<int32_t>(mt2->get<double>());
    }
    return std::nullopt;
}

std::optional<error> parse_logit_bias(const json &body, const api_limits &limits, sampling_params &s) {
    const json *lb = json_field(body, "logit_bias");
    if (lb == nullptr) {
        return std::nullopt;
    }
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
            return error::invalid("logit_bias keys must be token ids, got \"" + utf8_sanitize(k) + "\"", "logit_bias");
        }
        if (!v.is_number() || v.get<double>() < -100 || v.get<double>() > 100) {
            return error::invalid("logit_bias values must be numbers between -100 and 100", "logit_bias");
        }
        s.logit_bias.emplace_back(static_cast<token_id>(id), v.get<float>());
    }
    return std::nullopt;
}

// stop: a string or an array of strings, within the count and size limits; empty ones are dropped.
std::optional<error> parse_stop(const json &body, const api_limits &limits, std::vector<std::string> &out) {
    const json *stop = json_field(body, "stop");
    if (stop == nullptr) {
        return std::nullopt;
    }
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
            out.push_back(x);
        }
    }
    return std::nullopt;
}

// messages[i]: {role, content}, with tool_call_id on a tool message and tool_calls only on an
// assistant one. "developer" is taken as "system".
result<chat_message> parse_message(const json &m, size_t i) {
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) {
        return error::invalid(param + " must be an object, got " + type_name(m), param);
    }
    auto role_it = m.find("role");
    if (role_it == m.end() || !role_it->is_string()) {
        return error::invalid(param + ".role must be a string", param + ".role");
    }
    const auto &role = role_it->get_ref<const std::string &>();
    if (role != "system" && role != "user" && role != "assistant" && role != "developer" && role != "tool") {
        return error::invalid(param + ".role must be one of system, developer, user, assistant, tool; got \"" +
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
    chat_message msg;
    msg.role    = role == "developer" ? "system" : role;
    msg.content = std::move(*content);
    if (role == "tool") {
        const json *id = json_field(m, "tool_call_id");
        if (id == nullptr || !id->is_string()) {
            return error::invalid(param + ".tool_call_id is required for a tool message (a string)",
                                  param + ".tool_call_id");
        }
        msg.tool_call_id = id->get<std::string>();
    }
    if (const json *calls = json_field(m, "tool_calls")) {
        if (role != "assistant") {
            return error::invalid(param + ".tool_calls is only allowed on assistant messages", param + ".tool_calls");
        }
        auto parsed = message_tool_calls(*calls, param + ".tool_calls");
        if (!parsed) {
            return parsed.err();
        }
        msg.tool_calls = std::move(*parsed);
    }
    return msg;
}

// continue_final_message and add_generation_prompt (vLLM's names). Either the model starts a new
// assistant turn after the messages (the default: add_generation_prompt true), or it continues
// the final assistant message (continue_final_message true, add_generation_prompt false or left
// out). add_generation_prompt false alone would render the conversation with no assistant turn
// to write into, which inferbox does not do: refused rather than ignored.
std::optional<error> parse_continuation(const json &body, api_request &r) {
    bool add_generation_prompt = true;
    if (auto e = read_bool(body, "continue_final_message", request_defaults().continue_final_message,
                           r.continue_final_message)) {
        return e;
    }
    const bool given = json_field(body, "add_generation_prompt") != nullptr;
    if (auto e = read_bool(body, "add_generation_prompt", true, add_generation_prompt)) {
        return e;
    }
    if (!r.continue_final_message) {
        if (!add_generation_prompt) {
            return error::invalid("add_generation_prompt false is supported only with continue_final_message true "
                                  "(the final assistant message is continued); leave it out otherwise",
                                  "add_generation_prompt", "unsupported_parameter");
        }
        return std::nullopt;
    }
    if (given && add_generation_prompt) {
        return error::invalid("continue_final_message and add_generation_prompt cannot both be true: the model "
                              "either continues the final message or starts a new one",
                              "add_generation_prompt");
    }
    const chat_message &last  = r.messages.back(); // parse_chat refuses an empty list first
    const std::string   param = "messages[" + std::to_string(r.messages.size() - 1) + "]";
    if (last.role != "assistant") {
        return error::invalid("continue_final_message needs an assistant message last; " + param + " is a " +
                                  last.role + " message",
                              param + ".role");
    }
    if (!last.tool_calls.empty()) {
        return error::invalid("continue_final_message continues the final message's text; " + param +
                                  " has tool_calls, which cannot be continued",
                              param + ".tool_calls");
    }
    return std::nullopt;
}

// The chat-only fields: logprobs (a boolean here), messages and tools. Runs after the output
// constraint is parsed, since active tools exclude one.
std::optional<error> parse_chat(const json &body, const api_limits &limits, const key_order *order, api_request &r) {
    auto lp = get_bool(body, "logprobs", false);
    if (!lp) {
        return lp.err();
    }
    if (*lp) {
        r.sampling.top_logprobs = num<int32_t>(body, "top_logprobs", 0);
    } else if (json_field(body, "top_logprobs") != nullptr) {
        return error::invalid("top_logprobs requires logprobs to be true", "top_logprobs");
    }
    const json *msgs = json_field(body, "messages");
    if (msgs == nullptr || !msgs->is_array() || msgs->empty()) {
        return error::invalid("messages must be a non-empty array of {role, content} objects", "messages");
    }
    if (auto e = parse_tools(body, limits, order, r)) {
        return e;
    }
    if (r.tools_active() && r.constraint.kind != constraint_kind::none) {
        const std::string field = constraint_field(r.constraint.param);
        return error::invalid(field + " cannot be combined with tools; set tool_choice to \"none\" or drop one", field);
    }
    if (msgs->size() > static_cast<size_t>(limits.max_messages)) {
        return error::invalid("messages has " + std::to_string(msgs->size()) + " entries; the limit is " +
                                  std::to_string(limits.max_messages),
                              "messages");
    }
    for (size_t i = 0; i < msgs->size(); ++i) {
        auto msg = parse_message((*msgs)[i], i);
        if (!msg) {
            return msg.err();
        }
        r.messages.push_back(std::move(*msg));
    }
    return parse_continuation(body, r);
}

// prompt: a string, an array of token ids, or an array (at most max_prompts) of either.
result<std::vector<prompt_input>> parse_prompts(const json &body, const api_limits &limits) {
    std::vector<prompt_input> prompts;
    const json               *prmt = json_field(body, "prompt");
    if (prmt == nullptr) {
        return error::invalid("prompt is required: a string, an array of strings, or token ids", "prompt");
    }
    if (prmt->is_string()) {
        prompts.emplace_back(prmt->get<std::string>());
    } else if (prmt->is_array() && !prmt->empty() && (*prmt)[0].is_number()) {
        auto toks = token_array(*prmt, "prompt");
        if (!toks) {
            return toks.err();
        }
        prompts.emplace_back(std::move(*toks));
    } else if (prmt->is_array() && !prmt->empty()) {
        if (prmt->size() > static_cast<size_t>(limits.max_prompts)) {
            return error::invalid("prompt has " + std::to_string(prmt->size()) + " entries; the limit is " +
                                      std::to_string(limits.max_prompts),
                                  "prompt");
        }
        for (const auto &p : *prmt) {
            if (p.is_string()) {
                prompts.emplace_back(p.get<std::string>());
            } else if (p.is_array()) {
                auto toks = token_array(p, "prompt");
                if (!toks) {
                    return toks.err();
                }
                prompts.emplace_back(std::move(*toks));
            } else {
                return error::invalid("prompt arrays must hold strings or token-id arrays, got " + type_name(p),
                                      "prompt");
            }
        }
    } else {
        return error::invalid(
            "prompt must be a non-empty string, array of strings, or token ids; got " + type_name(*prmt), "prompt");
    }
    return prompts;
}

// The completions-only fields: logprobs (an integer here), echo and prompt; prompts × n choices
// are bounded by --max-n.
std::optional<error> parse_completion(const json &body, const api_limits &limits, api_request &r) {
    if (const json *lp = json_field(body, "logprobs")) {
        r.sampling.top_logprobs = static_cast<int32_t>(lp->get<double>());
    }
    if (auto e = read_bool(body, "echo", request_defaults().echo, r.echo)) {
        return e;
    }
    auto prompts = parse_prompts(body, limits);
    if (!prompts) {
        return prompts.err();
    }
    r.prompts = std::move(*prompts);
    if (static_cast<int64_t>(r.prompts.size()) * r.n > limits.max_n) {
        return error::invalid("prompts × n = " + std::to_string(r.prompts.size() * r.n) + " choices; the limit is " +
                                  std::to_string(limits.max_n),
                              "n");
    }
    return std::nullopt;
}

} // namespace

result<api_request> parse_request(api_kind kind, const json &body, const api_limits &limits, const key_order *order) {
    api_request r;
    r.kind = kind;
    if (auto e = check_numbers(kind, body, limits)) {
        return *e;
    }
    if (auto e = parse_options(body, r)) {
        return *e;
    }
    if (auto e = parse_nvext_routing(body, r)) {
        return *e;
    }
    parse_sampling(body, r.sampling);
    if (auto e = parse_counts(body, limits, r)) {
        return *e;
    }
    if (auto e = parse_logit_bias(body, limits, r.sampling)) {
        return *e;
    }
    if (auto e = parse_stop(body, limits, r.stop)) {
        return *e;
    }
    auto constraint = parse_constraint(body, limits, order);
    if (!constraint) {
        return constraint.err();
    }
    r.constraint = std::move(*constraint);
    if (auto e = kind == api_kind::chat ? parse_chat(body, limits, order, r) : parse_completion(body, limits, r)) {
        return *e;
    }
    return r;
}

} // namespace inferbox

namespace inferbox {

namespace {

// ordered_json: a JSON Schema's property order is the order the remote model generates in.
using ojson = nlohmann::ordered_json;

ojson messages_json(const std::vector<chat_message> &messages) {
    ojson out = ojson::array();
    for (const auto &m : messages) {
        ojson msg = {{"role", m.role}, {"content", m.content}};
        if (!m.tool_calls.empty()) {
            ojson calls = ojson::array();
            for (const auto &tc : m.tool_calls) {
                calls.push_back({{"id", tc.id},
                                 {"type", "function"},
                                 {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
            }
            msg["tool_calls"] = std::move(calls);
        }
        if (!m.tool_call_id.empty()) {
            msg["tool_call_id"] = m.tool_call_id;
        }
        out.push_back(std::move(msg));
    }
    return out;
}

// messages, then tools, tool_choice and parallel_tool_calls when tools are offered.
void add_chat_fields(const api_request &r, ojson &body) {
    body["messages"] = messages_json(r.messages);
    if (r.continue_final_message) {
        // Both fields, as vLLM wants them (it refuses continue_final_message with its default
        // add_generation_prompt true); servers without them (llama-server) ignore both.
        body["continue_final_message"] = true;
        body["add_generation_prompt"]  = false;
    }
    if (r.tools.empty()) {
        return;
    }
    ojson tools = ojson::array();
    for (const auto &t : r.tools) {
        ojson fn = {{"name", t.name}};
        if (!t.description.empty()) {
            fn["description"] = t.description;
        }
        if (!t.parameters.empty()) {
            fn["parameters"] = ojson::parse(t.parameters); // the schema's own serialization
        }
        tools.push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
    body["tools"] = std::move(tools);
    // A named tool_choice was narrowed to that one tool under "required": the same promise.
    body["tool_choice"] = r.choice == tool_choice::none       ? "none"
                          : r.choice == tool_choice::required ? "required"
                                                              : "auto";
    if (!r.parallel_tool_calls) {
        body["parallel_tool_calls"] = false;
    }
}

// prompt (one prompt as itself, several as an array), then echo when set.
void add_completion_fields(const api_request &r, ojson &body) {
    ojson prompts = ojson::array();
    for (const auto &p : r.prompts) {
        if (const auto *s = std::get_if<std::string>(&p)) {
            prompts.push_back(*s);
        } else {
            prompts.push_back(std::get<std::vector<token_id>>(p));
        }
    }
    body["prompt"] = prompts.size() == 1 ? prompts.front() : prompts;
    if (r.echo) {
        body["echo"] = true;
    }
}

// temperature and top_p always; extensions (vLLM, llama-server, inferbox) only when set, since
// OpenAI itself refuses unknown fields; then logit_bias and logprobs in the endpoint's form.
void add_sampling_fields(const api_request &r, ojson &body) {
    const auto &s       = r.sampling;
    body["temperature"] = s.temperature;
    body["top_p"]       = s.top_p;
    if (s.top_k != 0) {
        body["top_k"] = s.top_k;
    }
    if (s.min_p != 0.0f) {
        body["min_p"] = s.min_p;
    }
    if (s.repetition_penalty != 1.0f) {
        body["repetition_penalty"] = s.repetition_penalty;
    }
    if (s.ignore_eos) {
        body["ignore_eos"] = true;
    }
    if (s.presence_penalty != 0.0f) {
        body["presence_penalty"] = s.presence_penalty;
    }
    if (s.frequency_penalty != 0.0f) {
        body["frequency_penalty"] = s.frequency_penalty;
    }
    if (s.seed) {
        body["seed"] = *s.seed;
    }
    if (!s.logit_bias.empty()) {
        ojson lb = ojson::object();
        for (const auto &[tok, bias] : s.logit_bias) {
            lb[std::to_string(tok)] = bias;
        }
        body["logit_bias"] = std::move(lb);
    }
    if (s.top_logprobs >= 0) {
        if (r.kind == api_kind::chat) {
            body["logprobs"]     = true;
            body["top_logprobs"] = s.top_logprobs;
        } else {
            body["logprobs"] = s.top_logprobs;
        }
    }
}

void add_constraint(const output_constraint &c, ojson &body) {
    switch (c.kind) {
    case constraint_kind::none:
        break;
    case constraint_kind::json_object:
        body["response_format"] = {{"type", "json_object"}};
        break;
    case constraint_kind::json_schema:
        body["response_format"] = {
            {"type", "json_schema"},
            {"json_schema", {{"name", "response"}, {"schema", ojson::parse(c.schema)}, {"strict", true}}}};
        break;
    case constraint_kind::regex:
    case constraint_kind::choice:
    case constraint_kind::grammar:
        // Already GBNF: NIM's and inferbox's guided_grammar take it as it is.
        body["nvext"] = {{"guided_grammar", c.gbnf}};
        break;
    }
}

} // namespace

std::string request_to_json(const api_request &r, const std::string &model) {
    ojson body = {{"model", model}};
    if (r.kind == api_kind::chat) {
        add_chat_fields(r, body);
    } else {
        add_completion_fields(r, body);
    }
    if (r.max_tokens) {
        body["max_tokens"] = *r.max_tokens;
    }
    if (r.n != 1) {
        body["n"] = r.n;
    }
    if (!r.stop.empty()) {
        body["stop"] = r.stop;
    }
    if (!r.user.empty()) {
        body["user"] = r.user;
    }
    add_sampling_fields(r, body);
    add_constraint(r.constraint, body);
    body["stream"]         = true;
    body["stream_options"] = {{"include_usage", true}};
    return body.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

} // namespace inferbox

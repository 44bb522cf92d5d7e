#include "api/responses.h"

#include "agent/extract.h"
#include "agent/team.h"
#include "api/errors.h"
#include "api/json_fields.h"
#include "api/vector_stores.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <tuple>
#include <utility>

namespace inferbox {

using json = nlohmann::json;

namespace {

error bad(const std::string &message, const std::string &param) {
    return error::invalid(message, param);
}

// Gives `to` (a copy of `from`) the key order `from` has in `order`.
void copy_order(const json &from, const json &to, const key_order &order, key_order &out) {
    if (from.is_array() && to.is_array() && from.size() == to.size()) {
        for (size_t i = 0; i < from.size(); ++i) {
            copy_order(from[i], to[i], order, out);
        }
        return;
    }
    if (!from.is_object() || !to.is_object()) {
        return;
    }
    const auto &src = from.get_ref<const json::object_t &>();
    const auto &dst = to.get_ref<const json::object_t &>();
    if (auto it = order.find(&src); it != order.end()) {
        auto &keys = out[&dst];
        for (const std::string *k : it->second) {
            if (auto d = dst.find(*k); d != dst.end()) {
                keys.push_back(&d->first);
            }
        }
    }
    for (const auto &[k, v] : src) {
        if (auto d = dst.find(k); d != dst.end()) {
            copy_order(v, d->second, order, out);
        }
    }
}

// A message's content: a string, or parts of type input_text / output_text / text (their text
// joined). Other part types (images, files) are refused by name.
result<std::string> content_text(const json &content, const std::string &param) {
    if (content.is_string()) {
        return content.get<std::string>();
    }
    if (!content.is_array()) {
        return bad(param + " must be a string or an array of input_text parts", param);
    }
    std::string text;
    for (size_t k = 0; k < content.size(); ++k) {
        const auto       &part = content[k];
        const std::string p    = param + "[" + std::to_string(k) + "]";
        const json       *type = part.is_object() ? json_field(part, "type") : nullptr;
        const std::string t    = type != nullptr && type->is_string() ? type->get<std::string>() : "";
        if (t != "input_text" && t != "output_text" && t != "text") {
            return bad(p + ".type must be \"input_text\" (this server reads text only), got " +
                           (t.empty() ? std::string("none") : "\"" + t.substr(0, 64) + "\""),
                       p + ".type");
        }
        const json *s = json_field(part, "text");
        if (s == nullptr || !s->is_string()) {
            return bad(p + ".text must be a string", p + ".text");
        }
        text += s->get_ref<const std::string &>();
    }
    return text;
}

// input (a string or a list of items) -> chat messages, after the instructions.
std::optional<error> convert_input(const json &body, json &messages) {
    if (const json *ins = json_field(body, "instructions")) {
        if (!ins->is_string()) {
            return bad("instructions must be a string", "instructions");
        }
        messages.push_back({{"role", "system"}, {"content", *ins}});
    }
    const json *input = json_field(body, "input");
    if (input == nullptr) {
        return bad("input is required: a string or an array of input items", "input");
    }
    if (input->is_string()) {
        messages.push_back({{"role", "user"}, {"content", *input}});
        return std::nullopt;
    }
    if (!input->is_array() || input->empty()) {
        return bad("input must be a string or a non-empty array of input items", "input");
    }
    for (size_t i = 0; i < input->size(); ++i) {
        const auto       &item  = (*input)[i];
        const std::string param = "input[" + std::to_string(i) + "]";
        if (!item.is_object()) {
            return bad(param + " must be an object", param);
        }
        const json       *type = json_field(item, "type");
        const std::string t    = type != nullptr && type->is_string() ? type->get<std::string>() : "message";
        if (t == "message") {
            const json *role = json_field(item, "role");
            if (role == nullptr || !role->is_string()) {
                return bad(param + ".role must be \"user\", \"assistant\", \"system\" or \"developer\"",
                           param + ".role");
            }
            const json *content = json_field(item, "content");
            if (content == nullptr) {
                return bad(param + ".content is required", param + ".content");
            }
            auto text = content_text(*content, param + ".content");
            if (!text) {
                return text.err();
            }
            messages.push_back({{"role", *role}, {"content", std::move(*text)}});
        } else if (t == "function_call") {
            const json *call_id = json_field(item, "call_id");
            const json *name    = json_field(item, "name");
            const json *args    = json_field(item, "arguments");
            if (call_id == nullptr || !call_id->is_string() || name == nullptr || !name->is_string() ||
                args == nullptr || !args->is_string()) {
                return bad(param + " (function_call) needs string call_id, name and arguments", param);
            }
            json call = {{"id", *call_id}, {"type", "function"}, {"function", {{"name", *name}, {"arguments", *args}}}};
            // Consecutive calls are one assistant turn.
            if (!messages.empty() && messages.back()["role"] == "assistant" && messages.back().contains("tool_calls")) {
                messages.back()["tool_calls"].push_back(std::move(call));
            } else {
                messages.push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", json::array({call})}});
            }
        } else if (t == "function_call_output") {
            const json *call_id = json_field(item, "call_id");
            const json *output  = json_field(item, "output");
            if (call_id == nullptr || !call_id->is_string()) {
                return bad(param + ".call_id must be a string", param + ".call_id");
            }
            if (output == nullptr) {
                return bad(param + ".output is required", param + ".output");
            }
            auto text = content_text(*output, param + ".output");
            if (!text) {
                return text.err();
            }
            messages.push_back({{"role", "tool"}, {"tool_call_id", *call_id}, {"content", std::move(*text)}});
        } else if (t == "file_search_call") {
            // An earlier run's search: its results were the model's then, and are not replayed
            // (OpenAI's item holds them only when `include` asked for them).
            continue;
        } else if (t == "sql_call" || t == "mcp_call" || t == "team_member_call" || t == "extract_call") {
            // A built-in call of an earlier run (previous_response_id, or sent back by the client):
            // the model sees the call and what it returned, as the loop showed it then. A team
            // member's own calls (parent_id) were the member's, never the captain's.
            if (const json *parent = json_field(item, "parent_id"); parent != nullptr && !parent->is_null()) {
                continue;
            }
            const json *id     = json_field(item, "id");
            const json *name   = json_field(item, "name");
            const json *args   = json_field(item, "arguments");
            const json *output = json_field(item, "output");
            const json *err    = json_field(item, "error");
            if (id == nullptr || !id->is_string() || name == nullptr || !name->is_string() || args == nullptr ||
                !args->is_string()) {
                return bad(param + " (" + t + ") needs string id, name and arguments", param);
            }
            json call = {{"id", *id}, {"type", "function"}, {"function", {{"name", *name}, {"arguments", *args}}}};
            messages.push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", json::array({call})}});
            const bool  failed = err != nullptr && err->is_string();
            std::string result = failed                                     ? "error: " + err->get<std::string>()
                                 : output != nullptr && output->is_string() ? output->get<std::string>()
                                                                            : std::string();
            messages.push_back({{"role", "tool"}, {"tool_call_id", *id}, {"content", std::move(result)}});
        } else {
            return bad(param + ".type \"" + t.substr(0, 64) +
                           "\" is not supported; input items are messages, function_call, function_call_output, "
                           "sql_call, mcp_call, team_member_call, extract_call and file_search_call",
                       param + ".type");
        }
    }
    return std::nullopt;
}

// A {type: "file_search", vector_store_ids, max_num_results, filters, ranking_options} tool
// (filters and ranking_options as a store search takes them, api/vector_stores.h): the ids are
// checked to be the caller's stores when the tools are resolved (api/routes.cpp).
std::optional<error> read_file_search_tool(const json &t, const std::string &param,
                                           std::vector<builtin_tool_use> &builtin) {
    const json *ids = json_field(t, "vector_store_ids");
    if (ids == nullptr || !ids->is_array() || ids->empty() || ids->size() > 2) {
        return bad(param + ".vector_store_ids must be an array of 1 or 2 vector store ids",
                   param + ".vector_store_ids");
    }
    // `allowed` carries the store ids; a file_search has no server.
    builtin_tool_use use{"file_search", "", {}, 10};
    for (const auto &id : *ids) {
        if (!id.is_string() || id.get_ref<const std::string &>().empty() ||
            id.get_ref<const std::string &>().size() > 64) {
            return bad(param + ".vector_store_ids must hold vector store ids", param + ".vector_store_ids");
        }
        use.allowed.push_back(id.get<std::string>());
    }
    if (const json *k = json_field(t, "max_num_results"); k != nullptr && !k->is_null()) {
        if (!k->is_number_integer() || k->get<int64_t>() < 1 || k->get<int64_t>() > 50) {
            return bad(param + ".max_num_results must be an integer from 1 to 50", param + ".max_num_results");
        }
        use.max_results = static_cast<size_t>(k->get<int64_t>());
    }
    if (const json *f = json_field(t, "filters"); f != nullptr && !f->is_null()) {
        auto filter = parse_attribute_filter(*f, param + ".filters");
        if (!filter) {
            return filter.err();
        }
        use.filter = std::move(*filter);
    }
    if (const json *r = json_field(t, "ranking_options"); r != nullptr) {
        auto threshold = parse_ranking_options(*r, param + ".ranking_options");
        if (!threshold) {
            return threshold.err();
        }
        use.score_threshold = *threshold;
    }
    if (std::any_of(builtin.begin(), builtin.end(), [](const auto &b) { return b.type == "file_search"; })) {
        return bad("at most one file_search tool per request (name both stores in it)", param);
    }
    if (builtin.size() >= 8) {
        return bad("at most 8 built-in tools per request", param);
    }
    builtin.push_back(std::move(use));
    return std::nullopt;
}

// A {type: "extract", schema, name?, description?, model?, instructions?, file_ids?,
// max_output_tokens?} tool (agent/extract.h). Every field is data: the model is one this server
// serves and the files are the caller's own (both checked when the tools are resolved,
// api/routes.cpp), so any other field is refused rather than ignored.
std::optional<error> read_extract_tool(const json &t, const std::string &param, std::vector<builtin_tool_use> &builtin,
                                       const api_limits &limits, const key_order *order) {
    static const char *const known[] = {"type",  "schema",       "name",     "description",
                                        "model", "instructions", "file_ids", "max_output_tokens"};
    for (const auto &[k, v] : t.items()) {
        if (std::find(std::begin(known), std::end(known), k) == std::end(known)) {
            return bad(param + "." + k.substr(0, 64) +
                           " is not a field of an extract tool (it takes schema, name, description, model, "
                           "instructions, file_ids, max_output_tokens)",
                       param + "." + k.substr(0, 64));
        }
    }
    builtin_tool_use use;
    use.type           = "extract";
    const json *schema = json_field(t, "schema");
    if (schema == nullptr || !schema->is_object()) {
        return bad(param + ".schema must be a JSON Schema object", param + ".schema");
    }
    auto text = json_schema_text(*schema, param + ".schema", limits, order);
    if (!text) {
        return text.err();
    }
    use.schema            = std::move(*text);
    const auto text_field = [&](const char *k, size_t max_bytes, std::string &out) -> std::optional<error> {
        const json *v = json_field(t, k);
        if (v == nullptr || v->is_null()) {
            return std::nullopt;
        }
        if (!v->is_string() || v->get_ref<const std::string &>().empty() ||
            v->get_ref<const std::string &>().size() > max_bytes) {
            return bad(param + "." + k + " must be a string of 1 to " + std::to_string(max_bytes) + " bytes",
                       param + "." + k);
        }
        out = v->get<std::string>();
        return std::nullopt;
    };
    use.name = "extract";
    if (auto err = text_field("name", 64, use.name)) {
        return err;
    }
    if (!std::all_of(use.name.begin(), use.name.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; })) {
        return bad(param + ".name must be letters, digits, '_' and '-' (at most 64)", param + ".name");
    }
    // server: the model ("" for the request's own).
    for (const auto &[k, max_bytes, out] :
         {std::tuple<const char *, size_t, std::string *>{"description", 1024, &use.description},
          {"model", 256, &use.server},
          {"instructions", 8192, &use.instructions}}) {
        if (auto err = text_field(k, max_bytes, *out)) {
            return err;
        }
    }
    if (const json *ids = json_field(t, "file_ids"); ids != nullptr && !ids->is_null()) {
        if (!ids->is_array() || ids->empty() || ids->size() > max_extract_files) {
            return bad(param + ".file_ids must be an array of 1 to " + std::to_string(max_extract_files) +
                           " file ids (the caller's files, from /v1/files)",
                       param + ".file_ids");
        }
        for (const auto &id : *ids) {
            if (!id.is_string() || id.get_ref<const std::string &>().empty() ||
                id.get_ref<const std::string &>().size() > 64) {
                return bad(param + ".file_ids must hold file ids", param + ".file_ids");
            }
            if (std::find(use.allowed.begin(), use.allowed.end(), id.get<std::string>()) != use.allowed.end()) {
                return bad(param + ".file_ids names '" + id.get<std::string>() + "' twice", param + ".file_ids");
            }
            use.allowed.push_back(id.get<std::string>());
        }
    }
    if (const json *m = json_field(t, "max_output_tokens"); m != nullptr && !m->is_null()) {
        if (!m->is_number_integer() || m->get<int64_t>() < 1 || m->get<int64_t>() > 4096) {
            return bad(param + ".max_output_tokens must be an integer from 1 to 4096", param + ".max_output_tokens");
        }
        use.max_output_tokens = m->get<int32_t>();
    }
    if (builtin.size() >= 8) {
        return bad("at most 8 built-in tools per request", param);
    }
    builtin.push_back(std::move(use));
    return std::nullopt;
}

// tool_choice when built-in tools are on: kept for the tool loop ("auto", "none", "required",
// "sql", "file_search", "extract[=NAME]", "mcp:LABEL[:NAME]", "function:NAME").
std::optional<error> read_builtin_choice(const json *tc, std::string &builtin_choice) {
    if (tc == nullptr || tc->is_null()) {
        builtin_choice = "auto";
    } else if (tc->is_string() && (*tc == "auto" || *tc == "none" || *tc == "required")) {
        builtin_choice = tc->get<std::string>();
    } else if (tc->is_object() && json_field(*tc, "type") != nullptr && *json_field(*tc, "type") == "sql") {
        builtin_choice = "sql";
    } else if (tc->is_object() && json_field(*tc, "type") != nullptr && *json_field(*tc, "type") == "file_search") {
        builtin_choice = "file_search";
    } else if (tc->is_object() && json_field(*tc, "type") != nullptr && *json_field(*tc, "type") == "extract") {
        // Any of the request's extract tools, or the one `name` names ("extract=NAME"); one call.
        builtin_choice = "extract";
        if (const json *name = json_field(*tc, "name"); name != nullptr) {
            if (!name->is_string() || name->get_ref<const std::string &>().empty() ||
                name->get_ref<const std::string &>().size() > 64) {
                return bad("tool_choice.name must be the name of one of the request's extract tools (a string of 1 "
                           "to 64 bytes)",
                           "tool_choice.name");
            }
            builtin_choice += "=" + name->get<std::string>();
        }
    } else if (tc->is_object() && json_field(*tc, "type") != nullptr && *json_field(*tc, "type") == "mcp" &&
               json_field(*tc, "server_label") != nullptr && json_field(*tc, "server_label")->is_string()) {
        // {type: mcp, server_label, name?}: that server's tools, or the one named.
        builtin_choice = "mcp:" + json_field(*tc, "server_label")->get<std::string>();
        if (const json *name = json_field(*tc, "name"); name != nullptr && name->is_string()) {
            builtin_choice += ":" + name->get<std::string>();
        }
    } else if (const json *name = tc->is_object() ? json_field(*tc, "name") : nullptr;
               name != nullptr && name->is_string() && json_field(*tc, "type") != nullptr &&
               *json_field(*tc, "type") == "function") {
        builtin_choice = "function:" + name->get<std::string>();
    } else {
        return bad("tool_choice must be \"none\", \"auto\", \"required\", {\"type\": \"sql\"}, {\"type\": "
                   "\"file_search\"}, {\"type\": \"extract\", \"name\": ...}, {\"type\": "
                   "\"mcp\", \"server_label\": ..., \"name\": ...} or {\"type\": \"function\", \"name\": ...}",
                   "tool_choice");
    }
    return std::nullopt;
}

// Function tools, flattened in the Responses API ({type, name, parameters}), nested in chat's.
// Built-in tools ({type: "sql", database}) are collected apart: the server runs them (tool loop),
// and with any of them tool_choice is kept for the loop instead of chat's own reading.
std::optional<error> convert_tools(const json &body, json &chat, std::vector<builtin_tool_use> &builtin,
                                   std::string &builtin_choice, const api_limits &limits, const key_order *order) {
    if (const json *tools = json_field(body, "tools")) {
        if (!tools->is_array()) {
            return bad("tools must be an array of function tools", "tools");
        }
        json out = json::array();
        for (size_t i = 0; i < tools->size(); ++i) {
            const auto       &t     = (*tools)[i];
            const std::string param = "tools[" + std::to_string(i) + "]";
            const json       *type  = t.is_object() ? json_field(t, "type") : nullptr;
            if (type != nullptr && *type == "sql") {
                const json *db = json_field(t, "database");
                if (db == nullptr || !db->is_string() || db->get_ref<const std::string &>().empty() ||
                    db->get_ref<const std::string &>().size() > 64) {
                    return bad(param + ".database must name one of the server's SQL databases", param + ".database");
                }
                if (builtin.size() >= 8) {
                    return bad("at most 8 built-in tools per request", param);
                }
                builtin.push_back({"sql", db->get<std::string>(), {}, 0});
                continue;
            }
            if (type != nullptr && *type == "file_search") {
                if (auto err = read_file_search_tool(t, param, builtin)) {
                    return err;
                }
                continue;
            }
            if (type != nullptr && *type == "extract") {
                if (auto err = read_extract_tool(t, param, builtin, limits, order)) {
                    return err;
                }
                continue;
            }
            if (type != nullptr && *type == "mcp") {
                // Only servers the operator configured: a request names one, never a URL or a command.
                const json *label = json_field(t, "server_label");
                if (label == nullptr || !label->is_string() || label->get_ref<const std::string &>().empty() ||
                    label->get_ref<const std::string &>().size() > 64) {
                    return bad(param + ".server_label must name one of the server's MCP servers",
                               param + ".server_label");
                }
                for (const char *k : {"server_url", "connector_id", "headers", "authorization"}) {
                    if (const json *v = json_field(t, k); v != nullptr && !v->is_null()) {
                        return bad(param + "." + k +
                                       " is not accepted: MCP servers and their credentials are configured on the "
                                       "server (--mcp-server); name one by server_label",
                                   param + "." + k);
                    }
                }
                if (const json *ra = json_field(t, "require_approval");
                    ra != nullptr && !ra->is_null() && *ra != "never") {
                    return bad(param + ".require_approval: only \"never\" is supported (the server runs the "
                                       "operator's allowed tools without asking)",
                               param + ".require_approval");
                }
                std::vector<std::string> allowed;
                if (const json *at = json_field(t, "allowed_tools"); at != nullptr && !at->is_null()) {
                    const json *names = at->is_object() ? json_field(*at, "tool_names") : at;
                    if (names == nullptr || !names->is_array() || names->size() > 64) {
                        return bad(param + ".allowed_tools must be an array of tool names (or {tool_names: [...]})",
                                   param + ".allowed_tools");
                    }
                    for (const auto &n : *names) {
                        if (!n.is_string() || n.get_ref<const std::string &>().size() > 128) {
                            return bad(param + ".allowed_tools must hold tool names", param + ".allowed_tools");
                        }
                        allowed.push_back(n.get<std::string>());
                    }
                }
                if (builtin.size() >= 8) {
                    return bad("at most 8 built-in tools per request", param);
                }
                builtin.push_back({"mcp", label->get<std::string>(), std::move(allowed), 0});
                continue;
            }
            if (type == nullptr || *type != "function") {
                return bad(param +
                               ".type must be \"function\", \"sql\", \"mcp\", \"file_search\" or \"extract\" (other "
                               "built-in "
                               "tools are not available on this server)",
                           param + ".type");
            }
            json fn = json::object();
            for (const char *k : {"name", "description", "parameters", "strict"}) {
                if (const json *v = json_field(t, k)) {
                    fn[k] = *v;
                }
            }
            out.push_back({{"type", "function"}, {"function", std::move(fn)}});
        }
        chat["tools"] = std::move(out);
    }
    const json *tc = json_field(body, "tool_choice");
    if (!builtin.empty()) {
        return read_builtin_choice(tc, builtin_choice);
    }
    if (tc != nullptr) {
        if (tc->is_object()) {
            const json *name = json_field(*tc, "name");
            if (json_field(*tc, "type") == nullptr || *json_field(*tc, "type") != "function" || name == nullptr) {
                return bad("tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": "
                           "...}",
                           "tool_choice");
            }
            chat["tool_choice"] = {{"type", "function"}, {"function", {{"name", *name}}}};
        } else {
            chat["tool_choice"] = *tc;
        }
    }
    return std::nullopt;
}

// text.format -> response_format.
std::optional<error> convert_text(const json &body, json &chat) {
    const json *text = json_field(body, "text");
    if (text == nullptr) {
        return std::nullopt;
    }
    const json *format = text->is_object() ? json_field(*text, "format") : nullptr;
    if (!text->is_object()) {
        return bad("text must be an object {format}", "text");
    }
    if (format == nullptr) {
        return std::nullopt;
    }
    const json *type = format->is_object() ? json_field(*format, "type") : nullptr;
    if (type == nullptr || !type->is_string()) {
        return bad("text.format.type must be \"text\", \"json_object\" or \"json_schema\"", "text.format.type");
    }
    if (*type == "json_schema") {
        json js = json::object();
        for (const char *k : {"name", "schema", "strict", "description"}) {
            if (const json *v = json_field(*format, k)) {
                js[k] = *v;
            }
        }
        if (!js.contains("name")) {
            js["name"] = "response";
        }
        chat["response_format"] = {{"type", "json_schema"}, {"json_schema", std::move(js)}};
    } else {
        chat["response_format"] = {{"type", *type}};
    }
    return std::nullopt;
}

// The tool loop's budgets a request sets (agent/tool_loop.h): max_tool_calls and
// nvext.max_tool_corrections; each left as it is when absent or null.
std::optional<error> read_tool_budgets(const json &body, int32_t &max_tool_calls, int32_t &max_tool_corrections) {
    if (const json *m = json_field(body, "max_tool_calls"); m != nullptr && !m->is_null()) {
        if (!m->is_number_integer() || m->get<int64_t>() < 1 || m->get<int64_t>() > max_tool_calls_limit) {
            return bad("max_tool_calls must be an integer from 1 to " + std::to_string(max_tool_calls_limit),
                       "max_tool_calls");
        }
        max_tool_calls = m->get<int32_t>();
    }
    const json *nv = json_field(body, "nvext");
    const json *m  = nv != nullptr && nv->is_object() ? json_field(*nv, "max_tool_corrections") : nullptr;
    if (m != nullptr && !m->is_null()) {
        if (!m->is_number_integer() || m->get<int64_t>() < 0 || m->get<int64_t>() > max_tool_corrections_limit) {
            return bad("nvext.max_tool_corrections must be an integer from 0 to " +
                           std::to_string(max_tool_corrections_limit),
                       "nvext.max_tool_corrections");
        }
        max_tool_corrections = m->get<int32_t>();
    }
    return std::nullopt;
}

// A chat error's field, named as the Responses API names it.
error renamed(error e) {
    static const std::pair<const char *, const char *> names[] = {
        {"response_format.json_schema.", "text.format."},
        {"response_format", "text.format"},
        {"max_tokens", "max_output_tokens"},
        {"messages", "input"},
    };
    for (const auto &[from, to] : names) {
        if (e.param.rfind(from, 0) == 0) {
            e.param = to + e.param.substr(std::string(from).size());
            break;
        }
    }
    // tools[i].function.x -> tools[i].x
    if (auto at = e.param.find("].function."); e.param.rfind("tools[", 0) == 0 && at != std::string::npos) {
        e.param.erase(at + 1, std::string(".function").size());
    }
    return e;
}

// The schemas keep the client's property order in the chat body: text.format.schema is copied
// to response_format.json_schema.schema, a tool's parameters to tools[i].function.parameters.
void copy_schema_orders(const json &body, json &chat, const key_order &order, key_order &chat_order) {
    if (const json *text = json_field(body, "text"); text != nullptr && text->is_object()) {
        if (const json *format = json_field(*text, "format"); format != nullptr && format->is_object()) {
            if (const json *schema = json_field(*format, "schema");
                schema != nullptr && chat.contains("response_format")) {
                copy_order(*schema, chat["response_format"]["json_schema"]["schema"], order, chat_order);
            }
        }
    }
    if (const json *tools = json_field(body, "tools"); tools != nullptr && tools->is_array()) {
        size_t fn = 0; // chat's tools are the function tools only
        for (size_t i = 0; i < tools->size(); ++i) {
            const json *type = (*tools)[i].is_object() ? json_field((*tools)[i], "type") : nullptr;
            if (type == nullptr || *type != "function") {
                continue;
            }
            if (const json *p = json_field((*tools)[i], "parameters")) {
                copy_order(*p, chat["tools"][fn]["function"]["parameters"], order, chat_order);
            }
            ++fn;
        }
    }
}

// `include`: what the output items carry beyond OpenAI's defaults (file_search_call.results).
std::optional<error> read_include(const json &body, responses_echo &echo) {
    const json *include = json_field(body, "include");
    if (include == nullptr || include->is_null()) {
        return std::nullopt;
    }
    if (!include->is_array() || include->size() > 16) {
        return bad("include must be an array of at most 16 strings", "include");
    }
    for (const auto &what : *include) {
        if (!what.is_string()) {
            return bad("include must be an array of strings", "include");
        }
        echo.include_file_search_results = echo.include_file_search_results || what == "file_search_call.results";
    }
    return std::nullopt;
}

} // namespace

result<responses_request> parse_responses_request(const json &body, const api_limits &limits, const key_order *order) {
    responses_request out;
    json              chat     = json::object();
    json              messages = json::array();
    if (auto e = convert_input(body, messages)) {
        return *e;
    }
    chat["messages"] = std::move(messages);
    for (const char *k : {"model", "temperature", "top_p", "stream", "user", "parallel_tool_calls", "seed",
                          "presence_penalty", "frequency_penalty", "top_k", "min_p", "stop", "speculative"}) {
        if (const json *v = json_field(body, k)) {
            chat[k] = *v;
        }
    }
    if (const json *m = json_field(body, "max_output_tokens")) {
        chat["max_tokens"]         = *m;
        out.echo.max_output_tokens = *m;
    }
    if (const json *n = json_field(body, "n"); n != nullptr && *n != 1) {
        return bad("n is not a Responses API parameter (one output per response)", "n");
    }
    if (const json *bg = json_field(body, "background"); bg != nullptr && *bg != false) {
        return bad("background responses are not supported: send the request without background", "background");
    }
    std::vector<builtin_tool_use> builtin;
    std::string                   builtin_choice = "auto";
    if (auto e = convert_tools(body, chat, builtin, builtin_choice, limits, order)) {
        return *e;
    }
    int32_t max_tool_calls = 8, max_tool_corrections = 2;
    if (auto e = read_tool_budgets(body, max_tool_calls, max_tool_corrections)) {
        return *e;
    }
    if (auto e = convert_text(body, chat)) {
        return *e;
    }
    const json *store = json_field(body, "store");
    if (store != nullptr && !store->is_boolean()) {
        return bad("store must be a boolean", "store");
    }
    out.echo.store   = store == nullptr || store->get<bool>();
    const json *meta = json_field(body, "metadata");
    if (meta != nullptr) {
        if (!meta->is_object() || meta->size() > 16) {
            return bad("metadata must be an object of at most 16 string values", "metadata");
        }
        for (const auto &[k, v] : meta->items()) {
            if (!v.is_string() || k.size() > 64 || v.get_ref<const std::string &>().size() > 512) {
                return bad("metadata values must be strings of at most 512 characters (keys: 64)", "metadata");
            }
        }
        out.echo.metadata = *meta;
    }

    key_order chat_order;
    if (order != nullptr) {
        copy_schema_orders(body, chat, *order, chat_order);
    }
    auto req = parse_request(api_kind::chat, chat, limits, &chat_order);
    if (!req) {
        return renamed(req.err());
    }
    out.chat                      = std::move(*req);
    out.chat.builtin_tools        = std::move(builtin);
    out.chat.builtin_choice       = std::move(builtin_choice);
    out.chat.max_tool_calls       = max_tool_calls;
    out.chat.max_tool_corrections = max_tool_corrections;
    // What the Response object repeats: the field as sent, or the API's default when absent or null.
    const auto sent = [&](const char *name, const json &fallback) {
        const json *v = json_field(body, name);
        return v != nullptr ? *v : fallback;
    };
    out.echo.instructions        = sent("instructions", nullptr);
    out.echo.temperature         = sent("temperature", 1.0);
    out.echo.top_p               = sent("top_p", 1.0);
    out.echo.tools               = sent("tools", json::array()); // an array: convert_tools checked it
    out.echo.tool_choice         = sent("tool_choice", "auto");
    out.echo.parallel_tool_calls = out.chat.parallel_tool_calls;
    out.echo.user                = out.chat.user;
    if (const json *text = json_field(body, "text"); text != nullptr && text->contains("format")) {
        out.echo.text = {{"format", (*text)["format"]}};
    }
    if (auto e = read_include(body, out.echo)) {
        return *e;
    }
    return out;
}

json input_items_of(const json &input) {
    json items = json::array();
    if (input.is_string()) {
        items.push_back({{"type", "message"},
                         {"role", "user"},
                         {"content", json::array({{{"type", "input_text"}, {"text", input}}})}});
    } else if (input.is_array()) {
        for (const auto &item : input) {
            json copy = item;
            if (copy.is_object() && !copy.contains("type")) {
                copy["type"] = "message";
            }
            if (copy.is_object() && copy["type"] == "message" && copy.contains("content") &&
                copy["content"].is_string()) {
                copy["content"] = json::array({{{"type", "input_text"}, {"text", copy["content"]}}});
            }
            items.push_back(std::move(copy));
        }
    }
    for (auto &item : items) {
        if (item.is_object() && !item.contains("id")) {
            item["id"] = random_id(item.value("type", std::string()) == "message" ? "msg_" : "item_");
        }
    }
    return items;
}

json continued_input(const stored_response &previous, const json &input) {
    json items = previous.input_items.is_array() ? previous.input_items : json::array();
    if (previous.response.contains("output") && previous.response["output"].is_array()) {
        for (const auto &o : previous.response["output"]) {
            items.push_back(o);
        }
    }
    for (auto &i : input_items_of(input)) {
        items.push_back(std::move(i));
    }
    return items;
}

namespace {

// A file_search call as OpenAI shapes it: {type: "file_search_call", id, status, queries, results}
// — results (file_id, filename, score, text, attributes) only when the request's `include` asked
// for them, else null. The tool's output (tools/file_search.h) is the results' JSON array.
json file_search_item(const server_tool_call &c, bool with_results) {
    json       queries = json::array();
    const json args    = json::parse(c.arguments, nullptr, false);
    if (args.is_object() && args.contains("query") && args["query"].is_string()) {
        queries.push_back(args["query"]);
    }
    json results = nullptr;
    if (with_results && c.error.empty()) {
        results        = json::array();
        const json out = json::parse(c.output, nullptr, false);
        for (const auto &r : out.is_array() ? out : json::array()) {
            results.push_back(
                {{"file_id", r.value("file_id", "")},
                 {"filename", r.value("filename", "")},
                 {"score", r.value("score", 0.0)},
                 {"text", r.value("text", "")},
                 {"attributes",
                  r.contains("attributes") && r["attributes"].is_object() ? r["attributes"] : json::object()}});
        }
    }
    return {{"type", c.type},
            {"id", c.id},
            {"status", c.error.empty() ? "completed" : "failed"},
            {"queries", queries},
            {"results", results}};
}

// The Response object and its event stream. Output items: the assistant message (when it has
// text, or when nothing else was produced), then one function_call item per tool call.
class responses_writer final : public answer_writer {
  public:
    explicit responses_writer(responses_echo echo) : echo_(std::move(echo)) {}

    std::string new_id() const override { return random_id("resp_"); }

    void opened(http_exchange &ex, const job_state &s) override {
        msg_id_ = "msg_" + s.id.substr(5);
        event(ex, "response.created", {{"response", response(s, "in_progress", /*with_output=*/false)}});
        event(ex, "response.in_progress", {{"response", response(s, "in_progress", false)}});
    }

    void text(http_exchange &ex, const job_state & /*s*/, size_t /*choice*/, const std::string &delta,
              const json & /*logprobs*/) override {
        if (delta.empty()) {
            return;
        }
        if (!msg_open_) {
            close_call(ex);
            msg_open_  = true;
            msg_index_ = next_index_++;
            event(ex, "response.output_item.added",
                  {{"output_index", msg_index_},
                   {"item",
                    {{"type", "message"},
                     {"id", msg_id_},
                     {"status", "in_progress"},
                     {"role", "assistant"},
                     {"content", json::array()}}}});
            event(ex, "response.content_part.added",
                  {{"item_id", msg_id_}, {"output_index", msg_index_}, {"content_index", 0}, {"part", text_part("")}});
        }
        msg_text_ += delta;
        event(ex, "response.output_text.delta",
              {{"item_id", msg_id_},
               {"output_index", msg_index_},
               {"content_index", 0},
               {"delta", delta},
               {"logprobs", json::array()}});
    }

    void tool_call(http_exchange &ex, const job_state &s, size_t choice, size_t call, bool first,
                   const std::string &args_delta) override {
        const auto &tc = s.choices[choice].tool_calls[call];
        if (first) {
            close_message(ex);
            close_call(ex);
            call_open_  = call;
            call_index_ = next_index_++;
            last_call_  = tc;
            event(ex, "response.output_item.added",
                  {{"output_index", call_index_}, {"item", call_item(tc, "", "in_progress")}});
            return;
        }
        event(ex, "response.function_call_arguments.delta",
              {{"item_id", call_item_id(tc)}, {"output_index", call_index_}, {"delta", args_delta}});
        last_call_ = tc;
    }

    void server_call(http_exchange &ex, const job_state &s, size_t choice) override {
        close_message(ex);
        close_call(ex);
        const auto &call = s.choices[choice].server_calls.back();
        if (auto team = read_team_event(call)) {
            team_event(ex, std::move(*team));
            return;
        }
        const int64_t index = next_index_++;
        // The server ran it to completion before this event: added and done together.
        json in_progress      = server_item(call);
        in_progress["status"] = "in_progress";
        if (call.type == "file_search_call") {
            in_progress["results"] = nullptr;
        } else {
            in_progress["output"] = nullptr;
            in_progress["error"]  = nullptr;
        }
        event(ex, "response.output_item.added", {{"output_index", index}, {"item", std::move(in_progress)}});
        event(ex, "response.output_item.done", {{"output_index", index}, {"item", server_item(call)}});
    }

    void choice_done(http_exchange &ex, const job_state &s, size_t choice) override {
        const auto &c = s.choices[choice];
        if (call_open_ && *call_open_ < c.tool_calls.size()) {
            last_call_ = c.tool_calls[*call_open_];
        }
        close_message(ex);
        close_call(ex);
    }

    void completed(http_exchange &ex, const job_state &s) override {
        const auto &c      = s.choices.front();
        const char *status = c.finish == finish_reason::length ? "incomplete" : "completed";
        json        r      = response(s, status, true);
        if (echo_.on_complete) {
            echo_.on_complete(r);
        }
        if (s.req().stream) {
            event(ex, c.finish == finish_reason::length ? "response.incomplete" : "response.completed",
                  {{"response", std::move(r)}});
            ex.end_stream();
            return;
        }
        ex.respond(http::status::ok, dump_json(r), "application/json");
    }

    void stream_error(http_exchange &ex, const job_state &s, const error &err) override {
        json r     = response(s, "failed", false);
        r["error"] = {{"code", err.code.empty() ? std::string(map_error(err.kind).type) : err.code},
                      {"message", err.message}};
        event(ex, "response.failed", {{"response", std::move(r)}});
        ex.end_stream();
    }

  private:
    static json text_part(const std::string &text) {
        return {{"type", "output_text"}, {"text", text}, {"annotations", json::array()}, {"logprobs", json::array()}};
    }
    static std::string call_item_id(const chat_tool_call &tc) { return "fc_" + tc.id; }
    // A built-in tool the server ran (agent/tool_loop.h), shaped like OpenAI's mcp_call items.
    json server_item(const server_tool_call &c) const {
        if (c.type == "file_search_call") {
            return file_search_item(c, echo_.include_file_search_results);
        }
        if (c.type == "extract_call") {
            return extract_call_item(c);
        }
        return {{"type", c.type},
                {"id", c.id},
                {"status", c.error.empty() ? "completed" : "failed"},
                {"name", c.name},
                {c.type == "mcp_call" ? "server_label" : "database", c.server},
                {"arguments", c.arguments},
                {"output", c.error.empty() ? json(c.output) : json(nullptr)},
                {"error", c.error.empty() ? json(nullptr) : json(c.error)}};
    }
    // A team's trace record (agent/team.h): a member call's item is added when it starts and done
    // when it ends, at its own index; a member's own tool call is an item of its own, added and done.
    void team_event(http_exchange &ex, team_trace_event ev) {
        if (ev.what == team_trace_event::kind::finished) {
            if (auto it = open_members_.find(ev.member_call_id); it != open_members_.end()) {
                event(ex, "response.output_item.done", {{"output_index", it->second}, {"item", std::move(ev.item)}});
                open_members_.erase(it);
                return;
            }
        }
        const int64_t index = next_index_++;
        json          added = ev.item;
        added["status"]     = "in_progress";
        added["output"]     = nullptr;
        added["error"]      = nullptr;
        event(ex, "response.output_item.added", {{"output_index", index}, {"item", std::move(added)}});
        if (ev.what == team_trace_event::kind::started) {
            open_members_[ev.member_call_id] = index;
            return;
        }
        event(ex, "response.output_item.done", {{"output_index", index}, {"item", std::move(ev.item)}});
    }

    // The server's calls as output items, in the order the stream added them: a team member call
    // where it started, in its last state.
    void add_server_items(json &output, const std::vector<server_tool_call> &calls) const {
        std::map<std::string, size_t> member_at;
        for (const auto &call : calls) {
            auto team = read_team_event(call);
            if (!team) {
                output.push_back(server_item(call));
                continue;
            }
            auto it = member_at.find(team->member_call_id);
            if (team->what == team_trace_event::kind::finished && it != member_at.end()) {
                output[it->second] = std::move(team->item);
                continue;
            }
            if (team->what == team_trace_event::kind::started) {
                member_at[team->member_call_id] = output.size();
            }
            output.push_back(std::move(team->item));
        }
    }

    static json call_item(const chat_tool_call &tc, const std::string &args, const char *status) {
        return {{"type", "function_call"}, {"id", call_item_id(tc)}, {"call_id", tc.id},
                {"name", tc.name},         {"arguments", args},      {"status", status}};
    }

    void event(http_exchange &ex, const char *type, json data) {
        data["type"]            = type;
        data["sequence_number"] = seq_++;
        ex.send(std::string("event: ") + type + "\ndata: " + dump_json(data) + "\n\n");
    }

    void close_message(http_exchange &ex) {
        if (!msg_open_) {
            return;
        }
        msg_open_ = false;
        event(ex, "response.output_text.done",
              {{"item_id", msg_id_},
               {"output_index", msg_index_},
               {"content_index", 0},
               {"text", msg_text_},
               {"logprobs", json::array()}});
        event(
            ex, "response.content_part.done",
            {{"item_id", msg_id_}, {"output_index", msg_index_}, {"content_index", 0}, {"part", text_part(msg_text_)}});
        event(ex, "response.output_item.done", {{"output_index", msg_index_}, {"item", message_item(msg_text_)}});
    }

    void close_call(http_exchange &ex) {
        if (!call_open_) {
            return;
        }
        call_open_ = std::nullopt;
        event(ex, "response.function_call_arguments.done",
              {{"item_id", call_item_id(last_call_)},
               {"output_index", call_index_},
               {"name", last_call_.name},
               {"arguments", last_call_.arguments}});
        event(ex, "response.output_item.done",
              {{"output_index", call_index_}, {"item", call_item(last_call_, last_call_.arguments, "completed")}});
    }

    json message_item(const std::string &text) const {
        return {{"type", "message"},
                {"id", msg_id_},
                {"status", "completed"},
                {"role", "assistant"},
                {"content", json::array({text_part(text)})}};
    }

    json response(const job_state &s, const char *status, bool with_output) {
        if (msg_id_.empty()) {
            msg_id_ = "msg_" + s.id.substr(5);
        }
        json output = json::array();
        if (with_output && !s.choices.empty()) {
            const auto &c    = s.choices.front();
            const auto &text = c.text;
            add_server_items(output, c.server_calls);
            if (!text.empty() || c.tool_calls.empty()) {
                output.push_back(message_item(text));
            }
            for (const auto &tc : c.tool_calls) {
                output.push_back(call_item(tc, tc.arguments, "completed"));
            }
        }
        const auto u = s.usage();
        json       r = {{"id", s.id},
                        {"object", "response"},
                        {"created_at", s.created},
                        {"status", status},
                        {"error", nullptr},
                        {"incomplete_details", nullptr},
                        {"instructions", echo_.instructions},
                        {"max_output_tokens", echo_.max_output_tokens},
                        {"model", s.model_id},
                        {"output", std::move(output)},
                        {"parallel_tool_calls", echo_.parallel_tool_calls},
                        {"previous_response_id", echo_.previous_response_id},
                        {"temperature", echo_.temperature},
                        {"top_p", echo_.top_p},
                        {"tool_choice", echo_.tool_choice},
                        {"tools", echo_.tools},
                        {"text", echo_.text},
                        {"truncation", "disabled"},
                        {"metadata", echo_.metadata},
                        {"store", echo_.store},
                        {"usage", nullptr}};
        if (!echo_.user.empty()) {
            r["user"] = echo_.user;
        }
        if (std::string(status) == "incomplete") {
            const auto &reason      = s.choices.empty() ? std::string() : s.choices.front().incomplete_reason;
            r["incomplete_details"] = {{"reason", reason.empty() ? std::string("max_output_tokens") : reason}};
        }
        if (with_output) {
            r["usage"] = {{"input_tokens", u.prompt},
                          {"input_tokens_details", {{"cached_tokens", u.cached}}},
                          {"output_tokens", u.generated},
                          {"output_tokens_details", {{"reasoning_tokens", 0}}},
                          {"total_tokens", u.prompt + u.generated}};
        }
        return r;
    }

    responses_echo                 echo_;
    std::string                    msg_id_;
    bool                           msg_open_  = false;
    int64_t                        msg_index_ = 0;
    std::string                    msg_text_;
    std::optional<size_t>          call_open_;
    int64_t                        call_index_ = 0;
    chat_tool_call                 last_call_;
    int64_t                        next_index_ = 0;
    int64_t                        seq_        = 0;
    std::map<std::string, int64_t> open_members_; // team member calls added, not done: their index
};

} // namespace

std::shared_ptr<answer_writer> make_responses_writer(responses_echo echo) {
    return std::make_shared<responses_writer>(std::move(echo));
}

} // namespace inferbox

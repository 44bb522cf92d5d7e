#include "model/generic_tools.h"

#include <nlohmann/json.hpp>

namespace inferbox {

using json = nlohmann::json;

std::string generic_tools_prompt(const chat_inputs &in) {
    std::string p = "You can call functions. The functions, each with its parameters as a JSON Schema:\n";
    for (const auto &t : in.tools) {
        p += "\n- " + t.name + (t.description.empty() ? "" : ": " + t.description) +
             "\n  parameters: " + (t.parameters.empty() ? std::string("{\"type\":\"object\"}") : t.parameters) + "\n";
    }
    p += "\nTo call ";
    p += in.parallel_tool_calls ? "functions" : "a function";
    p += ", reply with only this JSON object: {\"tool_calls\": [{\"name\": \"<function name>\", \"arguments\": "
         "{<arguments>}}]}";
    p += in.parallel_tool_calls ? " (one entry per call)." : " (exactly one call).";
    if (in.choice == tool_choice::required) {
        p += " You must call a function now.";
    } else {
        p += " If no function is needed, answer normally.";
    }
    p += " A function's result comes back in a later message.";
    return p;
}

std::string generic_tools_schema(const chat_inputs &in) {
    // Written by hand rather than through json::dump: the properties' order ("name" before
    // "arguments", and each tool's parameters as the client gave them) is the generation order.
    std::string calls;
    for (const auto &t : in.tools) {
        calls += std::string(calls.empty() ? "" : ",") + R"({"type":"object","properties":{"name":{"const":)" +
                 json(t.name).dump() + R"(},"arguments":)" +
                 (t.parameters.empty() ? std::string(R"({"type":"object"})") : t.parameters) +
                 R"(},"required":["name","arguments"],"additionalProperties":false})";
    }
    const std::string items = in.tools.size() == 1 ? calls : R"({"anyOf":[)" + calls + "]}";
    return R"({"type":"object","properties":{"tool_calls":{"type":"array","minItems":1,)" +
           std::string(in.parallel_tool_calls ? "" : R"("maxItems":1,)") + R"("items":)" + items +
           R"(}},"required":["tool_calls"],"additionalProperties":false})";
}

std::vector<chat_message> generic_tools_messages(const chat_inputs &in) {
    std::vector<chat_message> out;
    const std::string         tools = generic_tools_prompt(in);
    bool                      told  = false;
    for (const auto &m : in.messages) {
        chat_message c;
        c.role    = m.role;
        c.content = m.content;
        if (!told && (m.role == "system" || m.role == "developer")) {
            c.role    = "system";
            c.content = m.content + (m.content.empty() ? "" : "\n\n") + tools;
            told      = true;
        } else if (m.role == "assistant" && !m.tool_calls.empty()) {
            json calls = json::array();
            for (const auto &tc : m.tool_calls) {
                calls.push_back({{"name", tc.name}, {"arguments", json::parse(tc.arguments, nullptr, false)}});
            }
            c.content = (m.content.empty() ? "" : m.content + "\n") +
                        json{{"tool_calls", calls}}.dump(-1, ' ', false, json::error_handler_t::replace);
        } else if (m.role == "tool") {
            c.role    = "user";
            c.content = "Result of call " + m.tool_call_id + ":\n" + m.content;
        }
        out.push_back(std::move(c));
    }
    if (!told) {
        out.insert(out.begin(), chat_message{"system", tools, {}, {}});
    }
    return out;
}

namespace {

// A cursor over the generated text. Every read either succeeds, runs out of text (`end`), or
// meets something the format does not allow (`bad`).
class cursor {
  public:
    explicit cursor(const std::string &s, size_t at) : s_(s), i_(at) {}
    bool   end() const { return i_ >= s_.size(); }
    bool   bad() const { return bad_; }
    size_t at() const { return i_; }

    void ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) {
            ++i_;
        }
    }
    // The literal `lit` (after whitespace). False when the text ends first or differs.
    bool lit(const std::string &lit) {
        ws();
        for (char c : lit) {
            if (i_ >= s_.size()) {
                return false;
            }
            if (s_[i_] != c) {
                bad_ = true;
                return false;
            }
            ++i_;
        }
        return true;
    }
    // A whole JSON string; its decoded value.
    bool string(std::string &out) {
        ws();
        if (i_ >= s_.size()) {
            return false;
        }
        if (s_[i_] != '"') {
            bad_ = true;
            return false;
        }
        size_t j = i_ + 1;
        while (j < s_.size() && s_[j] != '"') {
            j += s_[j] == '\\' ? 2 : 1;
        }
        if (j >= s_.size()) {
            return false;
        }
        const auto v = json::parse(s_.substr(i_, j + 1 - i_), nullptr, false);
        if (!v.is_string()) {
            bad_ = true;
            return false;
        }
        out = v.get<std::string>();
        i_  = j + 1;
        return true;
    }
    // A JSON value's raw text, as far as it goes; true when it is whole.
    bool raw_value(std::string &out) {
        ws();
        const size_t start  = i_;
        int          depth  = 0;
        bool         in_str = false;
        for (; i_ < s_.size(); ++i_) {
            const char c = s_[i_];
            if (in_str) {
                if (c == '\\') {
                    ++i_;
                } else if (c == '"') {
                    in_str = false;
                }
                continue;
            }
            if (c == '"') {
                in_str = true;
            } else if (c == '{' || c == '[') {
                ++depth;
            } else if (c == '}' || c == ']') {
                if (--depth == 0) {
                    ++i_;
                    out = s_.substr(start, i_ - start);
                    return true;
                }
                if (depth < 0) {
                    bad_ = true;
                    return false;
                }
            } else if (depth == 0 && (c == ',' || c == ' ' || c == '\n')) {
                break; // a scalar ended (the schema asks for an object; the grammar holds it)
            }
        }
        out = s_.substr(start, std::min(i_, s_.size()) - start);
        return depth == 0 && !in_str && i_ > start && i_ < s_.size();
    }

  private:
    const std::string &s_;
    size_t             i_;
    bool               bad_ = false;
};

// Where the call object starts: `{`, whitespace, `"tool_calls"`. npos when it does not.
size_t find_call_object(const std::string &text, size_t &held_back, bool partial) {
    held_back = text.size();
    for (size_t at = text.find('{'); at != std::string::npos; at = text.find('{', at + 1)) {
        size_t j = at + 1;
        while (j < text.size() && (text[j] == ' ' || text[j] == '\n' || text[j] == '\t' || text[j] == '\r')) {
            ++j;
        }
        const std::string key  = "\"tool_calls\"";
        const std::string rest = text.substr(j, key.size());
        if (rest == key) {
            held_back = at;
            return at;
        }
        if (partial && j + rest.size() == text.size() && key.compare(0, rest.size(), rest) == 0) {
            held_back = at; // may still become the call object
            return std::string::npos;
        }
    }
    return std::string::npos;
}

} // namespace

generic_read read_generic_tools(const std::string &text, bool partial) {
    generic_read out;
    size_t       held_back = 0;
    const size_t at        = find_call_object(text, held_back, partial);
    out.content            = text.substr(0, held_back);
    if (at == std::string::npos) {
        out.complete = !partial;
        return out;
    }
    out.found = true;
    cursor c(text, at);
    if (!c.lit("{") || !c.lit("\"tool_calls\"") || !c.lit(":") || !c.lit("[")) {
        out.valid = !c.bad();
        return out;
    }
    for (;;) {
        c.ws();
        if (c.end()) {
            return out;
        }
        if (!out.calls.empty() && !c.lit(",")) {
            if (c.bad()) { // not a comma: the array must end here
                cursor     e(text, c.at());
                const bool closed = e.lit("]") && e.lit("}");
                out.valid         = closed || !e.bad(); // the text may end before the object does
                out.complete      = closed;
                return out;
            }
            return out;
        }
        chat_tool_call call;
        if (!c.lit("{") || !c.lit("\"name\"") || !c.lit(":") || !c.string(call.name)) {
            out.valid = !c.bad();
            return out;
        }
        if (!c.lit(",") || !c.lit("\"arguments\"") || !c.lit(":")) {
            out.valid = !c.bad();
            if (out.valid && partial) {
                out.calls.push_back(std::move(call)); // its name is known
            }
            return out;
        }
        const bool whole = c.raw_value(call.arguments);
        out.calls.push_back(std::move(call));
        if (!whole) {
            out.valid = !c.bad();
            return out;
        }
        if (!c.lit("}")) {
            out.valid = !c.bad();
            return out;
        }
    }
}

} // namespace inferbox

// Untrusted request bytes -> the typed request, exactly as api_router::handle_inference does it
// up to the point where a model is needed (chat template, tokenizer): parse_json_body, then
// parse_request for /v1/completions and /v1/chat/completions, then error_body for any error.
// Nothing may throw or crash; an accepted request must satisfy every limit the schema promises
// the engine; an error must be an invalid_request with a well-formed OpenAI error body.

#include "api/errors.h"
#include "api/schema.h"
#include "common/utf8.h"
#include "fuzz_check.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

using namespace inferbox;
using json = nlohmann::json;

namespace {

void check_error(const error &e) {
    FUZZ_CHECK(e.kind == error_kind::invalid_request);
    FUZZ_CHECK(!e.message.empty());
    const std::string body = error_body(e);
    FUZZ_CHECK(utf8_valid(body));
    const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    FUZZ_CHECK(j.is_object() && j.contains("error") && j["error"].is_object());
    FUZZ_CHECK(j["error"]["type"] == "invalid_request_error");
    FUZZ_CHECK(j["error"]["message"].is_string() && !j["error"]["message"].get<std::string>().empty());
}

bool in_range(float v, double lo, double hi) {
    return std::isfinite(v) && v >= static_cast<float>(lo) && v <= static_cast<float>(hi);
}

void check_request(api_kind kind, const api_request &r, const api_limits &limits) {
    FUZZ_CHECK(r.kind == kind);
    FUZZ_CHECK(r.n >= 1 && r.n <= limits.max_n);
    FUZZ_CHECK(!r.max_tokens || (*r.max_tokens >= 1 && *r.max_tokens <= (1 << 24)));
    FUZZ_CHECK(r.stop.size() <= static_cast<size_t>(limits.max_stop));
    for (const auto &s : r.stop) {
        FUZZ_CHECK(!s.empty() && s.size() <= static_cast<size_t>(limits.max_stop_bytes) && utf8_valid(s));
    }
    FUZZ_CHECK(utf8_valid(r.model) && r.model.size() <= 1024);
    FUZZ_CHECK(utf8_valid(r.user) && r.user.size() <= 1024);

    const auto &s = r.sampling;
    FUZZ_CHECK(in_range(s.temperature, 0, 2));
    FUZZ_CHECK(in_range(s.top_p, 0, 1));
    FUZZ_CHECK(s.top_k >= -1 && s.top_k <= (1 << 20));
    FUZZ_CHECK(in_range(s.min_p, 0, 1));
    FUZZ_CHECK(in_range(s.presence_penalty, -2, 2));
    FUZZ_CHECK(in_range(s.frequency_penalty, -2, 2));
    FUZZ_CHECK(in_range(s.repetition_penalty, 0.01, 10));
    FUZZ_CHECK(s.logit_bias.size() <= static_cast<size_t>(limits.max_logit_bias));
    for (const auto &[tok, bias] : s.logit_bias) {
        FUZZ_CHECK(tok >= 0 && in_range(bias, -100, 100));
    }
    FUZZ_CHECK(s.top_logprobs >= -1 && s.top_logprobs <= (kind == api_kind::chat ? 20 : 5));
    // An output constraint is bounded and, but for a JSON Schema (compiled later), already GBNF
    // that passed the shape check the engine relies on.
    const auto &c = r.constraint;
    FUZZ_CHECK(s.grammar.empty()); // set only by the API handler, after compiling
    if (c.kind == constraint_kind::json_schema) {
        FUZZ_CHECK(!c.schema.empty() && c.schema.size() <= limits.guided.max_schema_bytes);
    } else if (c.kind == constraint_kind::regex || c.kind == constraint_kind::choice ||
               c.kind == constraint_kind::grammar) {
        FUZZ_CHECK(gbnf_shape_error(c.gbnf, limits.guided).empty());
    }

    if (kind == api_kind::chat) {
        FUZZ_CHECK(r.prompts.empty());
        FUZZ_CHECK(!r.messages.empty() && r.messages.size() <= static_cast<size_t>(limits.max_messages));
        for (const auto &m : r.messages) {
            FUZZ_CHECK(m.role == "system" || m.role == "user" || m.role == "assistant" || m.role == "tool");
            FUZZ_CHECK(utf8_valid(m.content)); // the chat template and tokenizer get it as is
            FUZZ_CHECK(m.role == "tool" || m.tool_call_id.empty());
            FUZZ_CHECK(m.role == "assistant" || m.tool_calls.empty());
        }
        FUZZ_CHECK(r.tools.size() <= static_cast<size_t>(limits.max_tools));
        for (const auto &t : r.tools) {
            FUZZ_CHECK(!t.name.empty() && t.name.size() <= 64);
            FUZZ_CHECK(t.parameters.size() <= limits.guided.max_schema_bytes);
        }
        // Tools in play never come with an output constraint, and a named choice left one tool.
        FUZZ_CHECK(!r.tools_active() || r.constraint.kind == constraint_kind::none);
        FUZZ_CHECK(r.choice == tool_choice::none || !r.tools.empty() || r.choice == tool_choice::automatic);
    } else {
        FUZZ_CHECK(r.tools.empty());
        FUZZ_CHECK(r.messages.empty());
        FUZZ_CHECK(!r.prompts.empty() && r.prompts.size() <= static_cast<size_t>(limits.max_prompts));
        FUZZ_CHECK(static_cast<int64_t>(r.prompts.size()) * r.n <= limits.max_n);
        for (const auto &p : r.prompts) {
            if (const auto *text = std::get_if<std::string>(&p)) {
                FUZZ_CHECK(utf8_valid(*text));
            } else {
                for (token_id t : std::get<std::vector<token_id>>(p)) {
                    FUZZ_CHECK(t >= 0);
                }
            }
        }
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const api_limits  limits; // the server's defaults
    const std::string bytes(reinterpret_cast<const char *>(data), size);

    auto body = parse_json_body(bytes, limits.max_json_depth);
    if (!body) {
        check_error(body.err());
        FUZZ_CHECK(body.err().code == "invalid_json");
        return 0;
    }
    FUZZ_CHECK(body->is_object());
    for (api_kind kind : {api_kind::completion, api_kind::chat}) {
        auto req = parse_request(kind, *body, limits);
        if (req) {
            check_request(kind, *req, limits);
        } else {
            check_error(req.err());
        }
    }
    return 0;
}

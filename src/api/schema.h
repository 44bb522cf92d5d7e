#pragma once
// The request schema of /v1/completions and /v1/chat/completions: one declarative table of
// fields (type, range, which endpoint) validates bodies, names the field and its limit in every
// error, and is what docs/api.md documents. The output is a typed api_request; nothing past
// this point looks at JSON.

#include "api/guided.h"
#include "api/json_body.h"
#include "backend/routing.h"
#include "common/status.h"
#include "engine/types.h"
#include "model/model.h"
#include "retrieval/attribute_filter.h" // plain types only: file_search's filter

#include <nlohmann/json_fwd.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace inferbox {

enum class api_kind { completion, chat };

struct api_limits {
    int32_t       max_n          = 16;   // choices per request
    int32_t       max_stop       = 16;   // stop strings per request
    int32_t       max_stop_bytes = 256;  // bytes per stop string
    int32_t       max_messages   = 1024; // chat messages per request
    int32_t       max_prompts    = 64;   // prompts in one completions request
    int32_t       max_logit_bias = 1024; // entries in logit_bias
    int32_t       max_json_depth = 64;   // nesting of the request body
    int32_t       max_tools      = 128;  // tools per request (each one's parameters: guided.max_schema_bytes)
    guided_limits guided;                // response_format / guided_* sizes and repetition bounds
};

// How the output is constrained: response_format (json_object, json_schema), or guided_json,
// guided_regex, guided_choice, guided_grammar at the top level (vLLM) or under nvext (NIM). At
// most one per request. Regex, choice and grammar are GBNF here already (converted and
// shape-checked); a JSON Schema needs llama.cpp's converter (model/grammar.h), so it stays JSON
// text until the API handler compiles it.
enum class constraint_kind { none, json_object, json_schema, regex, choice, grammar };

struct output_constraint {
    constraint_kind kind = constraint_kind::none;
    std::string     param;  // the field that set it ("response_format", "nvext.guided_regex", ...)
    std::string     schema; // json_schema: the schema, serialized; its size and bounds checked
    std::string     gbnf;   // regex, choice, grammar: the grammar
};

using prompt_input = std::variant<std::string, std::vector<token_id>>;

// A built-in tool a Responses request enables: {"type": "sql", "database": NAME} (server: the
// database), or {"type": "mcp", "server_label": LABEL, "allowed_tools": [...]} (server: the label;
// allowed: empty for all the server's allowed tools), or {"type": "file_search",
// "vector_store_ids": [...], "max_num_results": N, "filters"?, "ranking_options"?} (allowed: the
// store ids; max_results: N; filter and score_threshold).
struct builtin_tool_use {
    std::string              type;
    std::string              server;
    std::vector<std::string> allowed;
    size_t                   max_results = 10; // file_search only: 1..50
    // file_search only: the files searched (none: all) and the lowest score kept (0..1).
    std::optional<retrieval::attribute_filter> filter;
    double                                     score_threshold = 0;
    // {"type": "extract", "schema", "name"?, "model"?, "instructions"?, "file_ids"?,
    // "max_output_tokens"?} (agent/extract.h): server is the model ("" for the request's), allowed
    // the caller's files the model may name, name the function; schema serialized and checked.
    std::string name;
    std::string description;
    std::string schema;
    std::string instructions;
    int32_t     max_output_tokens = 512; // extract only: 1..4096
};
inline constexpr int32_t max_tool_calls_limit = 32;
// Consecutive failed built-in calls the model may correct (agent/tool_loop.h): at most this many.
inline constexpr int32_t max_tool_corrections_limit = 8;

struct api_request {
    api_kind                   kind = api_kind::completion;
    std::string                model; // empty = the default model
    bool                       stream        = false;
    bool                       include_usage = false;
    bool                       echo          = false;
    std::vector<chat_message>  messages; // chat
    std::vector<prompt_input>  prompts;  // completions: one entry per prompt
    std::optional<int32_t>     max_tokens;
    std::string                max_tokens_param = "max_tokens"; // the field the client used
    int32_t                    n                = 1;
    sampling_params            sampling;
    std::vector<std::string>   stop;
    std::string                user;
    std::optional<float>       lora_scale;         // an extension: the adapter's scale when `model` names one
    bool                       speculative = true; // an extension: false opts out of speculative decoding
    std::optional<lora_choice> lora;               // set by the router when `model` names a LoRA adapter
    output_constraint          constraint;
    // Chat only. tools_active(): tools offered and tool_choice is not "none"; a named
    // tool_choice leaves only that tool here, with choice = required.
    std::vector<chat_tool> tools;
    tool_choice            choice              = tool_choice::automatic;
    bool                   parallel_tool_calls = true;
    // Chat only (vLLM's continue_final_message with add_generation_prompt false): the last
    // message is an assistant message the model continues, instead of starting a new turn after
    // it. parse_request guarantees the last message is then an assistant one without tool_calls.
    // Mid-stream failover (backend/failover.h) sends such a request to the next backend.
    bool continue_final_message = false;
    // nvext.placement (or the X-Inferbox-Placement header): where the request may run.
    placement_pin placement = placement_pin::automatic;
    // nvext.timeout_ms (or the X-Inferbox-Timeout-Ms header, or --request-timeout-ms): the time the
    // request may take from its arrival; the router sets `deadline` from it. Past the deadline the
    // request ends with a 504 (an error event once streaming) and is never moved to another backend.
    std::optional<std::chrono::milliseconds> timeout;
    std::chrono::steady_clock::time_point    deadline{}; // epoch: none
    // Responses only: built-in tools the server runs itself in a tool loop (agent/tool_loop.h).
    // With any, `builtin_choice` holds the request's tool_choice ("auto", "none", "required",
    // "sql", or "function:NAME") and `tools`/`choice` hold the client's functions under "auto":
    // the loop decides what each step offers.
    std::vector<builtin_tool_use> builtin_tools;
    std::string                   builtin_choice = "auto";
    int32_t                       max_tool_calls = 8; // built-in calls per response (OpenAI's max_tool_calls)
    // Corrections after a failed built-in call (nvext.max_tool_corrections): the run ends when
    // this many more consecutive calls have failed too (agent/tool_loop.h).
    int32_t max_tool_corrections = 2;
    // Set by the router, never parsed: the team (--team) whose captain this request runs as, when
    // `model` named "team/NAME" (agent/team.h); `model` is then the captain's.
    std::string team;
    bool        tools_active() const { return !tools.empty() && choice != tool_choice::none; }
};

// Validates a parsed body (parse_json_body, api/json_body.h). Errors are invalid_request naming the
// field ("param") and its limit. `order` (the body's key order) keeps every JSON Schema's
// properties in the client's order; without it they are sorted.
result<api_request> parse_request(api_kind kind, const nlohmann::json &body, const api_limits &limits,
                                  const key_order *order = nullptr);

// A JSON Schema given as an object, or as JSON text, serialized with its keys in the order sent
// (`order`: the body's key order; a text's own order) and held to the bounds of response_format
// (limits.guided: bytes, repetition counts, patterns). Errors name `param` and the limit.
result<std::string> json_schema_text(const nlohmann::json &v, const std::string &param, const api_limits &limits,
                                     const key_order *order = nullptr);

// The request as an OpenAI body (serialized JSON) for `model` on another server (a remote backend): every field
// the request set, extensions only when they differ from their defaults, always streamed with
// usage. parse_request of the result gives back the same request (tests/unit/schema_test.cpp).
std::string request_to_json(const api_request &r, const std::string &model);

// The declarative table, exposed for documentation and tests.
struct numeric_field {
    const char *name;
    double      min;
    double      max;
    bool        integer;
    bool        chat;       // accepted by /v1/chat/completions
    bool        completion; // accepted by /v1/completions
};
const std::vector<numeric_field> &numeric_fields();

} // namespace inferbox

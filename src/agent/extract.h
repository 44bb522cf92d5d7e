#pragma once
// Extraction (docs/agents.md "Extraction"): text, and the caller's files, turned into JSON under a
// JSON Schema by one generation under the structured-output constraint (api_request::constraint,
// compiled by the backend: llama.cpp's converter, model/grammar.h, on the local engine; the
// remote server's own response_format otherwise). Two users:
//   - the `extract` built-in tool of /v1/responses (make_extract_tool): the model calls it with
//     {text, file_ids} and reads back the JSON; its item is an "extract_call";
//   - a team member declared with a schema (agent/team.h), whose final answer is that JSON.
//
// Threads. A call waits for a whole generation, so it must never run on the preparation pool
// (whose tasks never wait): the router runs a request's calls on the team pool when one of its
// tools is an extraction (api/routes.cpp), as it does for a team's members.

#include "agent/tool_loop.h"
#include "common/status.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace inferbox {

// Where a model runs: a backend for it and what keeps it there (a model lease; may be null), and
// the name a trace shows when the backend reports no route ("local").
struct member_backend {
    std::shared_ptr<generation_backend> backend;
    std::shared_ptr<void>               hold;
    std::string                         where = "local";
};

// A model id to a backend (may wait for a model to load: never call it on the preparation pool).
using backend_resolver = std::function<result<member_backend>(const std::string &model)>;

// One of the caller's files as text (the Files API: files/file_store.h and files/extract.h), for
// the key the source was made for: another key's file is not_found, exactly as a missing one.
// An error when the file has more than `max_bytes` of text names that limit.
struct file_text {
    std::string filename;
    std::string text;
};
using file_text_source = std::function<result<file_text>(const std::string &file_id, size_t max_bytes)>;

// Bounds of one extraction's input: the text argument plus every file's text, and the files named.
inline constexpr size_t  max_extract_input_bytes = size_t{64} << 10;
inline constexpr size_t  max_extract_files       = 4;
inline constexpr int32_t max_extract_text_chars  = 1000; // the `text` argument (the grammar holds it)

// The user message of an extraction: `text`, then each file's text after a line naming it
// ("File report.pdf (file-…):"). Errors are invalid_request naming the argument ("file_ids[1]"),
// the file and the limit (files: max_extract_files; bytes: `max_bytes` in all); an unknown file
// (or another key's) is not_found naming it. No files without `files` (the Files API is off).
result<std::string> extraction_input(const std::string &text, const std::vector<std::string> &file_ids,
                                     const file_text_source &files, size_t max_bytes = max_extract_input_bytes);

// A chat request whose answer is JSON under `schema` (serialized, already checked as
// json_schema_text checks a client's): `instructions` as the system message (none when empty),
// `input` as the user message, greedy at temperature 0 unless told otherwise. `schema_param`
// names the field that gave the schema, for the errors of its compilation.
api_request structured_request(const std::string &model, const std::string &instructions, const std::string &input,
                               const std::string &schema, const std::string &schema_param, int32_t max_tokens,
                               float temperature = 0.0f);

// One generation's end: its text, or why it has none. outcome: "ok", "error", "budget" (it hit
// its token budget: incomplete_reason), "timeout" or "cancelled".
struct generation_outcome {
    std::string text;
    std::string error;
    std::string outcome = "ok";
    std::string incomplete_reason;
    int32_t     n_prompt    = 0;
    int32_t     n_generated = 0;
    route_info  route;
};

// Prepares, submits and follows `req` on `be` until its last event, `deadline` (the generation is
// cancelled) or `cancel` (likewise). Blocks the calling thread (see "Threads" above); never throws.
generation_outcome run_generation(generation_backend &be, api_request req, cancel_signal &cancel,
                                  std::chrono::steady_clock::time_point deadline);

// Checks that a generation under a schema gave one JSON value: the grammar makes it so on the
// local engine, a remote server may have ignored the constraint. The error says what was wrong.
std::optional<error> check_json_answer(const std::string &text);

// An `extract` tool of a request (docs/agents.md "Extraction").
struct extract_spec {
    std::string               name = "extract"; // the function the model calls
    std::string               description;      // "" for the default
    std::string               model;            // the model that extracts (served or routed here)
    std::string               schema;           // serialized, checked by json_schema_text
    std::string               schema_param;     // the request field that gave it ("tools[0].schema")
    std::string               instructions;     // the extraction's system message ("" for the default)
    std::vector<std::string>  file_ids;         // the caller's files the model may name (checked to be theirs)
    int32_t                   max_tokens = 512; // the extraction's generated tokens
    std::chrono::milliseconds max_time{60'000};
};

struct extract_runtime {
    backend_resolver resolve;
    file_text_source files; // empty: no files (the Files API is off)
};

// The tool: function {name, parameters {text, file_ids?}} (file_ids only when the spec names
// files: its items are those ids, at least one is required, and text is then optional; without
// files text is required), kind "extract", item type
// "extract_call", run as a supervised_tool. Its output is the JSON text; its item_server a record
// (model, backend, usage, duration_ms) that extract_call_item reads.
std::shared_ptr<builtin_tool> make_extract_tool(extract_spec spec, extract_runtime rt);

// An extract call the server ran, as an output item (shaped like an mcp_call):
//   {type: "extract_call", id, status, name, model, arguments, output, error, usage, duration_ms}
nlohmann::json extract_call_item(const server_tool_call &c);

} // namespace inferbox

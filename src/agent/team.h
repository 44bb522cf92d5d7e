#pragma once
// A team of models (`--team`, docs/agents.md "Teams"): a captain and named members, served as the
// model id `team/NAME`. The captain runs a tool loop (agent/tool_loop.h) whose tools are the
// members: each is offered as a function MEMBER({"task": string}), grammar-constrained like every
// built-in tool. A call runs the member: its own tool loop on its own model (local, remote or
// routed), its instructions as the system message, the task as the user message, its own built-in
// tools (`sql:DB`, `mcp:LABEL`) and budgets; its final text is what the captain is given back, and
// a failure (an unknown model at run time, an error, a budget, its time) is a tool error the
// captain reads, never a crash.
//
// Threads. A member's call waits for a whole generation, so it never runs on the preparation pool
// (whose tasks never wait): the captain's loop runs its member calls on a pool of their own (the
// router's team pool, api_config::team_threads). A member's own steps and tools run on the
// preparation pool, and a member's model is never a team, so a member waits only for work that
// runs elsewhere: no pool size can deadlock, and at most team_threads members run at once on the
// server (more wait for a thread). The calls of one captain step run at once, up to that bound;
// each is a request on its model's engine, which runs as many as it has free slots and queues the
// rest. A client that goes away cancels the captain's run: its cancel_signal cancels each running
// member's generation, and no other member starts.
//
// Trace. Each member call is a server_tool_call of type "team_member_call" (name: the member,
// arguments: {"task": ...}); while it runs the member sends a "started" record and one record per
// tool call of its own, and the loop's own record closes it. These records carry their details as
// JSON text in the `server` field (read_team_event reads them): the writers turn them into output
// items (Responses) or nvext.trace (Chat Completions).

#include "agent/extract.h"
#include "agent/tool_loop.h"
#include "common/status.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace inferbox {

// A member's own budgets: each ends its run, and the captain reads which one.
struct team_member_budget {
    int32_t                   max_tool_calls = 4;  // its built-in calls (at most 32)
    std::optional<int32_t>    max_steps;           // its steps (nullopt: max_tool_calls + 1)
    int32_t                   max_tokens = 512;    // generated tokens over all its steps
    std::chrono::milliseconds max_time{60'000};    // wall time of its whole run
    int32_t                   max_corrections = 2; // failed tool calls in a row it may correct (at most 8)
};

struct team_member_spec {
    std::string              name;  // the function the captain calls
    std::string              model; // any model this server serves or routes (never a team)
    std::string              instructions;
    std::vector<std::string> tools; // "sql:DB", "mcp:LABEL"
    // Its first step's tool_choice: "auto", "required" (it calls one of its tools first) or "none".
    std::string        tool_choice = "auto";
    float              temperature = 1.0f; // its sampling temperature (0: greedy)
    team_member_budget budget;
    // A JSON Schema (serialized, checked by json_schema_text; "" for none): the member answers with
    // JSON under it (agent/extract.h), and the captain may hand it the caller's files (file_ids).
    std::string schema;
};

struct team_spec {
    std::string                   name; // served as "team/NAME"
    std::string                   captain_model;
    std::string                   captain_instructions;
    std::vector<team_member_spec> members;
};

// Parses one --team entry:
//   NAME=CAPTAIN_MODEL;instructions=TEXT;member.M=MODEL;member.M.instructions=TEXT;
//   member.M.tools=sql:DB,mcp:LABEL;member.M.tool-choice=auto|required|none;member.M.temperature=T;
//   member.M.max-tool-calls=N;member.M.max-steps=N;member.M.max-tokens=N;member.M.max-time-ms=N;
//   member.M.max-corrections=N
// and member.M.schema=JSON-SCHEMA (bounded as a request's response_format schema).
// `\;` is a literal ';' and `\\` a backslash (instructions may hold both). Names are letters,
// digits, '_' and '-' (at most 64). An error names the team and the key at fault.
result<team_spec> parse_team_spec(const std::string &text);

// The one-line form of `s` (parse_team_spec(format_team_spec(s)) gives back `s`): what a config
// file's mapping form becomes.
std::string format_team_spec(const team_spec &s);

// Checks a team's tools against the server's SQL databases and MCP servers (by name); an error
// names the team, the member and the tool.
std::optional<error> check_team_tools(const team_spec &team, const std::vector<std::string> &sql_databases,
                                      const std::vector<std::string> &mcp_servers);

// Checks every model a team names (the captain's and the members') with `serves`; an error names
// the team, who uses the model, and `served` (what the server does serve). A team's model may not
// be a team.
std::optional<error> check_team_models(const team_spec &team, const std::function<bool(const std::string &)> &serves,
                                       const std::string &served);

// What running members needs from the server.
struct team_runtime {
    // A backend for a model id (may wait for a model to load; runs on the team pool).
    backend_resolver resolve;
    // The caller's files, for a member with a schema whose call names file_ids (empty: the Files
    // API is off, and such members take no files).
    file_text_source files;
    // Where a member's own tool loop runs its steps and its tools (the preparation pool).
    task_poster post;
    // Metrics: each of a member's own tool calls, and each member call with its outcome ("ok",
    // "error", "budget", "cancelled", "timeout") and its time. Either may be empty.
    std::function<void(const server_tool_call &, double)>                              on_tool_call;
    std::function<void(const std::string &member, const std::string &outcome, double)> on_member_call;
};

// Member `member` of team `team` as the captain's tool; `tools`: its built-in tools, resolved.
std::shared_ptr<builtin_tool> make_team_member_tool(std::string team, team_member_spec member, builtin_toolbox tools,
                                                    team_runtime rt);

// One of a team's trace records (a server_tool_call of type "team_member_call"), as a client sees
// it. started: a member call began (its item, in progress); tool_call: one of the member's own
// calls ran (its item, with "team", "member" and "parent_id"); finished: the member call's item,
// done. `member_call_id`: the team_member_call item the record belongs to.
struct team_trace_event { // NOLINT(bugprone-exception-escape): a document; copying may throw bad_alloc only
    enum class kind { started, tool_call, finished };
    kind           what = kind::finished;
    std::string    member_call_id;
    nlohmann::json item;
};
std::optional<team_trace_event> read_team_event(const server_tool_call &c);

// A built-in call the server ran (sql_call, mcp_call) as an output item.
nlohmann::json builtin_call_item(const server_tool_call &c);

// The trace of a run as nvext.trace shows it: the server's calls in order, each team member call
// once (its last state), with its own tool calls nested under "calls".
nlohmann::json trace_tree(const std::vector<server_tool_call> &calls);

} // namespace inferbox

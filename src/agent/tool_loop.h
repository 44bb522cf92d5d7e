#pragma once
// The server-side tool loop: a generation backend that runs a request's built-in tools itself.
//
// It wraps whatever backend serves the model (the local engine, a remote server, failover): each
// step is one ordinary generation on that backend, with the built-in tools offered to the model as
// functions whose arguments the grammar constrains (the `sql` tool's query must match a SELECT
// over the database's real tables and columns). When a step ends in built-in calls only, the loop
// runs them (on the poster's threads, never an I/O thread; up to tool_loop_limits::max_parallel
// at once), appends the assistant's calls and the tools' results to the conversation in the step's
// order, and starts the next step; the client sees one stream:
// content deltas of every step, one `server_tool_call` event per call the server ran, and a last
// event whose message is the whole answer and whose usage counts every step. A step that calls a
// client function, answers without a call, or meets a budget ends the loop.
//
// Budgets, each named when it ends a run (backend_event::incomplete_reason, the Responses API's
// incomplete_details.reason): the request's max_tool_calls (default 8, at most 32) built-in calls,
// max_tool_calls + 1 steps, max_output_tokens across all steps, tool_loop_limits::max_time of
// wall time (the request's own deadline, if sooner, cancels the stream as for any request), the
// context: a next step that no longer fits it ends the run ("max_context") with what it has, and
// corrections: a failed call's error goes back to the model ("error: ..."), which may correct it
// max_tool_corrections times (the request's, default 2, at most 8); when one more call in a row
// has failed, the run ends ("max_tool_corrections"). A success starts the count again; a
// supervised_tool's failure (a team member's) is not counted.
//
// tool_choice applies to the first step ("sql" forces the sql tool, "mcp:LABEL" or "mcp:LABEL:NAME"
// an MCP server's tools, "team:NAME:MEMBER" a team's member, "function:NAME" a client function,
// "required" any tool); later steps are "auto", so a model forced into a call can answer.
//
// A supervised_tool's call (a team member, agent/team.h) sees the run's cancel_signal, which the
// stream's cancel() fires, and may send items of its own while it runs (streamed at once).

#include "backend/generation_backend.h"
#include "tools/builtin_tool.h"

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace inferbox {

// What a request's built-in tools resolve to on this server, in the request's order; their
// function names are distinct (the router checks).
struct builtin_toolbox {
    std::vector<std::shared_ptr<builtin_tool>> tools;
};

// Runs a task on a worker thread (the API's preparation pool).
using task_poster = std::function<void(std::function<void()>)>;

// A run's cancellation, shared with the calls it runs: cancel() (the client went away, the
// request's deadline passed) runs every hook once, on the cancelling thread; a hook added after
// that runs at once. Hooks must not block.
class cancel_signal {
  public:
    void   cancel();
    bool   cancelled() const;
    size_t subscribe(std::function<void()> hook); // an id for unsubscribe()
    void   unsubscribe(size_t id);

  private:
    mutable std::mutex                                    mu_;
    bool                                                  cancelled_ = false;
    size_t                                                next_      = 0;
    std::vector<std::pair<size_t, std::function<void()>>> hooks_;
};

// What a supervised call sees while it runs: its item id (the server_tool_call id the loop gives
// its result), the run's cancellation, and a way to send the client events of its own while it
// runs (a team member's start and its own tool calls: streamed at once, agent/team.h).
struct tool_call_context {
    std::string                           call_id;
    std::shared_ptr<cancel_signal>        cancel; // never null
    std::function<void(server_tool_call)> emit;   // thread-safe; never blocks
};

// A built-in tool whose calls are long and watched (a team member, agent/team.h): the loop runs
// them with a context instead of plain run(), and takes the item's `server` field from the
// outcome (a team member's trace record).
class supervised_tool : public builtin_tool {
  public:
    struct outcome {
        tool_outcome result;
        std::string  item_server; // the output item's `server` field
    };
    virtual outcome run_supervised(const std::string &arguments_json, const tool_call_context &ctx) const = 0;
    tool_outcome    run(const std::string &arguments_json) const override {
        return run_supervised(arguments_json, {"", std::make_shared<cancel_signal>(), [](const server_tool_call &) {}})
            .result;
    }
};

struct tool_loop_limits {
    std::chrono::milliseconds max_time{120'000};
    // Called after each built-in call (on the worker): the call and how long it took (metrics).
    std::function<void(const server_tool_call &, double seconds)> on_call;
    // Called when a next step was submitted: the loop's own time for the step change, from the
    // previous step's last event to the next step's submission, less the tools' time (queueing,
    // building the conversation, preparing the step: template, tokenizer, grammar).
    std::function<void(double seconds)> on_step;
    // Steps in all (nullopt: max_tool_calls + 1).
    std::optional<int32_t> max_steps;
    // The calls of one step run at once, up to this many (each on its own task of `run_calls`;
    // their results reach the model in the step's order whatever order they finish in).
    int32_t max_parallel = 1;
    // Where calls run (empty: the loop's own poster). A team's captain runs its members on a pool
    // of their own, because a member's call waits for a whole generation (agent/team.h).
    task_poster run_calls;
};

// One per request: it keeps the request's tools between prepare() and submit().
class tool_loop_backend final : public generation_backend {
  public:
    tool_loop_backend(std::shared_ptr<generation_backend> inner, builtin_toolbox tools, task_poster post,
                      tool_loop_limits limits = {});

    std::optional<error> check(const api_request &req) const override { return inner_->check(req); }
    std::optional<error> over_capacity(int32_t n_sequences) const override {
        return inner_->over_capacity(n_sequences);
    }
    result<backend_request>                    prepare(api_request req) const override;
    result<std::shared_ptr<generation_stream>> submit(std::shared_ptr<const backend_request> req,
                                                      std::function<void()>                  notify) override;
    bool                                       healthy() const override { return inner_->healthy(); }

    // A built-in tool under the function name the model calls.
    struct builtin_function {
        std::string                   name;
        std::shared_ptr<builtin_tool> tool;
    };

  private:
    std::shared_ptr<generation_backend> inner_;
    task_poster                         post_;
    tool_loop_limits                    limits_;
    std::vector<builtin_function>       functions_;
    mutable std::mutex                  mu_;
    mutable std::vector<chat_tool>      all_tools_; // set by prepare(): the client's functions and ours
};

} // namespace inferbox

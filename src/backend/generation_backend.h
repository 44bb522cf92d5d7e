#pragma once
// The seam between the API layer and whatever produces tokens. An API job (api/openai.cpp's
// completion_job) talks only to this interface: it asks the backend to check and prepare a
// validated request, submits it, receives typed events per choice (content deltas, tool-call
// deltas, logprobs, finish with usage, errors) and may cancel. The local llama.cpp engine is one
// implementation (backend/local_backend.h); a remote OpenAI-compatible server or a server-side
// agent loop are others: each turns its own source of tokens into the same events.
//
// Threading: check(), over_capacity(), healthy() and submit() are called on an I/O thread and
// must not block for long; prepare() runs on the API's preparation pool and may take as long as
// its input warrants (bounded by the request's limits). A stream's `notify` callback may fire
// on any thread and must not block; take() and cancel() are called on the consumer's executor.

#include "api/schema.h"
#include "common/status.h"
#include "engine/types.h"
#include "model/model.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace inferbox {

// One prompt of a request as the backend will run it: its tokens (a remote backend leaves them
// empty) and its text, which `echo` puts in front of a completion.
struct prepared_prompt {
    std::vector<token_id> tokens;
    std::string           echo_text;
};

// A request the backend has prepared and accepts to run. Choices are numbered prompt-major:
// choice c belongs to prompt c / req.n.
struct backend_request {
    api_request                  req;                // validated; the backend may have added stop strings
    std::vector<prepared_prompt> prompts;            // at least one
    int32_t                      max_tokens = 0;     // resolved: the request's, or the default that fits
    bool                         tools      = false; // choices are assistant messages that may call tools
    // Backend-private state the preparation produced (the local engine: its chat render, to read
    // tool calls back from the text). Opaque to the API layer.
    std::shared_ptr<const void> detail;

    size_t n_choices() const { return prompts.size() * static_cast<size_t>(req.n > 0 ? req.n : 1); }
};

// A fragment of a tool call, in the order the calls appear in the message. The first fragment
// of call `call` names it (id and name); later ones only add to its arguments.
struct tool_call_delta {
    size_t      call  = 0;
    bool        first = false;
    std::string id, name;  // set when `first`
    std::string arguments; // JSON text fragment
};

// A built-in tool the server ran for the model between two of its steps (agent/tool_loop.h): the
// client sees it as an output item of its own kind, never as a call it has to make.
struct server_tool_call {
    std::string id;        // "sql_..."
    std::string type;      // the output item's type: "sql_call"
    std::string name;      // the function the model called ("sql")
    std::string server;    // what it ran on (the database's name)
    std::string arguments; // the model's JSON arguments
    std::string output;    // the tool's result as given back to the model
    std::string error;     // non-empty when the tool failed (the model was shown this instead)
};

// One event of one choice. Without tools, `content` is generated text that is safe to show
// (no partial stop string, no split character). With tools, `content` is the message's content
// outside tool calls and `calls` the calls' fragments, each sent once it is certain. The last
// event of a choice has finish != none, or err.
struct backend_event {
    size_t                       choice = 0;
    std::string                  content;
    std::vector<tool_call_delta> calls;
    std::vector<token_logprob>   logprobs;
    finish_reason                finish = finish_reason::none;
    // On the finishing event: the whole message when the choice ran with tools (the deltas may
    // have held back what the parser revised; this is authoritative), and the token counts.
    std::optional<chat_output> message;
    int32_t                    n_prompt = 0, n_cached = 0, n_generated = 0;
    // Built-in tools the server ran since the previous event, in order.
    std::vector<server_tool_call> server_calls;
    // On a finishing event with finish == length: the budget that ended the run when it was not
    // the token limit ("max_tool_calls", "max_steps", "max_time"); empty otherwise.
    std::string incomplete_reason;
    // A failure of the whole request: no further events follow.
    std::optional<error> err;
};

// A submitted request. Events accumulate until take(); `notify` (given to submit) says there
// are some. After cancel() the backend frees what the request holds and may stop producing
// events; take() stays callable.
// Where a request runs and why: the backend's name ("local", or a remote's configured name) and
// the routing reason (local, remote, overflow, fallback, affinity, balanced, pinned). Empty when
// no routing took place (a server without remote backends).
struct route_info {
    std::string backend;
    std::string reason;
};

class generation_stream {
  public:
    virtual ~generation_stream()                = default;
    virtual std::vector<backend_event> take()   = 0;
    virtual void                       cancel() = 0;
    // Where the request runs now (it may change before the first event: a fallback).
    virtual route_info route() const { return {}; }
    // True when the answer's head should wait for the first event: until then the stream may
    // still move to another backend, and an error is still a plain HTTP error.
    virtual bool open_at_first_event() const { return false; }
};

class generation_backend {
  public:
    virtual ~generation_backend() = default;

    // Checks that need the backend but no preparation work (token ids inside the vocabulary):
    // an invalid request is refused before capacity is considered.
    virtual std::optional<error> check(const api_request &req) const = 0;
    // The `overloaded` error submitting `n_sequences` more sequences would meet now, if any.
    // Advisory: lets the API shed load before preparing; submit() decides.
    virtual std::optional<error> over_capacity(int32_t n_sequences) const = 0;
    // Turns a validated request into what submit() runs (chat template, tokenizer, grammar,
    // context-length check), or the error that refuses it. Thread-safe.
    virtual result<backend_request> prepare(api_request req) const = 0;
    // Starts the generation of a request prepare() returned (shared: the caller keeps reading it
    // while the backend runs it). On success, events follow on the returned stream; on failure
    // (`overloaded`, `unavailable`) nothing was started.
    virtual result<std::shared_ptr<generation_stream>> submit(std::shared_ptr<const backend_request> req,
                                                              std::function<void()>                  notify) = 0;
    // False once the backend cannot serve (its engine stopped on an error, its server is lost).
    virtual bool healthy() const = 0;
};

} // namespace inferbox

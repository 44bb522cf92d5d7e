#pragma once
// One generation's state as the job collects it from the engine (openai.cpp's completion_job), and
// the seam that turns it into an HTTP answer in one API's shape. The job owns the engine side
// (submit, events, cancel, metrics, rate charges); an answer_writer owns the wire format: Chat
// Completions and Completions (openai.cpp), Responses (responses.cpp). Every call happens on the
// exchange's executor.

#include "api/http_server.h"
#include "api/schema.h"
#include "backend/generation_backend.h"
#include "model/model.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace inferbox {

struct choice_state {
    // The message's content so far: everything generated, or with tools what is not a tool call.
    // Once the choice finished, the backend's whole reading of the message.
    std::string    text;
    nlohmann::json logprobs_content = nlohmann::json::array(); // chat form
    nlohmann::json lp_tokens = nlohmann::json::array(), lp_values = nlohmann::json::array(),
                   lp_top = nlohmann::json::array(), lp_offsets = nlohmann::json::array(); // completions form
    size_t        text_offset = 0;
    finish_reason finish      = finish_reason::none;
    bool          done        = false;
    int32_t       n_prompt = 0, n_cached = 0, n_generated = 0;
    int32_t       n_seen = 0; // events seen (a lower bound of tokens) before the final one
    // With tools: the calls as far as streamed (id, name, arguments so far), whole once finished.
    std::vector<chat_tool_call> tool_calls;
    // Built-in tools the server ran for this choice, in order (a tool loop), and the budget that
    // ended the loop early, if one did.
    std::vector<server_tool_call> server_calls;
    std::string                   incomplete_reason;
};

struct usage_counts {
    int32_t prompt = 0, cached = 0, generated = 0;
};

struct job_state {
    std::shared_ptr<const backend_request> run; // the prepared request, shared with the backend
    std::string                            model_id;
    std::string                            id;
    int64_t                                created = 0;     // unix seconds
    bool                                   tools   = false; // choices are messages that may call tools
    std::vector<choice_state>              choices;
    route_info                             route; // where it ran and why (empty: no routing)

    const api_request &req() const { return run->req; }
    // The prompt text choice `c` continues (echo).
    const std::string &echo_text(size_t c) const {
        return run->prompts[c / static_cast<size_t>(std::max(1, run->req.n))].echo_text;
    }

    // The prompt counts once per prompt, not once per choice.
    usage_counts usage() const;
    // "tool_calls" when a finished choice called tools, else the engine's reason ("stop", "length").
    const char *finish_of(const choice_state &c) const;
};

class answer_writer {
  public:
    virtual ~answer_writer() = default;
    // The id of the answer ("chatcmpl-...", "cmpl-...", "resp_...").
    virtual std::string new_id() const = 0;

    // Streaming only. The stream's headers are out; nothing generated yet.
    virtual void opened(http_exchange &ex, const job_state &s) = 0;
    // Streaming only. New text of a choice's message (its content, with tools: never a tool call's
    // markup), and its logprobs in the request's form (null when none or not asked).
    virtual void text(http_exchange &ex, const job_state &s, size_t choice, const std::string &delta,
                      const nlohmann::json &logprobs) = 0;
    // Streaming only. A tool call's progress: `first` when call `call` of the choice appears (its
    // id and name are known), then fragments of its arguments as they are generated.
    virtual void tool_call(http_exchange &ex, const job_state &s, size_t choice, size_t call, bool first,
                           const std::string &args_delta) = 0;
    // Streaming only. A choice finished: its content and tool calls are whole.
    virtual void choice_done(http_exchange &ex, const job_state &s, size_t choice) = 0;
    // Streaming only. The server ran a built-in tool for the choice (choice_state::server_calls'
    // last entry). APIs without an item for it (Chat Completions) show nothing.
    virtual void server_call(http_exchange & /*ex*/, const job_state & /*s*/, size_t /*choice*/) {}
    // Every choice finished: the whole answer (non-streaming) or the stream's end.
    virtual void completed(http_exchange &ex, const job_state &s) = 0;
    // The generation failed after the stream opened (before it, the job answers the error itself).
    virtual void stream_error(http_exchange &ex, const job_state &s, const error &err) = 0;
};

std::string random_id(const char *prefix);
std::string dump_json(const nlohmann::json &j); // invalid UTF-8 replaced

} // namespace inferbox

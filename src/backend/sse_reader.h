#pragma once
// Reads an OpenAI-compatible server's streamed answer — server-sent events whose data are
// chat.completion.chunk or text_completion objects, ending with `data: [DONE]` — into backend
// events (generation_backend.h). Pure: bytes in, events out; the remote backend feeds it what
// its HTTP call receives. Bounded: an event longer than max_event_bytes is an error.

#include "backend/generation_backend.h"

#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

class sse_reader {
  public:
    // `backend` names the server in error messages; `tools`: the choices are assistant messages
    // (the finishing event carries the whole message); `n_choices`: how many the request asked for.
    sse_reader(std::string backend, bool chat, bool tools, size_t n_choices, size_t max_event_bytes = 4u << 20);

    // Appends what the stream's next bytes complete. After an error event nothing more is read.
    void feed(std::string_view bytes, std::vector<backend_event> &out);
    // The stream ended (the connection closed or the body completed): an answer that did not
    // finish every choice is an error; finishes held back for the usage are released.
    void end(std::vector<backend_event> &out);

    bool failed() const { return failed_; }
    bool done() const { return done_; }      // [DONE] seen, or every choice finished with usage known
    bool any_output() const { return any_; } // an event with content, calls or a finish went out

  private:
    void on_data(std::string_view data, std::vector<backend_event> &out);
    void release(std::vector<backend_event> &out); // the held finishing events, with the usage
    void fail(std::string message, std::vector<backend_event> &out);

    struct choice {
        bool                       finished = false; // finish_reason seen
        bool                       released = false; // its finishing event went out
        finish_reason              finish   = finish_reason::none;
        chat_output                message; // with tools: what was streamed
        std::vector<token_logprob> pending_logprobs;
    };

    std::string         backend_;
    bool                chat_, tools_;
    size_t              max_event_bytes_;
    std::string         buf_;
    std::vector<choice> choices_;
    bool                usage_seen_ = false;
    int32_t             n_prompt_ = 0, n_cached_ = 0, n_generated_ = 0;
    bool                failed_ = false, done_ = false, any_ = false;
};

} // namespace inferbox

#pragma once
// One inference request in flight: submits it to the engine, turns engine events into OpenAI
// responses (a whole JSON body, or chat.completion.chunk / text_completion SSE chunks), and
// cancels it when the client goes away. Lives on the connection's strand.

#include "api/http_server.h"
#include "api/routes.h"
#include "api/schema.h"
#include "engine/engine.h"

#include <memory>

namespace inferbox {

struct prepared_prompt {
    std::vector<token_id> tokens;
    std::string           echo_text; // the prompt's text, for echo
};

// Starts the job; it answers `ex` itself (including errors from the engine). With `tools` (chat
// with tools offered and tool_choice not "none"), each choice's text is parsed for tool calls
// when it finishes: the message carries tool_calls and finish_reason "tool_calls", and a stream
// holds the choice's text back until then (a call cannot be told from prose before it ends).
void run_completion(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<engine> eng, api_request req,
                    std::vector<prepared_prompt> prompts, int32_t max_tokens, std::string model_id, job_context ctx,
                    std::shared_ptr<const chat_render> tools = nullptr);

} // namespace inferbox

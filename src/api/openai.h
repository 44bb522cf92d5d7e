#pragma once
// One inference request in flight: submits it to the engine, collects the engine's events, and
// has an answer_writer (answer.h) turn them into the client's API shape: by default OpenAI's
// (a whole JSON body, or chat.completion.chunk / text_completion SSE chunks). Cancels the
// generation when the client goes away. Lives on the connection's strand.

#include "api/answer.h"
#include "api/http_server.h"
#include "api/routes.h"
#include "api/schema.h"
#include "engine/engine.h"

#include <memory>

namespace inferbox {

// Starts the job; it answers `ex` itself (including errors from the engine). With `tools` (chat
// with tools offered and tool_choice not "none"), each choice's text is read as an assistant
// message: the answer carries its tool calls and finish_reason "tool_calls", and a stream sends
// content and tool calls (one after another, arguments in fragments) as they become certain.
// `writer` null: OpenAI's Chat Completions or Completions shape, by the request's kind.
void run_completion(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<engine> eng, api_request req,
                    std::vector<prepared_prompt> prompts, int32_t max_tokens, std::string model_id, job_context ctx,
                    std::shared_ptr<const chat_render> tools  = nullptr,
                    std::shared_ptr<answer_writer>     writer = nullptr);

} // namespace inferbox

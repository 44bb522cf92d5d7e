#pragma once
// One inference request in flight: submits it to a generation backend, collects its events, and
// has an answer_writer (answer.h) turn them into the client's API shape: by default OpenAI's
// (a whole JSON body, or chat.completion.chunk / text_completion SSE chunks). Cancels the
// generation when the client goes away. Lives on the connection's strand.

#include "api/answer.h"
#include "api/http_server.h"
#include "api/routes.h"
#include "api/schema.h"
#include "backend/generation_backend.h"

#include <memory>

namespace inferbox {

// Starts the job on `backend` with a request its prepare() returned; the job answers `ex` itself
// (including the backend's errors). With req.tools, each choice is an assistant message: the
// answer carries its tool calls and finish_reason "tool_calls", and a stream sends content and
// tool calls (one after another, arguments in fragments) as the backend makes them certain.
// `writer` null: OpenAI's Chat Completions or Completions shape, by the request's kind.
void run_completion(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<generation_backend> backend,
                    backend_request req, std::string model_id, job_context ctx,
                    std::shared_ptr<answer_writer> writer = nullptr);

} // namespace inferbox

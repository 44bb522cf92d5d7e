#pragma once
// The local llama.cpp engine as a generation backend: prepare() renders the chat template,
// tokenizes and compiles the output grammar; submit() queues one engine sequence group per
// prompt; the stream turns the engine's per-token events into backend events, reading tool
// calls out of the text (message_stream.h) when the request offered tools.

#include "api/guided.h"
#include "backend/generation_backend.h"
#include "engine/engine.h"

#include <memory>

namespace inferbox {

class local_backend final : public generation_backend {
  public:
    local_backend(std::shared_ptr<engine> eng, guided_limits limits);

    std::optional<error>                       check(const api_request &req) const override;
    std::optional<error>                       over_capacity(int32_t n_sequences) const override;
    result<backend_request>                    prepare(api_request req) const override;
    result<std::shared_ptr<generation_stream>> submit(std::shared_ptr<const backend_request> req,
                                                      std::function<void()>                  notify) override;
    bool                                       healthy() const override;

    const std::shared_ptr<engine> &get_engine() const { return eng_; }

  private:
    std::shared_ptr<engine> eng_;
    guided_limits           limits_;
};

} // namespace inferbox

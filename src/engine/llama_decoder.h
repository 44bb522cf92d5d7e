#pragma once
// The decoder (engine/decoder.h) over llama.cpp: one llama_context with a KV stream per slot, a
// reusable llama_batch, common_sampler chains, LoRA adapters loaded from GGUF files, and the draft
// model of speculative decoding when one is configured.

#include "common/status.h"
#include "engine/decoder.h"
#include "engine/engine.h"
#include "model/model.h"

#include <memory>

namespace inferbox {

// The llama.cpp decoder for model `m` under `cfg` as engine::settle left it (slots, tokens per
// slot, step tokens, threads, KV type and flash attention, draft model). Fails with a message
// naming the setting to lower when llama.cpp cannot create the context, or when the draft model
// cannot serve beside `m`.
result<std::unique_ptr<decoder>> make_llama_decoder(std::shared_ptr<const model> m, const engine_config &cfg);

// An engine serving `m` with llama.cpp: settles `cfg` against the model (its trained context by
// default), makes the decoder and starts the engine thread after a warm-up decode.
result<std::unique_ptr<engine>> start_engine(std::shared_ptr<const model> m, engine_config cfg);

} // namespace inferbox

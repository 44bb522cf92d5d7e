#pragma once

#include "engine/engine.h"

#include "llama.h"

namespace inferbox {

// Sets a llama.cpp context's KV cache types and flash attention from the engine's settings. The
// served model's context and its draft model's (engine/draft_model.cpp) use the same, so the
// draft decodes with what serve settled for the CPU or GPU and the memory estimate
// (store/profiles.h, estimate_draft_memory()) counts what runs. `automatic` KV is f16;
// `automatic` flash attention is llama.cpp's own auto (on where the model and device support it).
void set_attention_params(llama_context_params &cp, std::optional<kv_cache_type> kv, flash_attention fa);

} // namespace inferbox

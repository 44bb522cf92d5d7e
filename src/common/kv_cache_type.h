#pragma once
// The KV cache's element type (K and V alike), one enum for the engine, the memory estimates and
// the flags. q8_0 halves f16's memory, and llama.cpp needs flash attention for a quantized V cache;
// f32 doubles it and, with flash attention off, spares the conversions in the attention products
// on a CPU (store/profiles.h, attention_candidates()). Where a setting may be "auto" (serve's choice
// before it settles one), the type is std::optional<kv_cache_type> and nullopt means auto.

namespace inferbox {

enum class kv_cache_type { f16, q8_0, f32 };

} // namespace inferbox

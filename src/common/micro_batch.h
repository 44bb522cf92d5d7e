#pragma once
// llama.cpp's micro-batch (n_ubatch): the most tokens one compute graph processes. The engine, the
// draft model, `inferbox run` and the memory estimates (store/profiles.cpp) use this one value, so
// the estimate counts the compute buffers that run.

#include <cstdint>

namespace inferbox {

inline constexpr int32_t micro_batch_tokens = 512;

} // namespace inferbox

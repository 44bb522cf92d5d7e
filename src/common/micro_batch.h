#pragma once
// llama.cpp's micro-batch (n_ubatch): the most tokens one compute graph processes. The engine, the
// draft model, `inferbox run` and the memory estimates (store/profiles.cpp) take it from here, so
// the estimate counts the compute buffers that run.

#include <algorithm>
#include <cstdint>

namespace inferbox {

// With a GPU or RPC workers: llama.cpp's default, which GPU prompt kernels are sized for.
inline constexpr int32_t micro_batch_tokens = 512;

// On the CPU alone: half that. The compute buffer (the micro-batch's activations, the FFN's
// intermediate above all) halves with it, 16-25 MiB on a model of Qwen2.5-0.5B's layer shape,
// while prompt throughput on the CPU is the same within the noise (llama-bench pp1024: 1150
// against 1030 t/s on that shape, 154 against 159 on the 24-layer 0.5B model, 2 threads;
// docs/benchmarks.md, "Long contexts").
inline constexpr int32_t cpu_micro_batch_tokens = 256;

// The micro-batch for a configuration, at most `step_tokens` (llama.cpp's n_batch).
inline int32_t micro_batch_for(bool cpu_only, int32_t step_tokens) {
    return std::max(1, std::min(step_tokens, cpu_only ? cpu_micro_batch_tokens : micro_batch_tokens));
}

} // namespace inferbox

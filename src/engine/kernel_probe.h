#pragma once
// The compute side of a CPU decode roofline. Generating one token reads every weight once through
// a matrix-vector product (one activation column), so tokens per second on a CPU are bounded by
// the lower of two rates: how fast memory delivers weight bytes, and how fast the mul_mat kernel
// of the weight's type consumes them on all cores. This probe measures the second: for each type
// it builds a matrix of about 6 MiB (small enough to stay in the last-level cache of most CPUs, so
// DRAM does not limit it), multiplies it by one f32 column again and again through ggml's CPU
// backend, and reports the weight bytes consumed per second by the median product (a product that
// a preempted thread held up for a scheduler tick would skew a mean many times over).
//
// Next to it, the same type's product with k_probe_batch_columns columns at once: the work of a
// prompt, which ggml runs through its batched kernels (llamafile's sgemm, the repacked GEMMs),
// compute-bound and several times faster per column than the matrix-vector product. That figure
// predicts prompt time (a target for the first token), as the first predicts decode.
//
// It places the matrix the way llama.cpp places weights: in the first of the CPU backend's "extra"
// buffer types that accepts the product (ggml-cpu's repack buffer, which interleaves q4_0, q4_K,
// iq4_nl and others for AVX2/AVX-512/NEON kernels; AMX or KleidiAI where ggml was built with them),
// else in plain memory. So each figure is that of the kernel decode would run on this CPU.
//
// It runs its own ggml graphs on `threads` threads and takes about 2 × budget_ms per type plus a
// moment to build the matrix: run it when nothing else is computing (a benchmark, a command
// that measures the machine), not beside a serving model.

#include <cstdint>
#include <string>
#include <vector>

namespace inferbox {

// The batched product's width: a short prompt's micro-batch (wide enough for every batched kernel).
inline constexpr int64_t k_probe_batch_columns = 128;

struct kernel_throughput {
    std::string type;            // ggml's type name, lowercased: "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k", ...
    double      bytes_per_s = 0; // weight bytes the matrix-vector product consumed per second, all threads
    // Weight bytes × columns per second through a k_probe_batch_columns-column product (each prompt
    // token passes through every weight), all threads; 0 when the batched product did not run.
    double   batch_bytes_per_s = 0;
    double   seconds           = 0; // the timed windows, both products
    uint64_t weight_bytes      = 0; // the probe matrix's size in this type
};

// Measures the matrix-vector kernel and the batched product of each named type (empty: a default list: f16, bf16, q8_0,
// q6_k, q5_k, q4_k, q4_0) on `threads` threads, `budget_ms` per product (after a warm-up). Types
// ggml does not know or cannot quantize without an importance matrix are skipped. Names match
// case-insensitively; results come in the order asked.
std::vector<kernel_throughput> measure_kernels(int threads, const std::vector<std::string> &types = {},
                                               int budget_ms = 300);

} // namespace inferbox

#pragma once
// How fast this machine can decode a model, from two measured limits (a roofline). Decoding one
// token reads every weight once (apart from the token-embedding table, of which it reads one
// row), so a type's tensors take at least bytes / min(memory read bandwidth, the type's
// matrix-vector kernel throughput) per token; the sum over the types is the time per token.
// Which limit binds depends on the machine: on many cores the memory bus, on few cores the
// dequantize-and-dot work (2 cores cannot dequantize Q4_K at 56 GB/s).
//
// measure_read_bandwidth() is the first limit (a multi-threaded streaming read of a buffer much
// larger than the caches); engine/kernel_probe.h measures the second with ggml's own kernels.
// Both are measurements of the running machine: `inferbox hardware --measure` takes them and
// caches them; profiles use the cache.

#include "store/gguf.h"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace inferbox {

struct bandwidth_measurement {
    double   bytes_per_s  = 0; // all threads together
    uint32_t threads      = 0;
    uint64_t buffer_bytes = 0;
    double   seconds      = 0; // the timed window
};

// Reads a buffer of `buffer_bytes` (each thread its own slice, first touched by that thread) over
// and over on `threads` threads for about `window` after one warm-up pass, and returns the read
// rate. The reads use the widest vector loads the CPU has (AVX-512, AVX2, SSE2 on x86-64), as the
// decode kernels do: narrow loads cannot keep enough misses in flight to reach the memory's rate.
// The buffer should be several times the last-level cache (the default, 512 MiB, is).
bandwidth_measurement measure_read_bandwidth(uint32_t threads, uint64_t buffer_bytes = uint64_t{512} << 20,
                                             std::chrono::milliseconds window = std::chrono::milliseconds(800));

// The measured limits of a machine at one thread count.
struct machine_roofline {
    uint32_t                      threads          = 0;
    double                        read_bytes_per_s = 0;
    std::map<std::string, double> kernel_bytes_per_s; // by ggml type name in lower case ("q8_0")
    // The batched (prompt) product's weight bytes × columns per second, by type (kernel_probe.h).
    std::map<std::string, double> batch_kernel_bytes_per_s;
};

// A machine's limits are ceilings: a measurement taken while other work ran reads lower, never
// higher. `fresh` with each figure raised to `earlier`'s where that one was faster (the same
// machine, CPU, ISA and thread count: the caller checks). `kept` gets one line per figure kept
// from `earlier` ("memory read", "kernel q8_0", "batched q8_0"), so the caller can say so.
machine_roofline keep_faster(const machine_roofline &earlier, const machine_roofline &fresh,
                             std::vector<std::string> *kept = nullptr);

struct decode_prediction {
    double   tokens_per_s    = 0; // the roofline: each type at the lower of its two limits
    double   bandwidth_tps   = 0; // if only memory bandwidth limited every type
    double   kernel_tps      = 0; // if only the kernels limited (0 when a type was not measured)
    uint64_t bytes_per_token = 0; // weight bytes one decoded token reads
    // Prompt tokens a second through the batched kernels, every weight a prompt token passes
    // through (all but the embedding lookup and the output matrix, which llama.cpp applies to the
    // last prompt token only); 0 when a type's batched product was not measured.
    double prefill_tps = 0;
    // "bandwidth", "kernel" or "mixed": which limit binds for the bytes of the weights.
    std::string bound;
    // Types in the model whose kernel was not measured (their bytes are bounded by bandwidth only).
    std::vector<std::string> unmeasured;
};

// The predicted single-stream decode rate of a model (its tensors as the GGUF lists them) on a
// machine; nullopt without a bandwidth measurement or weights. The KV cache's reads, which grow
// with the context, are left out: this is the short-context figure (and, for prefill_tps, a
// short prompt's: attention's share grows with the prompt).
std::optional<decode_prediction> predict_decode(const gguf_info &model, const machine_roofline &m);

} // namespace inferbox

#pragma once
// Synthetic model headers and machines for the unit tests: a gguf_info as read_gguf_file would
// produce for a model of a given shape, and a hardware_info of a given size. Shared by the
// profile estimator's tests and serve's planning tests.

#include "store/gguf.h"
#include "store/hardware.h"

#include <cstdint>
#include <string>

namespace inferbox::synthetic {

inline constexpr uint64_t kib = 1024;
inline constexpr uint64_t mib = kib * 1024;
inline constexpr uint64_t gib = mib * 1024;

inline gguf_value u32(uint64_t v) {
    return gguf_value{gguf_type::uint32, v};
}

struct model_spec {
    std::string architecture = "llama";
    uint64_t    n_ctx        = 8192;
    uint64_t    n_embd       = 4096;
    uint64_t    n_layer      = 32;
    uint64_t    n_head       = 32;
    uint64_t    n_head_kv    = 8;
    uint64_t    n_ff         = 14336;
    uint64_t    n_vocab      = 128256;
    uint64_t    weight_bytes = 4 * gib;
};

// A gguf_info as read_gguf_file would produce for a model of this shape (one tensor holding
// every weight byte, enough for the estimate).
inline gguf_info make_model(const model_spec &s) {
    gguf_info g;
    g.architecture = s.architecture;
    g.metadata.emplace("general.architecture", gguf_value{gguf_type::string, s.architecture});
    const auto put = [&](const std::string &key, uint64_t v) {
        g.metadata.emplace(s.architecture + "." + key, u32(v));
    };
    if (s.n_ctx) {
        g.context_length = s.n_ctx;
        put("context_length", s.n_ctx);
    }
    if (s.n_embd) {
        g.embedding_length = s.n_embd;
        put("embedding_length", s.n_embd);
    }
    if (s.n_layer) {
        g.block_count = s.n_layer;
        put("block_count", s.n_layer);
    }
    if (s.n_head) {
        g.head_count = s.n_head;
        put("attention.head_count", s.n_head);
    }
    if (s.n_head_kv) {
        g.head_count_kv = s.n_head_kv;
        put("attention.head_count_kv", s.n_head_kv);
    }
    if (s.n_ff) {
        put("feed_forward_length", s.n_ff);
    }
    if (s.n_vocab) {
        g.vocab_size = s.n_vocab;
    }
    gguf_tensor_info t;
    t.name       = "blk.0.ffn_down.weight";
    t.n_dims     = 2;
    t.dims       = {s.n_ff, s.n_embd, 1, 1};
    t.type       = 1; // F16
    t.n_bytes    = s.weight_bytes;
    t.n_elements = s.weight_bytes / 2;
    g.tensors.push_back(t);
    g.tensor_bytes = s.weight_bytes;
    g.n_params     = t.n_elements;
    return g;
}

inline hardware_info make_hardware(uint64_t available = 64 * gib, uint64_t total = 128 * gib) {
    hardware_info hw;
    hw.arch                    = "x86_64";
    hw.n_logical_cpus          = 16;
    hw.n_physical_cores        = 8;
    hw.n_cores_effective       = 8;
    hw.n_threads_effective     = 16;
    hw.ram_total               = total;
    hw.ram_available           = available;
    hw.ram_total_effective     = total;
    hw.ram_available_effective = available;
    return hw;
}

} // namespace inferbox::synthetic

#include "store/weight_types.h"

#include <algorithm>
#include <array>
#include <cctype>

namespace inferbox {

namespace {

// ggml type ids (ggml.h's enum ggml_type).
constexpr uint32_t t_f32  = 0;
constexpr uint32_t t_f16  = 1;
constexpr uint32_t t_q4_0 = 2;
constexpr uint32_t t_q4_1 = 3;
constexpr uint32_t t_q5_0 = 6;
constexpr uint32_t t_q5_1 = 7;
constexpr uint32_t t_q8_0 = 8;
constexpr uint32_t t_q2_k = 10;
constexpr uint32_t t_q3_k = 11;
constexpr uint32_t t_q4_k = 12;
constexpr uint32_t t_q5_k = 13;
constexpr uint32_t t_q6_k = 14;
constexpr uint32_t t_bf16 = 30;

// Best first. Quality: 100 for the near-lossless tier, then falling with the perplexity figure.
constexpr std::array<weight_type, 18> types = {{
    {"f32", 0, t_f32, 0, 100, false},
    {"bf16", 32, t_bf16, 0, 100, false},
    {"f16", 1, t_f16, 0, 100, false},
    {"q8_0", 7, t_q8_0, 0, 100, true}, // +0.0026: within the tier
    {"q6_k", 18, t_q6_k, 0.0217, 90, true},
    {"q5_k_m", 17, t_q5_k, 0.0569, 80, true},
    {"q5_k_s", 16, t_q5_k, 0.1049, 75, true},
    {"q5_1", 9, t_q5_1, 0.1062, 74, true},
    {"q5_0", 8, t_q5_0, 0.1316, 70, true},
    {"q4_k_m", 15, t_q4_k, 0.1754, 60, true},
    {"q4_k_s", 14, t_q4_k, 0.2689, 55, true},
    {"q4_1", 3, t_q4_1, 0.4511, 50, true},
    {"q4_0", 2, t_q4_0, 0.4685, 45, true},
    {"q3_k_l", 13, t_q3_k, 0.5562, 40, true},
    {"q3_k_m", 12, t_q3_k, 0.6569, 35, true},
    {"q3_k_s", 11, t_q3_k, 1.6321, 30, true},
    {"q2_k_s", 21, t_q2_k, 3.1836, 20, true},
    {"q2_k", 10, t_q2_k, 3.5199, 15, true},
}};

// llama-quantize's aliases and ggml's tensor type names that are not a type's own name.
constexpr std::array<std::pair<std::string_view, std::string_view>, 3> aliases = {{
    {"q3_k", "q3_k_m"},
    {"q4_k", "q4_k_m"},
    {"q5_k", "q5_k_m"},
}};

std::string lower_text(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return out;
}

// The layer of "blk.N.…", or nullopt.
std::optional<uint64_t> layer_of(std::string_view name) {
    if (name.rfind("blk.", 0) != 0) {
        return std::nullopt;
    }
    uint64_t n      = 0;
    size_t   i      = 4;
    size_t   digits = 0;
    for (; i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && digits < 9; ++i, ++digits) {
        n = n * 10 + uint64_t(name[i] - '0');
    }
    if (digits == 0 || i >= name.size() || name[i] != '.') {
        return std::nullopt;
    }
    return n;
}

// llama.cpp's choice of layers that get more bits in the _M mixes.
bool more_bits_layer(uint64_t i, uint64_t n) {
    return i < n / 8 || i >= 7 * n / 8 || (i >= n / 8 && (i - n / 8) % 3 == 2);
}

uint32_t block_of(uint32_t type) {
    const auto t = ggml_type_traits_of(type);
    return t ? t->block_size : 1;
}

// llama.cpp's fallback for a row length the type's blocks do not divide.
uint32_t fit_row(uint32_t type, uint64_t row) {
    if (row % block_of(type) == 0) {
        return type;
    }
    uint32_t next = type;
    switch (type) {
    case t_q2_k:
    case t_q3_k:
        next = t_q4_0;
        break;
    case t_q4_k:
        next = t_q5_0;
        break;
    case t_q5_k:
        next = t_q5_1;
        break;
    case t_q6_k:
        next = t_q8_0;
        break;
    default:
        break;
    }
    return row % block_of(next) == 0 ? next : t_f16;
}

} // namespace

std::span<const weight_type> weight_types() {
    return types;
}

std::optional<weight_type> find_weight_type(std::string_view name) {
    std::string key = lower_text(name);
    for (const auto &[alias, target] : aliases) {
        if (key == alias) {
            key = target;
        }
    }
    for (const weight_type &t : weight_types()) {
        if (t.name == key) {
            return t;
        }
    }
    return std::nullopt;
}

std::string weight_type_names() {
    std::string out;
    for (const weight_type &t : weight_types()) {
        out += (out.empty() ? "" : ", ") + std::string(t.name);
    }
    return out + " (also q3_k, q4_k, q5_k for the _m mixes; any case)";
}

gguf_info retype_model(const gguf_info &model, const weight_type &target) {
    gguf_info  out        = model;
    const bool has_output = std::any_of(model.tensors.begin(), model.tensors.end(),
                                        [](const auto &t) { return t.name == "output.weight"; });
    const bool mix_m      = target.name == "q4_k_m" || target.name == "q5_k_m";
    const auto n_layer    = model.block_count.value_or(0);
    out.tensor_bytes      = 0;
    for (gguf_tensor_info &t : out.tensors) {
        if (t.n_dims >= 2 && t.name.ends_with("weight")) {
            uint32_t   type      = target.ggml_type;
            const bool is_output = t.name == "output.weight" || (!has_output && t.name == "token_embd.weight");
            if (target.quantized && is_output && target.ggml_type != t_q8_0) {
                type = t.dims[0] % block_of(t_q6_k) == 0 ? t_q6_k : t_q8_0;
            } else if (target.quantized && mix_m &&
                       (t.name.ends_with(".attn_v.weight") || t.name.ends_with(".ffn_down.weight"))) {
                const auto layer = layer_of(t.name);
                if (layer && n_layer > 0 && more_bits_layer(*layer, n_layer)) {
                    type = t_q6_k;
                }
            }
            if (target.quantized) {
                type = fit_row(type, t.dims[0]);
            }
            const auto traits = ggml_type_traits_of(type);
            t.type            = type;
            t.n_bytes         = traits ? t.n_elements / traits->block_size * traits->type_size : t.n_bytes;
        }
        out.tensor_bytes += t.n_bytes;
    }
    out.quantization = lower_text(target.name);
    return out;
}

std::optional<weight_type_advice> advise_weight_type(const gguf_info &model, const machine_roofline &m,
                                                     double min_speedup) {
    const auto now = predict_decode(model, m);
    if (!now) {
        return std::nullopt;
    }
    weight_type_advice a;
    a.current               = model.quantization;
    a.current_tps           = now->tokens_per_s;
    const auto current_type = find_weight_type(model.quantization);
    // Whether the matrices are quantized is read from the tensors, not the label.
    a.quantized = std::any_of(model.tensors.begin(), model.tensors.end(), [](const gguf_tensor_info &t) {
        return t.n_dims >= 2 && t.name.ends_with("weight") && t.type != t_f32 && t.type != t_f16 && t.type != t_bf16;
    });
    if (!current_type) {
        return a; // an unknown type has no place in the order: recommend nothing
    }
    a.known = true;
    for (const weight_type &t : weight_types()) {
        if (t.quality < current_type->quality || t.name == current_type->name) {
            continue;
        }
        auto p = predict_decode(retype_model(model, t), m);
        if (!p || !p->unmeasured.empty()) {
            continue; // a kernel never measured would be predicted at the memory limit: too hopeful
        }
        a.options.push_back({t, std::move(*p)});
    }
    std::stable_sort(a.options.begin(), a.options.end(), [](const auto &x, const auto &y) {
        return x.prediction.tokens_per_s > y.prediction.tokens_per_s;
    });
    if (!a.options.empty() && a.options.front().prediction.tokens_per_s >= min_speedup * a.current_tps) {
        a.recommended    = a.options.front();
        a.speedup        = a.recommended->prediction.tokens_per_s / a.current_tps;
        a.needs_original = a.quantized;
    }
    return a;
}

} // namespace inferbox

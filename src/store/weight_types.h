#pragma once
// The weight types `inferbox import --quantize` can write, their quality order, and which one a
// model should have on this machine (`inferbox profiles`): pure functions over a model's tensor
// shapes and the measured roofline (store/roofline.h), no llama.cpp (tests/unit/weight_types_test
// checks that the ids in the table are llama.cpp's).
//
// Quality order. Each type carries the perplexity increase llama.cpp's quantizer lists for it
// (`llama-quantize --help`, Llama-3-8B; F16/BF16 on Mistral-7B). F32, F16, BF16 and Q8_0 (at most
// +0.003) form one tier, "near-lossless", and count as equal; below it the types are ordered by
// that figure. A type is never recommended below the quality of what the model has now.
//
// Thread safety: everything here is reentrant.

#include "store/gguf.h"
#include "store/roofline.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

struct weight_type {
    std::string_view name;      // canonical, lower case: "q4_k_m"
    uint32_t         file_type; // llama_ftype (general.file_type)
    uint32_t         ggml_type; // the type of most of its matrices
    double           ppl_delta; // llama.cpp's perplexity increase over F16 (0 in the top tier)
    int              quality;   // higher is better; equal within the near-lossless tier
    bool             quantized; // false for f32, f16, bf16
};

// Every type import --quantize accepts, best quality first.
std::span<const weight_type> weight_types();

// The type called `name`, case-insensitive; also llama-quantize's aliases q3_k, q4_k, q5_k (the
// _M mixes) and ggml's tensor names (the "dominant type" gguf_info::quantization reports).
// nullopt when unknown.
std::optional<weight_type> find_weight_type(std::string_view name);

// "f32, f16, bf16, q8_0, …": the accepted names, for an error message.
std::string weight_type_names();

// The model with every tensor as llama.cpp's quantizer would write it for `target` (type and
// bytes; shapes unchanged). Modelled: only matrices (2+ dimensions, name ending in "weight") are
// converted; the output matrix (output.weight, or token_embd.weight when tied) becomes Q6_K for
// quantized targets other than Q8_0; Q4_K_M and Q5_K_M put attn_v and ffn_down of llama.cpp's
// "more bits" layers (first and last eighth, every third between) in Q6_K; a row length that is
// not a multiple of the type's block falls back as llama.cpp does (Q2_K/Q3_K → Q4_0, Q4_K → Q5_0,
// Q5_K → Q5_1, Q6_K → Q8_0, then F16). Architecture-specific exceptions are not modelled.
gguf_info retype_model(const gguf_info &model, const weight_type &target);

// One candidate type's predicted decode rate.
struct weight_type_option {
    weight_type       type;
    decode_prediction prediction;
};

struct weight_type_advice {
    std::string current;             // the model's type as gguf_info::quantization says ("F32")
    bool        known       = false; // `current` is in weight_types()
    bool        quantized   = false; // the source is already quantized
    double      current_tps = 0;     // the model's own prediction
    // Types of equal or better quality than `current` whose kernels were all measured, fastest first.
    std::vector<weight_type_option> options;
    // The fastest option when it is at least `min_speedup` faster than the model as it is.
    std::optional<weight_type_option> recommended;
    double                            speedup = 0; // recommended tokens/s ÷ current_tps
    // The recommendation needs the original unquantized weights: the source is quantized, and
    // requantizing it loses quality (the result is no better than the source).
    bool needs_original = false;
};

inline constexpr double k_min_weight_type_speedup = 1.10;

// Which weight type this model should have on machine `m`: nullopt without a prediction for the
// model as it is (no bandwidth measurement, no weights).
std::optional<weight_type_advice> advise_weight_type(const gguf_info &model, const machine_roofline &m,
                                                     double min_speedup = k_min_weight_type_speedup);

} // namespace inferbox

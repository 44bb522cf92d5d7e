// Weight types (store/weight_types.h): the names import --quantize accepts, their ids against
// llama.cpp's, the quality order, the bytes a type would take, and the rule that picks a faster
// type of equal or better quality from the measured roofline.
#include "store/weight_types.h"

#include "ggml.h"
#include "llama.h"

#include <gtest/gtest.h>

#include <cctype>
#include <map>
#include <string>

using namespace inferbox;

namespace {

gguf_tensor_info matrix(const std::string &name, uint64_t ne0, uint64_t ne1, uint32_t type) {
    gguf_tensor_info t;
    t.name            = name;
    t.n_dims          = ne1 > 1 ? 2 : 1;
    t.dims            = {ne0, ne1, 1, 1};
    t.type            = type;
    t.n_elements      = ne0 * ne1;
    const auto traits = ggml_type_traits_of(type);
    t.n_bytes         = t.n_elements / traits->block_size * traits->type_size;
    return t;
}

// A llama-shaped model: 8 layers of 4096-wide attention and FFN matrices, F32 norms, a separate
// output matrix; every matrix of `type`.
gguf_info model_of(uint32_t type, const std::string &quantization) {
    gguf_info m;
    m.block_count  = 8;
    m.quantization = quantization;
    m.tensors.push_back(matrix("token_embd.weight", 4096, 32000, type));
    for (int i = 0; i < 8; ++i) {
        const std::string p = "blk." + std::to_string(i) + ".";
        for (const char *n : {"attn_q", "attn_k", "attn_v", "attn_output"}) {
            m.tensors.push_back(matrix(p + n + ".weight", 4096, 4096, type));
        }
        m.tensors.push_back(matrix(p + "ffn_up.weight", 4096, 11040, type));
        m.tensors.push_back(matrix(p + "ffn_down.weight", 11040, 4096, type));
        m.tensors.push_back(matrix(p + "attn_norm.weight", 4096, 1, GGML_TYPE_F32));
    }
    m.tensors.push_back(matrix("output.weight", 4096, 32000, type));
    return m;
}

machine_roofline machine(double read, std::map<std::string, double> kernels) {
    machine_roofline m;
    m.threads            = 2;
    m.read_bytes_per_s   = read;
    m.kernel_bytes_per_s = std::move(kernels);
    return m;
}

// Every type measured at 60 GB/s against 30 GB/s of memory: bandwidth binds everywhere.
machine_roofline bandwidth_bound() {
    std::map<std::string, double> k;
    for (const char *t :
         {"f32", "f16", "bf16", "q8_0", "q6_k", "q5_k", "q5_0", "q5_1", "q4_k", "q4_0", "q4_1", "q3_k", "q2_k"}) {
        k[t] = 60e9;
    }
    return machine(30e9, k);
}

} // namespace

TEST(WeightTypes, names_parse_case_insensitively_with_aliases) {
    ASSERT_TRUE(find_weight_type("Q4_K_M").has_value());
    EXPECT_EQ(find_weight_type("Q4_K_M")->name, "q4_k_m");
    EXPECT_EQ(find_weight_type("q8_0")->name, "q8_0");
    EXPECT_EQ(find_weight_type("BF16")->name, "bf16");
    EXPECT_EQ(find_weight_type("q4_k")->name, "q4_k_m"); // llama-quantize's alias, and ggml's tensor name
    EXPECT_EQ(find_weight_type("Q5_K")->name, "q5_k_m");
    EXPECT_EQ(find_weight_type("q3_k")->name, "q3_k_m");
    EXPECT_FALSE(find_weight_type("q4").has_value());
    EXPECT_FALSE(find_weight_type("").has_value());
    EXPECT_FALSE(find_weight_type("q4_k_m ").has_value());
    EXPECT_FALSE(find_weight_type("iq2_xxs").has_value()); // needs an importance matrix: not offered
    const std::string names = weight_type_names();
    for (const auto &t : weight_types()) {
        EXPECT_NE(names.find(std::string(t.name)), std::string::npos) << t.name;
    }
}

TEST(WeightTypes, ids_are_llama_cpps) {
    const std::map<std::string, llama_ftype> ftypes = {
        {"f32", LLAMA_FTYPE_ALL_F32},          {"f16", LLAMA_FTYPE_MOSTLY_F16},
        {"bf16", LLAMA_FTYPE_MOSTLY_BF16},     {"q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
        {"q6_k", LLAMA_FTYPE_MOSTLY_Q6_K},     {"q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M},
        {"q5_k_s", LLAMA_FTYPE_MOSTLY_Q5_K_S}, {"q5_1", LLAMA_FTYPE_MOSTLY_Q5_1},
        {"q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},     {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M},
        {"q4_k_s", LLAMA_FTYPE_MOSTLY_Q4_K_S}, {"q4_1", LLAMA_FTYPE_MOSTLY_Q4_1},
        {"q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},     {"q3_k_l", LLAMA_FTYPE_MOSTLY_Q3_K_L},
        {"q3_k_m", LLAMA_FTYPE_MOSTLY_Q3_K_M}, {"q3_k_s", LLAMA_FTYPE_MOSTLY_Q3_K_S},
        {"q2_k_s", LLAMA_FTYPE_MOSTLY_Q2_K_S}, {"q2_k", LLAMA_FTYPE_MOSTLY_Q2_K},
    };
    EXPECT_EQ(weight_types().size(), ftypes.size());
    for (const auto &t : weight_types()) {
        ASSERT_EQ(ftypes.count(std::string(t.name)), 1U) << t.name;
        EXPECT_EQ(t.file_type, uint32_t(ftypes.at(std::string(t.name)))) << t.name;
        // The main matrix type: ggml's name is the type's name up to its _S/_M/_L mix suffix.
        std::string base(t.name);
        for (const char *mix : {"_m", "_s", "_l"}) {
            if (base.size() > 4 && base.compare(base.size() - 2, 2, mix) == 0) {
                base.resize(base.size() - 2);
            }
        }
        std::string ggml_name = ggml_type_name(ggml_type(t.ggml_type)); // "q4_K"
        for (char &c : ggml_name) {
            c = char(std::tolower(static_cast<unsigned char>(c)));
        }
        EXPECT_EQ(ggml_name, base) << t.name;
        EXPECT_EQ(t.quantized, t.name != "f32" && t.name != "f16" && t.name != "bf16") << t.name;
    }
}

TEST(WeightTypes, quality_falls_with_the_perplexity_figure_and_the_top_tier_is_equal) {
    const auto ts = weight_types();
    for (size_t i = 1; i < ts.size(); ++i) {
        EXPECT_LE(ts[i].quality, ts[i - 1].quality) << ts[i].name;
        EXPECT_GE(ts[i].ppl_delta, ts[i - 1].ppl_delta) << ts[i].name;
        EXPECT_EQ(ts[i].quality == ts[i - 1].quality, ts[i].ppl_delta == ts[i - 1].ppl_delta) << ts[i].name;
    }
    for (const char *t : {"f32", "f16", "bf16", "q8_0"}) {
        EXPECT_EQ(find_weight_type(t)->quality, find_weight_type("f16")->quality) << t;
    }
    EXPECT_LT(find_weight_type("q6_k")->quality, find_weight_type("q8_0")->quality);
    EXPECT_LT(find_weight_type("q4_0")->quality, find_weight_type("q4_k_m")->quality);
}

TEST(WeightTypes, retyping_follows_llama_cpps_mix_and_block_rules) {
    const gguf_info f32 = model_of(GGML_TYPE_F32, "F32");
    // Q8_0: every matrix, output included; the 1-D norms stay F32.
    const gguf_info q8 = retype_model(f32, *find_weight_type("q8_0"));
    for (const auto &t : q8.tensors) {
        EXPECT_EQ(t.type, t.n_dims >= 2 ? uint32_t(GGML_TYPE_Q8_0) : uint32_t(GGML_TYPE_F32)) << t.name;
        EXPECT_EQ(t.n_bytes, t.n_dims >= 2 ? t.n_elements / 32 * 34 : t.n_elements * 4) << t.name;
    }
    // Q4_0: the output matrix in Q6_K.
    const gguf_info q4 = retype_model(f32, *find_weight_type("q4_0"));
    EXPECT_EQ(q4.tensors.back().name, "output.weight");
    EXPECT_EQ(q4.tensors.back().type, uint32_t(GGML_TYPE_Q6_K));
    EXPECT_EQ(q4.tensors.front().type, uint32_t(GGML_TYPE_Q4_0)); // the untied token embeddings
    // Q4_K_M: attn_v and ffn_down in Q6_K in the "more bits" layers (of 8: 0, 3, 6, 7), Q4_K elsewhere.
    const gguf_info km = retype_model(f32, *find_weight_type("q4_k_m"));
    for (const auto &t : km.tensors) {
        if (t.name.find("attn_v") != std::string::npos || t.name.find("ffn_down") != std::string::npos) {
            const int  layer = t.name[4] - '0';
            const bool more  = layer == 0 || layer == 3 || layer == 6 || layer == 7;
            // ffn_down rows are 11040 wide (43 × 256 + 32): not a multiple of 256, so Q4_K falls back to Q5_0 and
            // Q6_K to Q8_0.
            const bool down = t.name.find("ffn_down") != std::string::npos;
            EXPECT_EQ(t.type, more ? uint32_t(down ? GGML_TYPE_Q8_0 : GGML_TYPE_Q6_K)
                                   : uint32_t(down ? GGML_TYPE_Q5_0 : GGML_TYPE_Q4_K))
                << t.name;
        }
    }
    uint64_t sum = 0;
    for (const auto &t : km.tensors) {
        sum += t.n_bytes;
    }
    EXPECT_EQ(km.tensor_bytes, sum);
    EXPECT_LT(km.tensor_bytes, q8.tensor_bytes);
    // Rows of 40 fit no 32-block: F16.
    gguf_info odd;
    odd.tensors = {matrix("blk.0.attn_q.weight", 40, 40, GGML_TYPE_F32)};
    EXPECT_EQ(retype_model(odd, *find_weight_type("q4_0")).tensors[0].type, uint32_t(GGML_TYPE_F16));
}

TEST(WeightTypes, an_f32_model_is_told_to_take_the_fastest_near_lossless_type) {
    const auto a = advise_weight_type(model_of(GGML_TYPE_F32, "F32"), bandwidth_bound());
    ASSERT_TRUE(a.has_value());
    EXPECT_TRUE(a->known);
    EXPECT_FALSE(a->quantized);
    ASSERT_TRUE(a->recommended.has_value());
    // Bandwidth-bound: the fewest bytes at the top tier's quality is Q8_0 (not Q4_0, which is faster
    // but worse).
    EXPECT_EQ(a->recommended->type.name, "q8_0");
    EXPECT_NEAR(a->speedup, 4.0 * 32 / 34, 0.05);
    EXPECT_FALSE(a->needs_original);
    for (const auto &o : a->options) {
        EXPECT_EQ(o.type.quality, 100) << o.type.name;
    }
    ASSERT_EQ(a->options.size(), 3U); // f16, bf16, q8_0
    EXPECT_GE(a->options[0].prediction.tokens_per_s, a->options[1].prediction.tokens_per_s);
}

TEST(WeightTypes, a_slow_kernel_can_make_a_bigger_type_the_faster_one) {
    // Q8_0's kernel at 5 GB/s, F16's at 60: F16 wins for an F32 model.
    auto m                       = bandwidth_bound();
    m.kernel_bytes_per_s["q8_0"] = 5e9;
    const auto a                 = advise_weight_type(model_of(GGML_TYPE_F32, "F32"), m);
    ASSERT_TRUE(a && a->recommended);
    EXPECT_TRUE(a->recommended->type.name == "f16" || a->recommended->type.name == "bf16");
}

TEST(WeightTypes, nothing_is_recommended_under_ten_percent_or_below_the_quality) {
    // A Q8_0 model: the equal-quality types are all bigger; lower ones are never offered.
    const auto q8 = advise_weight_type(model_of(GGML_TYPE_Q8_0, "Q8_0"), bandwidth_bound());
    ASSERT_TRUE(q8.has_value());
    EXPECT_FALSE(q8->recommended.has_value());
    EXPECT_TRUE(q8->quantized);
    for (const auto &o : q8->options) {
        EXPECT_GE(o.type.quality, find_weight_type("q8_0")->quality);
    }
    // F16 → BF16 is the same size: no gain, no recommendation past F16 → Q8_0 at a threshold of 2.5×.
    const auto f16 = advise_weight_type(model_of(GGML_TYPE_F16, "F16"), bandwidth_bound(), 2.5);
    ASSERT_TRUE(f16.has_value());
    EXPECT_FALSE(f16->recommended.has_value());
    const auto f16_default = advise_weight_type(model_of(GGML_TYPE_F16, "F16"), bandwidth_bound());
    ASSERT_TRUE(f16_default && f16_default->recommended);
    EXPECT_EQ(f16_default->recommended->type.name, "q8_0");
}

TEST(WeightTypes, a_quantized_source_needs_the_original_weights) {
    // Q4_0's kernel is slow (kernel-bound): Q4_K_M, better quality, would be faster.
    auto m                       = bandwidth_bound();
    m.kernel_bytes_per_s["q4_0"] = 3e9;
    const auto a                 = advise_weight_type(model_of(GGML_TYPE_Q4_0, "Q4_0"), m);
    ASSERT_TRUE(a && a->recommended);
    EXPECT_GE(a->recommended->type.quality, find_weight_type("q4_0")->quality);
    EXPECT_NE(a->recommended->type.name, "q4_0");
    EXPECT_TRUE(a->needs_original);
}

TEST(WeightTypes, unmeasured_kernels_and_unknown_types_are_not_guessed) {
    auto m = bandwidth_bound();
    m.kernel_bytes_per_s.erase("q8_0");
    const auto a = advise_weight_type(model_of(GGML_TYPE_F32, "F32"), m);
    ASSERT_TRUE(a && a->recommended);
    EXPECT_NE(a->recommended->type.name, "q8_0");
    for (const auto &o : a->options) {
        EXPECT_NE(o.type.name, "q8_0");
    }
    const auto unknown = advise_weight_type(model_of(GGML_TYPE_F32, "IQ2_XXS"), bandwidth_bound());
    ASSERT_TRUE(unknown.has_value());
    EXPECT_FALSE(unknown->known);
    EXPECT_FALSE(unknown->recommended.has_value());
    EXPECT_FALSE(advise_weight_type(model_of(GGML_TYPE_F32, "F32"), machine(0, {})).has_value());
}

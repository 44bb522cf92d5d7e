// The decode roofline: the prediction from measured limits (pure arithmetic over a model's
// tensors) and the bandwidth probe's basic sanity.
#include "store/roofline.h"

#include <gtest/gtest.h>

using namespace inferbox;

namespace {

gguf_tensor_info tensor(const std::string &name, uint32_t type, uint64_t bytes) {
    gguf_tensor_info t;
    t.name    = name;
    t.type    = type;
    t.n_bytes = bytes;
    return t;
}

constexpr uint32_t f16  = 1;
constexpr uint32_t q8_0 = 8;
constexpr uint32_t q4_k = 12;

} // namespace

TEST(Roofline, each_type_runs_at_the_lower_of_its_two_limits) {
    gguf_info model;
    model.tensors = {tensor("token_embd.weight", q8_0, 300'000'000), // looked up, not read whole
                     tensor("blk.0.attn_q.weight", q8_0, 1'000'000'000), tensor("output.weight", f16, 500'000'000)};
    machine_roofline m;
    m.read_bytes_per_s   = 10e9;
    m.kernel_bytes_per_s = {{"q8_0", 5e9}, {"f16", 20e9}};
    const auto p         = predict_decode(model, m);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->bytes_per_token, 1'500'000'000U);
    EXPECT_NEAR(p->tokens_per_s, 1.0 / (1e9 / 5e9 + 0.5e9 / 10e9), 1e-9); // q8_0 kernel-bound, f16 memory-bound
    EXPECT_NEAR(p->bandwidth_tps, 1.0 / (1.5e9 / 10e9), 1e-9);
    EXPECT_NEAR(p->kernel_tps, 1.0 / (1e9 / 5e9 + 0.5e9 / 20e9), 1e-9);
    EXPECT_EQ(p->bound, "mixed");
    EXPECT_TRUE(p->unmeasured.empty());
}

TEST(Roofline, tied_embeddings_are_read_whole_and_unmeasured_types_fall_back_to_bandwidth) {
    gguf_info model;
    model.tensors = {tensor("token_embd.weight", f16, 200'000'000), tensor("blk.0.ffn_up.weight", q4_k, 800'000'000)};
    machine_roofline m;
    m.read_bytes_per_s   = 10e9;
    m.kernel_bytes_per_s = {{"f16", 40e9}};
    const auto p         = predict_decode(model, m);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->bytes_per_token, 1'000'000'000U);
    EXPECT_NEAR(p->tokens_per_s, 10.0, 1e-9);
    EXPECT_EQ(p->kernel_tps, 0); // q4_k was not measured
    EXPECT_EQ(p->bound, "bandwidth");
    ASSERT_EQ(p->unmeasured.size(), 1U);
    EXPECT_EQ(p->unmeasured[0], "q4_k");

    m.kernel_bytes_per_s["q4_k"] = 4e9; // now the kernel binds everything that is not f16... and f16 is fast
    EXPECT_EQ(predict_decode(model, m)->bound, "mixed");
    m.kernel_bytes_per_s["f16"] = 5e9;
    EXPECT_EQ(predict_decode(model, m)->bound, "kernel");
}

TEST(Roofline, nothing_to_predict_without_a_bandwidth_or_weights) {
    gguf_info        model;
    machine_roofline m;
    m.read_bytes_per_s = 10e9;
    EXPECT_FALSE(predict_decode(model, m).has_value());
    model.tensors      = {tensor("blk.0.attn_q.weight", q8_0, 100)};
    m.read_bytes_per_s = 0;
    EXPECT_FALSE(predict_decode(model, m).has_value());
}

TEST(Roofline, the_bandwidth_probe_reads_its_whole_buffer_for_its_window) {
    const auto b = measure_read_bandwidth(1, uint64_t{8} << 20, std::chrono::milliseconds(40));
    EXPECT_EQ(b.threads, 1U);
    EXPECT_EQ(b.buffer_bytes, uint64_t{8} << 20);
    EXPECT_GE(b.seconds, 0.04);
    EXPECT_GT(b.bytes_per_s, 1e8); // any machine reads more than 100 MB/s
}

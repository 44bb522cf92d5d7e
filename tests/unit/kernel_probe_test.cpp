// The CPU kernel probe (engine/kernel_probe.h): a short measurement of two types on one thread
// gives plausible figures for cache-sized matrices, one column and a prompt's batch, skips a name ggml does not know,
// and sizes the matrix by its type.

#include "engine/kernel_probe.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace inferbox;

namespace {

constexpr uint64_t mib = uint64_t(1) << 20;

const kernel_throughput *find(const std::vector<kernel_throughput> &results, const std::string &type) {
    for (const kernel_throughput &r : results) {
        if (r.type == type) {
            return &r;
        }
    }
    return nullptr;
}

TEST(kernel_probe, measures_known_types_and_skips_unknown_ones) {
    const std::vector<kernel_throughput> results = measure_kernels(1, {"f16", "nope", "q8_0"}, 50);
    ASSERT_EQ(results.size(), 2u);
    EXPECT_EQ(find(results, "nope"), nullptr);

    const kernel_throughput *f16  = find(results, "f16");
    const kernel_throughput *q8_0 = find(results, "q8_0");
    ASSERT_NE(f16, nullptr);
    ASSERT_NE(q8_0, nullptr);
    EXPECT_EQ(results[0].type, "f16"); // in the order asked
    for (const kernel_throughput *r : {f16, q8_0}) {
        SCOPED_TRACE(r->type);
        EXPECT_GT(r->bytes_per_s, 1e8);       // any CPU does 100 MB/s
        EXPECT_GT(r->batch_bytes_per_s, 1e8); // both types have a batched product on every CPU
        EXPECT_GT(r->seconds, 0.0);
        EXPECT_GE(r->weight_bytes, 5 * mib);
        EXPECT_LE(r->weight_bytes, 7 * mib);
    }
    EXPECT_LT(q8_0->weight_bytes, f16->weight_bytes);
}

TEST(kernel_probe, names_match_in_any_case) {
    const std::vector<kernel_throughput> results = measure_kernels(1, {"Q4_K", "iq2_xxs"}, 1);
    ASSERT_EQ(results.size(), 1u); // iq2_xxs needs an importance matrix to quantize: skipped
    EXPECT_EQ(results[0].type, "q4_k");
}

} // namespace

// Importance matrices (store/imatrix.h): both file formats, the values the quantizer gets, and
// corrupt files that must fail with a message naming the file, never crash.
#include "store/imatrix.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

using namespace inferbox;

namespace {

using bytes = std::vector<uint8_t>;

void put_raw(bytes &b, const void *p, size_t n) {
    const auto *c = static_cast<const uint8_t *>(p);
    b.insert(b.end(), c, c + n);
}
void put_i32(bytes &b, int32_t v) {
    put_raw(b, &v, 4);
}
void put_u32(bytes &b, uint32_t v) {
    put_raw(b, &v, 4);
}
void put_u64(bytes &b, uint64_t v) {
    put_raw(b, &v, 8);
}
void put_f32(bytes &b, float v) {
    put_raw(b, &v, 4);
}

struct legacy_entry {
    std::string        name;
    int32_t            ncall;
    std::vector<float> values;
};

bytes legacy(const std::vector<legacy_entry> &entries, bool trailer = true) {
    bytes b;
    put_i32(b, int32_t(entries.size()));
    for (const auto &e : entries) {
        put_i32(b, int32_t(e.name.size()));
        put_raw(b, e.name.data(), e.name.size());
        put_i32(b, e.ncall);
        put_i32(b, int32_t(e.values.size()));
        for (float v : e.values) {
            put_f32(b, v);
        }
    }
    if (trailer) {
        put_i32(b, 7); // chunks
        const std::string ds = "wiki.train.raw";
        put_i32(b, int32_t(ds.size()));
        put_raw(b, ds.data(), ds.size());
    }
    return b;
}

// A GGUF v3 file holding F32 tensors (name, dims, values), and a u32 imatrix.chunk_count.
struct gguf_tensor {
    std::string           name;
    std::vector<uint64_t> dims;
    std::vector<float>    values;
    uint32_t              type = 0;
};

bytes gguf(const std::vector<gguf_tensor> &tensors) {
    bytes b;
    put_raw(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, tensors.size());
    put_u64(b, 1);
    const std::string key = "imatrix.chunk_count";
    put_u64(b, key.size());
    put_raw(b, key.data(), key.size());
    put_u32(b, 4); // u32
    put_u32(b, 12);
    uint64_t offset = 0;
    for (const auto &t : tensors) {
        put_u64(b, t.name.size());
        put_raw(b, t.name.data(), t.name.size());
        put_u32(b, uint32_t(t.dims.size()));
        for (uint64_t d : t.dims) {
            put_u64(b, d);
        }
        put_u32(b, t.type);
        put_u64(b, offset);
        offset += (t.values.size() * 4 + 31) / 32 * 32;
    }
    while (b.size() % 32 != 0) {
        b.push_back(0);
    }
    for (const auto &t : tensors) {
        for (float v : t.values) {
            put_f32(b, v);
        }
        while (b.size() % 32 != 0) {
            b.push_back(0);
        }
    }
    return b;
}

std::string error_of(const bytes &b) {
    auto r = parse_imatrix(b, "m.dat");
    EXPECT_FALSE(r.ok());
    if (r.ok()) {
        return {};
    }
    EXPECT_EQ(r.err().message.rfind("m.dat: ", 0), 0U) << r.err().message;
    EXPECT_EQ(r.err().kind, error_kind::invalid_request);
    return r.err().message;
}

gguf_tensor_info matrix(const std::string &name, uint64_t ne0, uint64_t ne1, uint64_t ne2 = 1) {
    gguf_tensor_info t;
    t.name       = name;
    t.n_dims     = ne2 > 1 ? 3 : 2;
    t.dims       = {ne0, ne1, ne2, 1};
    t.n_elements = ne0 * ne1 * ne2;
    return t;
}

} // namespace

TEST(Imatrix, legacy_values_are_divided_by_the_call_count) {
    auto r = parse_imatrix(legacy({{"blk.0.attn_q.weight", 4, {4, 8, 2}}, {"output.weight", 0, {3, 5}}}), "m.dat");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->format, "legacy");
    ASSERT_EQ(r->entries.size(), 2U);
    EXPECT_EQ(r->entries.at("blk.0.attn_q.weight"), (std::vector<float>{1, 2, 0.5F}));
    EXPECT_EQ(r->entries.at("output.weight"), (std::vector<float>{3, 5})); // no calls: as is
    EXPECT_EQ(r->chunk_count, 7U);
    EXPECT_EQ(r->datasets, std::vector<std::string>{"wiki.train.raw"});
    // The trailer is optional.
    auto bare = parse_imatrix(legacy({{"a.weight", 1, {1}}}, false), "m.dat");
    ASSERT_TRUE(bare.ok()) << bare.err().message;
    EXPECT_EQ(bare->chunk_count, 0U);
}

TEST(Imatrix, gguf_values_are_sums_over_counts_per_expert) {
    // Two experts of 3 columns; the second saw no tokens (importance 1, as llama.cpp's tool does).
    auto r = parse_imatrix(gguf({{"blk.0.ffn_up_exps.weight.in_sum2", {3, 2}, {2, 4, 6, 9, 9, 9}},
                                 {"blk.0.ffn_up_exps.weight.counts", {1, 2}, {2, 0}},
                                 {"something.else", {2}, {1, 1}}}),
                           "m.gguf");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->format, "gguf");
    ASSERT_EQ(r->entries.size(), 1U);
    EXPECT_EQ(r->entries.at("blk.0.ffn_up_exps.weight"), (std::vector<float>{1, 2, 3, 1, 1, 1}));
    EXPECT_EQ(r->chunk_count, 12U);
}

TEST(Imatrix, corrupt_legacy_files_fail_naming_the_problem) {
    EXPECT_NE(error_of(bytes{}).find("truncated"), std::string::npos);
    EXPECT_NE(error_of(legacy({}, false)).find("no entries"), std::string::npos);
    bytes negative;
    put_i32(negative, -5);
    EXPECT_NE(error_of(negative).find("the entry count is -5"), std::string::npos);
    bytes huge_count;
    put_i32(huge_count, 1 << 30);
    EXPECT_NE(error_of(huge_count).find("must be 0 to"), std::string::npos);
    // A value count far beyond the file: refused before anything is allocated.
    bytes huge_values;
    put_i32(huge_values, 1);
    put_i32(huge_values, 1);
    put_raw(huge_values, "a", 1);
    put_i32(huge_values, 1);
    put_i32(huge_values, INT32_MAX);
    EXPECT_NE(error_of(huge_values).find("values needs 8589934588 bytes but 0 remain"), std::string::npos);
    bytes long_name;
    put_i32(long_name, 1);
    put_i32(long_name, 100000);
    EXPECT_NE(error_of(long_name).find("name length is 100000"), std::string::npos);
    EXPECT_NE(error_of(legacy({{"a", 1, {std::nanf("")}}})).find("not a finite number"), std::string::npos);
    EXPECT_NE(error_of(legacy({{"a", 1, {-1}}})).find("not a finite number"), std::string::npos);
    EXPECT_NE(error_of(legacy({{"a", 1, {}}})).find("has no values"), std::string::npos);
    EXPECT_NE(error_of(legacy({{"a", 1, {1}}, {"a", 1, {1}}})).find("appears twice"), std::string::npos);
    EXPECT_NE(error_of(legacy({{std::string("a\0b", 3), 1, {1}}})).find("NUL"), std::string::npos);
    bytes trailing = legacy({{"a", 1, {1}}});
    trailing.push_back(1);
    EXPECT_NE(error_of(trailing).find("unexpected bytes"), std::string::npos);
}

TEST(Imatrix, every_truncation_of_a_valid_file_fails_cleanly_or_parses) {
    for (const bytes &whole : {legacy({{"blk.0.attn_q.weight", 2, {1, 2, 3}}, {"b", 1, {4}}}),
                               gguf({{"x.weight.in_sum2", {4}, {1, 2, 3, 4}}, {"x.weight.counts", {1}, {2}}})}) {
        for (size_t n = 0; n < whole.size(); ++n) {
            const bytes cut(whole.begin(), whole.begin() + long(n));
            auto        r = parse_imatrix(cut, "m.dat");
            if (!r.ok()) {
                EXPECT_EQ(r.err().message.rfind("m.dat: ", 0), 0U) << n << ": " << r.err().message;
            } else {
                EXPECT_FALSE(r->entries.empty()) << n;
            }
        }
    }
}

TEST(Imatrix, corrupt_gguf_files_fail_naming_the_problem) {
    EXPECT_NE(error_of(gguf({{"x.in_sum2", {4}, {1, 2, 3, 4}}})).find("in_sum2 but no counts"), std::string::npos);
    EXPECT_NE(error_of(gguf({{"x.counts", {1}, {1}}})).find("counts but no in_sum2"), std::string::npos);
    EXPECT_NE(error_of(gguf({{"x.in_sum2", {3}, {1, 2, 3}}, {"x.counts", {2}, {1, 1}}})).find("do not divide"),
              std::string::npos);
    EXPECT_NE(error_of(gguf({{"x.in_sum2", {2}, {1, 2}}, {"x.counts", {1}, {-1}}})).find("count 0"), std::string::npos);
    EXPECT_NE(error_of(gguf({{"x.in_sum2", {2}, {1, std::numeric_limits<float>::infinity()}}, {"x.counts", {1}, {1}}}))
                  .find("value 1"),
              std::string::npos);
    // F16 data where F32 belongs (2 bytes an element).
    EXPECT_NE(error_of(gguf({{"x.in_sum2", {2}, {1}, 1}, {"x.counts", {1}, {1}}})).find("not F32"), std::string::npos);
    EXPECT_NE(error_of(gguf({{"plain.weight", {2}, {1, 2}}})).find("not an importance matrix"), std::string::npos);
    // A tensor whose data would lie past the end: the GGUF reader refuses it.
    bytes b = gguf({{"x.in_sum2", {2}, {1, 2}}, {"x.counts", {1}, {1}}});
    b.resize(b.size() - 40);
    EXPECT_FALSE(parse_imatrix(b, "m.dat").ok());
}

TEST(Imatrix, must_fit_the_model_it_quantizes) {
    gguf_info model;
    model.tensors = {matrix("token_embd.weight", 64, 512), matrix("blk.0.attn_q.weight", 64, 64),
                     matrix("blk.0.ffn_up_exps.weight", 64, 172, 4)};
    imatrix m;
    m.entries["blk.0.attn_q.weight"]      = std::vector<float>(64, 1);
    m.entries["blk.0.ffn_up_exps.weight"] = std::vector<float>(256, 1); // 64 × 4 experts
    m.entries["token_embd.weight"]        = std::vector<float>(3, 1);   // ignored by llama.cpp too
    EXPECT_FALSE(check_imatrix_fits(m, model, "m.dat").has_value());
    m.entries["blk.0.attn_q.weight"] = std::vector<float>(128, 1);
    auto bad                         = check_imatrix_fits(m, model, "m.dat");
    ASSERT_TRUE(bad.has_value());
    EXPECT_NE(bad->message.find("'blk.0.attn_q.weight' has 128 values but the model's tensor needs 64"),
              std::string::npos)
        << bad->message;
    imatrix other;
    other.entries["blk.9.attn_q.weight"] = std::vector<float>(64, 1);
    auto none                            = check_imatrix_fits(other, model, "m.dat");
    ASSERT_TRUE(none.has_value());
    EXPECT_NE(none->message.find("none of its 1 entries"), std::string::npos);
}

TEST(Imatrix, reading_a_missing_file_names_it) {
    auto r = read_imatrix_file("/nonexistent/x.dat");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().kind, error_kind::not_found);
    EXPECT_NE(r.err().message.find("/nonexistent/x.dat"), std::string::npos);
}

TEST(Imatrix, gguf_counts_are_whole_numbers_so_no_quotient_overflows) {
    // A denormal count would turn a finite sum into infinity: it rounds to 0 (importance 1).
    auto r = parse_imatrix(gguf({{"x.in_sum2", {2}, {3e38F, 6}}, {"x.counts", {1}, {1e-45F}}}), "m.gguf");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->entries.at("x"), (std::vector<float>{1, 1}));
    auto h = parse_imatrix(gguf({{"x.in_sum2", {2}, {3, 6}}, {"x.counts", {1}, {2.6F}}}), "m.gguf");
    ASSERT_TRUE(h.ok()) << h.err().message;
    EXPECT_EQ(h->entries.at("x"), (std::vector<float>{1, 2}));
}

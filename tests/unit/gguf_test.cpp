// GGUF pre-validation: small GGUF files built byte by byte in the test (valid ones and every kind
// of damage), then the real test models from $INFERBOX_TEST_MODELS.

#include "store/gguf.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

using namespace inferbox;

namespace {

using bytes = std::vector<uint8_t>;

void put_u8(bytes &b, uint8_t v) {
    b.push_back(v);
}
void put_u32(bytes &b, uint32_t v) {
    for (int i = 0; i < 4; ++i) {
        b.push_back(uint8_t(v >> (8 * i)));
    }
}
void put_u64(bytes &b, uint64_t v) {
    for (int i = 0; i < 8; ++i) {
        b.push_back(uint8_t(v >> (8 * i)));
    }
}
void put_str(bytes &b, std::string_view s) {
    put_u64(b, s.size());
    b.insert(b.end(), s.begin(), s.end());
}
void put_f32(bytes &b, float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    put_u32(b, u);
}

// A metadata entry: key and the encoded (type id, value).
struct kv_entry {
    std::string key;
    bytes       value;
};

kv_entry kv_string(std::string key, std::string_view v) {
    bytes b;
    put_u32(b, 8);
    put_str(b, v);
    return {std::move(key), b};
}
kv_entry kv_u32(std::string key, uint32_t v) {
    bytes b;
    put_u32(b, 4);
    put_u32(b, v);
    return {std::move(key), b};
}
kv_entry kv_f32(std::string key, float v) {
    bytes b;
    put_u32(b, 6);
    put_f32(b, v);
    return {std::move(key), b};
}
kv_entry kv_bool(std::string key, bool v) {
    bytes b;
    put_u32(b, 7);
    put_u8(b, v ? 1 : 0);
    return {std::move(key), b};
}
kv_entry kv_strings(std::string key, const std::vector<std::string> &v) {
    bytes b;
    put_u32(b, 9);
    put_u32(b, 8);
    put_u64(b, v.size());
    for (const auto &s : v) {
        put_str(b, s);
    }
    return {std::move(key), b};
}
kv_entry kv_raw(std::string key, bytes encoded) {
    return {std::move(key), std::move(encoded)};
}

struct tensor_entry {
    std::string             name;
    std::vector<uint64_t>   dims;
    uint32_t                type = 0;
    std::optional<uint64_t> offset; // default: the next aligned offset
};

// Everything needed to write a GGUF; tests change one thing and expect one error.
struct gguf_spec {
    uint32_t                  version   = 3;
    uint32_t                  alignment = 32; // used for the layout; general.alignment is a kv
    std::optional<uint64_t>   n_tensors;      // default: tensors.size()
    std::optional<uint64_t>   n_kv;           // default: kvs.size()
    std::vector<kv_entry>     kvs;
    std::vector<tensor_entry> tensors;
};

uint64_t tensor_bytes(const tensor_entry &t) {
    const auto tr = ggml_type_traits_of(t.type);
    uint64_t   n  = 1;
    for (uint64_t d : t.dims) {
        n *= d;
    }
    return tr ? n / tr->block_size * tr->type_size : 0;
}

uint64_t pad(uint64_t v, uint64_t a) {
    return (v + a - 1) / a * a;
}

bytes build(const gguf_spec &s) {
    bytes b = {'G', 'G', 'U', 'F'};
    put_u32(b, s.version);
    put_u64(b, s.n_tensors.value_or(s.tensors.size()));
    put_u64(b, s.n_kv.value_or(s.kvs.size()));
    for (const auto &kv : s.kvs) {
        put_str(b, kv.key);
        b.insert(b.end(), kv.value.begin(), kv.value.end());
    }
    uint64_t next = 0, data_size = 0;
    for (const auto &t : s.tensors) {
        put_str(b, t.name);
        put_u32(b, uint32_t(t.dims.size()));
        for (uint64_t d : t.dims) {
            put_u64(b, d);
        }
        put_u32(b, t.type);
        const uint64_t off = t.offset.value_or(next);
        put_u64(b, off);
        next      = pad(off + tensor_bytes(t), s.alignment);
        data_size = off + tensor_bytes(t);
    }
    // Absurd shapes or offsets make absurd sizes: those files are only ever read as far as the error.
    if (!s.tensors.empty() && data_size <= (1u << 20)) {
        b.resize(pad(b.size(), s.alignment), 0);
        for (uint64_t i = 0; i < data_size; ++i) {
            b.push_back(uint8_t(i * 7));
        }
    }
    return b;
}

// A small llama-shaped model: three tensors (two F32, one Q8_0) and the usual metadata.
gguf_spec tiny_spec() {
    gguf_spec s;
    s.kvs = {
        kv_string("general.architecture", "llama"),
        kv_string("general.name", "tiny"),
        kv_u32("general.file_type", 0),
        kv_u32("llama.context_length", 128),
        kv_u32("llama.embedding_length", 8),
        kv_u32("llama.block_count", 1),
        kv_u32("llama.attention.head_count", 2),
        kv_u32("llama.attention.head_count_kv", 1),
        kv_f32("llama.rope.freq_base", 10000.0f),
        kv_bool("general.flag", true),
        kv_strings("tokenizer.ggml.tokens", {"<s>", "a", "b"}),
        kv_string("tokenizer.chat_template", "{{ messages }}"),
    };
    s.tensors = {
        {"token_embd.weight", {8, 3}, 0, {}},    // F32: 96 bytes at 0
        {"output_norm.weight", {8}, 0, {}},      // F32: 32 bytes at 96
        {"blk.0.attn_q.weight", {32, 2}, 8, {}}, // Q8_0: 2 blocks of 34 bytes at 128
    };
    return s;
}

result<gguf_info> parse(const bytes &b, std::string_view label = "model.gguf") {
    return read_gguf_buffer(std::span<const uint8_t>(b.data(), b.size()), label);
}

// Parsing fails, the message names the file, and contains `part`.
void expect_error(const bytes &b, const std::string &part) {
    auto r = parse(b);
    ASSERT_FALSE(r.ok()) << "expected an error containing: " << part;
    EXPECT_EQ(r.err().kind, error_kind::invalid_request);
    EXPECT_EQ(r.err().code, "invalid_gguf");
    EXPECT_EQ(r.err().message.rfind("model.gguf: ", 0), 0u) << r.err().message;
    EXPECT_NE(r.err().message.find(part), std::string::npos) << r.err().message;
}

} // namespace

TEST(Gguf, valid_file_reads_every_field) {
    const bytes b = build(tiny_spec());
    auto        r = parse(b);
    ASSERT_TRUE(r.ok()) << r.err().message;
    const gguf_info &g = *r;
    EXPECT_EQ(g.version, 3u);
    EXPECT_EQ(g.file_size, b.size());
    EXPECT_EQ(g.alignment, 32u);
    EXPECT_EQ(g.data_offset % 32, 0u);
    EXPECT_EQ(g.metadata.size(), 12u);
    EXPECT_EQ(g.architecture, "llama");
    EXPECT_EQ(g.name, "tiny");
    EXPECT_EQ(g.context_length, 128u);
    EXPECT_EQ(g.embedding_length, 8u);
    EXPECT_EQ(g.block_count, 1u);
    EXPECT_EQ(g.head_count, 2u);
    EXPECT_EQ(g.head_count_kv, 1u);
    EXPECT_EQ(g.vocab_size, 3u);
    EXPECT_TRUE(g.has_chat_template);
    EXPECT_EQ(g.quantization, "F32"); // general.file_type 0
    EXPECT_EQ(g.n_params, 24u + 8u + 64u);
    ASSERT_EQ(g.tensors.size(), 3u);
    EXPECT_EQ(g.tensors[0].name, "token_embd.weight");
    EXPECT_EQ(g.tensors[0].n_dims, 2u);
    EXPECT_EQ(g.tensors[0].dims[0], 8u);
    EXPECT_EQ(g.tensors[0].dims[1], 3u);
    EXPECT_EQ(g.tensors[0].dims[2], 1u);
    EXPECT_EQ(g.tensors[0].n_bytes, 96u);
    EXPECT_EQ(g.tensors[1].offset, 96u);
    EXPECT_EQ(g.tensors[2].type, 8u);
    EXPECT_EQ(g.tensors[2].offset, 128u);
    EXPECT_EQ(g.tensors[2].n_bytes, 68u);
    EXPECT_EQ(g.tensor_bytes, 96u + 32u + 68u);
    EXPECT_EQ(g.data_offset + 128 + 68, b.size());

    const gguf_value *freq = g.find("llama.rope.freq_base");
    ASSERT_NE(freq, nullptr);
    EXPECT_EQ(freq->type, gguf_type::float32);
    EXPECT_EQ(std::get<double>(freq->value), 10000.0);
    EXPECT_EQ(freq->to_display(), "10000");
    const gguf_value *flag = g.find("general.flag");
    ASSERT_NE(flag, nullptr);
    EXPECT_EQ(flag->to_display(), "true");
    const gguf_value *tokens = g.find("tokenizer.ggml.tokens");
    ASSERT_NE(tokens, nullptr);
    ASSERT_NE(tokens->as_array(), nullptr);
    EXPECT_EQ(tokens->as_array()->element_type, gguf_type::string);
    EXPECT_EQ(tokens->to_display(), "[string × 3]");
    EXPECT_EQ(g.find("no.such.key"), nullptr);
}

TEST(Gguf, version_2_is_accepted) {
    gguf_spec s = tiny_spec();
    s.version   = 2;
    auto r      = parse(build(s));
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->version, 2u);
}

TEST(Gguf, every_integer_and_float_type_reads) {
    gguf_spec s;
    auto      scalar = [](uint32_t type, std::initializer_list<uint8_t> le) {
        bytes b;
        put_u32(b, type);
        b.insert(b.end(), le);
        return b;
    };
    s.kvs = {
        kv_raw("u8", scalar(0, {0xFF})),
        kv_raw("i8", scalar(1, {0xFF})),
        kv_raw("u16", scalar(2, {0x34, 0x12})),
        kv_raw("i16", scalar(3, {0xFE, 0xFF})),
        kv_raw("u32", scalar(4, {1, 0, 0, 0x80})),
        kv_raw("i32", scalar(5, {0xFD, 0xFF, 0xFF, 0xFF})),
        kv_raw("u64", scalar(10, {1, 0, 0, 0, 0, 0, 0, 0x80})),
        kv_raw("i64", scalar(11, {0xFC, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF})),
        kv_raw("f64", scalar(12, {0, 0, 0, 0, 0, 0, 0xF8, 0x3F})), // 1.5
    };
    auto r = parse(build(s));
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->find("u8")->as_uint(), 255u);
    EXPECT_EQ(std::get<int64_t>(r->find("i8")->value), -1);
    EXPECT_EQ(r->find("u16")->as_uint(), 0x1234u);
    EXPECT_EQ(std::get<int64_t>(r->find("i16")->value), -2);
    EXPECT_EQ(r->find("i16")->as_uint(), std::nullopt);
    EXPECT_EQ(r->find("u32")->as_uint(), 0x80000001u);
    EXPECT_EQ(std::get<int64_t>(r->find("i32")->value), -3);
    EXPECT_EQ(r->find("u64")->as_uint(), 0x8000000000000001ull);
    EXPECT_EQ(std::get<int64_t>(r->find("i64")->value), -4);
    EXPECT_EQ(std::get<double>(r->find("f64")->value), 1.5);
    EXPECT_EQ(r->find("f64")->type, gguf_type::float64);
    EXPECT_TRUE(r->tensors.empty());
    EXPECT_EQ(r->n_params, 0u);
    EXPECT_EQ(r->architecture, "");
    EXPECT_EQ(r->context_length, std::nullopt);
}

TEST(Gguf, nested_arrays_are_validated_and_summarized) {
    bytes v;
    put_u32(v, 9); // array
    put_u32(v, 9); // of arrays
    put_u64(v, 2); // two of them
    put_u32(v, 4); // [0]: u32 × 2
    put_u64(v, 2);
    put_u32(v, 1);
    put_u32(v, 2);
    put_u32(v, 8); // [1]: string × 1
    put_u64(v, 1);
    put_str(v, "x");
    gguf_spec s = tiny_spec();
    s.kvs.push_back(kv_raw("nested", v));
    auto r = parse(build(s));
    ASSERT_TRUE(r.ok()) << r.err().message;
    const gguf_value *n = r->find("nested");
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->as_array()->element_type, gguf_type::array);
    EXPECT_EQ(n->as_array()->length, 2u);

    // Nesting beyond the depth limit is refused.
    bytes deep;
    put_u32(deep, 9);
    for (uint32_t i = 0; i < gguf_limits::max_array_depth + 1; ++i) {
        put_u32(deep, 9);
        put_u64(deep, 1);
    }
    put_u32(deep, 0);
    put_u64(deep, 0);
    gguf_spec d = tiny_spec();
    d.kvs.push_back(kv_raw("deep", deep));
    expect_error(build(d), "nests arrays deeper than the limit of 4");
}

TEST(Gguf, wrong_magic) {
    bytes b = build(tiny_spec());
    std::memcpy(b.data(), "GGML", 4);
    expect_error(b, "not a GGUF file: the magic is 'GGML'");
    expect_error(bytes{'G', 'G'}, "too few for the magic");
    expect_error(bytes{}, "it has 0 bytes");
}

TEST(Gguf, unsupported_versions) {
    gguf_spec s = tiny_spec();
    s.version   = 1;
    expect_error(build(s), "GGUF version 1 is not supported (only versions 2 and 3)");
    s.version = 99;
    expect_error(build(s), "GGUF version 99 is not supported");
    s.version = 0;
    expect_error(build(s), "GGUF version 0 is not supported");
    s.version = 0x03000000; // version 3 written big-endian
    expect_error(build(s), "big-endian");
}

TEST(Gguf, truncated_header) {
    const bytes b = build(tiny_spec());
    expect_error(bytes(b.begin(), b.begin() + 6), "truncated: the header (version) needs 4 bytes at offset 4");
    expect_error(bytes(b.begin(), b.begin() + 10), "truncated: the header (tensor count)");
    expect_error(bytes(b.begin(), b.begin() + 20), "truncated: the header (metadata count)");
}

TEST(Gguf, truncated_in_metadata) {
    gguf_spec s;
    s.kvs         = {kv_string("general.architecture", "llama"), kv_string("general.name", "tiny")};
    const bytes b = build(s);
    // Cut inside the value of general.architecture: 24-byte header, key (8 + 20), type (4), length (8).
    const size_t cut = 24 + 8 + 20 + 4 + 8 + 2;
    ASSERT_LT(cut, b.size());
    expect_error(bytes(b.begin(), b.begin() + long(cut)), "truncated: metadata 'general.architecture' needs 5 bytes");
}

TEST(Gguf, every_prefix_of_a_valid_file_is_rejected) {
    const bytes b = build(tiny_spec());
    for (size_t n = 0; n < b.size(); ++n) {
        auto r = parse(bytes(b.begin(), b.begin() + long(n)));
        ASSERT_FALSE(r.ok()) << "prefix of " << n << " bytes was accepted";
        EXPECT_EQ(r.err().message.rfind("model.gguf: ", 0), 0u) << r.err().message;
    }
    EXPECT_TRUE(parse(b).ok());
}

TEST(Gguf, absurd_counts_are_refused_before_allocating) {
    gguf_spec s = tiny_spec();
    s.n_kv      = 1ull << 40;
    expect_error(build(s), "declares 1099511627776 metadata entries, more than the limit of 65536");
    s.n_kv = 60000; // within the limit, but the file is far too small
    expect_error(build(s), "truncated: the header declares 60000 metadata entries, which need at least 840000 bytes");

    s           = tiny_spec();
    s.n_tensors = UINT64_MAX;
    expect_error(build(s), "declares 18446744073709551615 tensors, more than the limit of 1048576");
    s.n_tensors = 1000000;
    expect_error(build(s), "truncated: the header declares 1000000 tensors");
}

TEST(Gguf, absurd_string_lengths) {
    gguf_spec s = tiny_spec();
    bytes     v;
    put_u32(v, 8);
    put_u64(v, 1ull << 40); // a 1 TiB string
    s.kvs.insert(s.kvs.begin(), kv_raw("big", v));
    expect_error(build(s), "metadata 'big' is 1099511627776 bytes long, more than the limit of 16777216");

    // Under the limit but past the end of the file.
    gguf_spec t = tiny_spec();
    bytes     w;
    put_u32(w, 8);
    put_u64(w, 1000000);
    t.kvs.insert(t.kvs.begin(), kv_raw("long", w));
    expect_error(build(t), "truncated: metadata 'long' needs 1000000 bytes");

    // A key whose length is absurd.
    bytes k = {'G', 'G', 'U', 'F'};
    put_u32(k, 3);
    put_u64(k, 0);
    put_u64(k, 1);
    put_u64(k, 1ull << 62);
    k.resize(k.size() + 32, 0);
    expect_error(k, "key of metadata entry 0 is 4611686018427387904 bytes long, more than the limit of 4096");
}

TEST(Gguf, absurd_array_lengths) {
    gguf_spec s = tiny_spec();
    bytes     v;
    put_u32(v, 9);
    put_u32(v, 8);
    put_u64(v, 1ull << 40);
    s.kvs.insert(s.kvs.begin(), kv_raw("arr", v));
    expect_error(build(s), "metadata 'arr' has 1099511627776 elements, more than the limit of 16777216");

    gguf_spec t = tiny_spec();
    bytes     w;
    put_u32(w, 9);
    put_u32(w, 4);       // u32
    put_u64(w, 1 << 20); // 4 MiB of elements in a file of a few hundred bytes
    t.kvs.insert(t.kvs.begin(), kv_raw("arr", w));
    expect_error(build(t), "truncated: metadata 'arr' declares 1048576 elements of type u32, which need at least "
                           "4194304 bytes");

    // A string element inside an array with an absurd length.
    gguf_spec u = tiny_spec();
    bytes     x;
    put_u32(x, 9);
    put_u32(x, 8);
    put_u64(x, 2);
    put_str(x, "ok");
    put_u64(x, 1ull << 50);
    u.kvs.insert(u.kvs.begin(), kv_raw("arr", x));
    expect_error(build(u), "element 1 of metadata 'arr' is 1125899906842624 bytes long, more than the limit");
}

TEST(Gguf, bad_metadata_entries) {
    gguf_spec s = tiny_spec();
    s.kvs.push_back(kv_u32("general.name", 1));
    expect_error(build(s), "metadata key 'general.name' appears twice");

    gguf_spec e = tiny_spec();
    e.kvs.push_back(kv_u32("", 1));
    expect_error(build(e), "the key of metadata entry 12 is empty");

    gguf_spec t = tiny_spec();
    bytes     v;
    put_u32(v, 13);
    t.kvs.push_back(kv_raw("weird", v));
    expect_error(build(t), "type of metadata 'weird' is 13, not a GGUF value type (0 to 12)");

    gguf_spec a = tiny_spec();
    bytes     w;
    put_u32(w, 9);
    put_u32(w, 77);
    put_u64(w, 0);
    a.kvs.push_back(kv_raw("arr", w));
    expect_error(build(a), "element type of metadata 'arr' is 77");
}

TEST(Gguf, tensor_dimension_count_must_be_1_to_4) {
    gguf_spec s       = tiny_spec();
    s.tensors[0].dims = {};
    expect_error(build(s), "tensor 'token_embd.weight' has 0 dimensions; it must have 1 to 4");
    s.tensors[0].dims = {8, 3, 1, 1, 1};
    expect_error(build(s), "tensor 'token_embd.weight' has 5 dimensions; it must have 1 to 4");
    s.tensors[0].dims = {8, 3, 1, 1};
    auto r            = parse(build(s));
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->tensors[0].n_dims, 4u);
}

TEST(Gguf, dimension_overflow) {
    gguf_spec s       = tiny_spec();
    s.tensors[0].dims = {1ull << 32, 1ull << 32};
    expect_error(build(s), "tensor 'token_embd.weight' has shape (4294967296, 4294967296), whose element count "
                           "overflows 64 bits");
    s.tensors[0].dims = {1ull << 63};
    expect_error(build(s), "dimension 0 is 9223372036854775808, more than the limit");
    s.tensors[0].dims = {1ull << 61, 4}; // 2^63 elements
    s.tensors[0].type = 8;
    expect_error(build(s), "whose element count overflows");
    // An F64 tensor whose byte size overflows although its element count does not.
    s.tensors[0].dims = {1ull << 62};
    s.tensors[0].type = 28;
    expect_error(build(s), "tensor 'token_embd.weight' is larger than 2^64 bytes");
}

TEST(Gguf, unknown_and_removed_ggml_types) {
    gguf_spec s       = tiny_spec();
    s.tensors[1].type = 4; // Q4_2, removed from ggml
    expect_error(build(s), "tensor 'output_norm.weight' has unknown ggml type id 4");
    s.tensors[1].type = 1000;
    expect_error(build(s), "unknown ggml type id 1000");
}

TEST(Gguf, rows_must_be_whole_blocks) {
    gguf_spec s       = tiny_spec();
    s.tensors[2].dims = {33, 2};
    expect_error(build(s), "tensor 'blk.0.attn_q.weight' of type Q8_0 has 33 elements per row, not a multiple of the "
                           "block size 32");
}

TEST(Gguf, tensor_names) {
    gguf_spec s       = tiny_spec();
    s.tensors[1].name = s.tensors[0].name;
    expect_error(build(s), "tensor 'token_embd.weight' appears twice");
    s.tensors[1].name = std::string(64, 'x');
    expect_error(build(s), "name of tensor 1 is 64 bytes long, more than the limit of 63");
}

TEST(Gguf, misaligned_and_misplaced_offsets) {
    gguf_spec s         = tiny_spec();
    s.tensors[2].offset = 128;
    s.tensors[1].offset = 97;
    expect_error(build(s), "tensor 'output_norm.weight' has data offset 97, not a multiple of the alignment 32");
    s.tensors[1].offset = 64; // aligned but overlapping the first tensor
    expect_error(build(s), "tensor 'output_norm.weight' has data offset 64, expected 96");
    s.tensors[1].offset = 1ull << 62; // far past the end
    expect_error(build(s), "has data offset 4611686018427387904, expected 96");
}

TEST(Gguf, data_past_the_end_of_the_file) {
    const gguf_spec s = tiny_spec();
    bytes           b = build(s);
    auto            r = parse(b);
    ASSERT_TRUE(r.ok());
    const uint64_t end = r->data_offset + 128 + 68;
    b.resize(b.size() - 10);
    expect_error(b, "truncated: tensor 'blk.0.attn_q.weight' data ends at byte " + std::to_string(end) +
                        " but the file has " + std::to_string(b.size()) + " bytes");
    // Cut where the data section starts: all tensor data is missing.
    bytes header = build(s);
    header.resize(r->data_offset);
    expect_error(header, "truncated: tensor 'token_embd.weight' data ends at byte");
}

TEST(Gguf, alignment_key) {
    gguf_spec s = tiny_spec();
    s.kvs.push_back(kv_u32("general.alignment", 3));
    expect_error(build(s), "general.alignment is 3; it must be a power of two from 1 to 1048576");
    s.kvs.back() = kv_u32("general.alignment", 0);
    expect_error(build(s), "general.alignment is 0; it must be a power of two");
    s.kvs.back() = kv_u32("general.alignment", 1u << 30);
    expect_error(build(s), "general.alignment is 1073741824");
    s.kvs.back() = kv_string("general.alignment", "32");
    expect_error(build(s), "general.alignment has type string, expected u32");

    s.kvs.back() = kv_u32("general.alignment", 64);
    s.alignment  = 64;
    auto r       = parse(build(s));
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->alignment, 64u);
    EXPECT_EQ(r->data_offset % 64, 0u);
    EXPECT_EQ(r->tensors[1].offset, 128u);
    EXPECT_EQ(r->tensors[2].offset, 192u);

    // The same file laid out for 64 but read with the default 32 is misplaced.
    s.kvs.pop_back();
    expect_error(build(s), "has data offset 128, expected 96");
}

TEST(Gguf, quantization_falls_back_to_the_dominant_matrix_type) {
    gguf_spec s = tiny_spec();
    s.kvs.erase(s.kvs.begin() + 2); // general.file_type
    s.tensors[2].dims = {64, 4};    // Q8_0 now holds the most matrix elements
    auto r            = parse(build(s));
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->quantization, "Q8_0");

    s.kvs.push_back(kv_u32("general.file_type", 15));
    r = parse(build(s));
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->quantization, "Q4_K_M");
}

TEST(Gguf, summary_ignores_values_of_the_wrong_type) {
    gguf_spec s = tiny_spec();
    s.kvs[3]    = kv_string("llama.context_length", "lots");
    s.kvs[11]   = kv_string("tokenizer.chat_template", "");
    auto r      = parse(build(s));
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->context_length, std::nullopt);
    EXPECT_FALSE(r->has_chat_template);
    EXPECT_EQ(r->embedding_length, 8u);
}

TEST(Gguf, display_escapes_and_cuts_strings) {
    gguf_value v{gguf_type::string, std::string("a\nb\x1b[31mc\xc2\x9b")};
    EXPECT_EQ(v.to_display(), "a\\nb\\x1b[31mc\\u009b");
    gguf_value l{gguf_type::string, std::string(100, 'x')};
    EXPECT_EQ(l.to_display(10), std::string(10, 'x') + "… (100 bytes)");
    gguf_value u{gguf_type::string, std::string("\xe2\x82\xac\xe2\x82\xac")}; // €€ cut between characters
    EXPECT_EQ(u.to_display(1), "\xe2\x82\xac… (6 bytes)");
    gguf_value bad{gguf_type::string, std::string("\xff")};
    EXPECT_EQ(bad.to_display(), "\xef\xbf\xbd");
}

TEST(Gguf, ggml_type_table) {
    auto q8 = ggml_type_traits_of(8);
    ASSERT_TRUE(q8);
    EXPECT_EQ(q8->name, "Q8_0");
    EXPECT_EQ(q8->block_size, 32u);
    EXPECT_EQ(q8->type_size, 34u);
    auto q4k = ggml_type_traits_of(12);
    ASSERT_TRUE(q4k);
    EXPECT_EQ(q4k->block_size, 256u);
    EXPECT_EQ(q4k->type_size, 144u);
    EXPECT_EQ(ggml_type_traits_of(30)->name, "BF16");
    EXPECT_EQ(ggml_type_traits_of(23)->type_size, 136u); // IQ4_XS
    EXPECT_FALSE(ggml_type_traits_of(4));
    EXPECT_FALSE(ggml_type_traits_of(31));
    EXPECT_FALSE(ggml_type_traits_of(43));
    EXPECT_EQ(llama_file_type_name(7), "Q8_0");
    EXPECT_EQ(llama_file_type_name(1), "F16");
    EXPECT_EQ(llama_file_type_name(4), "");
}

TEST(Gguf, param_count_format) {
    EXPECT_EQ(format_param_count(0), "0");
    EXPECT_EQ(format_param_count(999), "999");
    EXPECT_EQ(format_param_count(1000), "1.0K");
    EXPECT_EQ(format_param_count(292000), "292K");
    EXPECT_EQ(format_param_count(999999), "1.0M");
    EXPECT_EQ(format_param_count(6738415616ull), "6.7B");
    EXPECT_EQ(format_param_count(70553706496ull), "71B");
}

TEST(Gguf, file_reader_matches_the_buffer_reader) {
    const bytes                 b = build(tiny_spec());
    const std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("inferbox-gguf-test-" + std::to_string(::getpid()) + ".gguf");
    {
        std::ofstream f(path, std::ios::binary);
        f.write(reinterpret_cast<const char *>(b.data()), std::streamsize(b.size()));
    }
    auto r = read_gguf_file(path);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->tensor_bytes, 196u);
    EXPECT_EQ(r->architecture, "llama");

    // Truncated on disk: the message names the path given.
    std::filesystem::resize_file(path, b.size() - 1);
    auto t = read_gguf_file(path);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.err().message.rfind(path.string() + ": truncated: tensor 'blk.0.attn_q.weight'", 0), 0u)
        << t.err().message;
    auto labelled = read_gguf_file(path, "my-model");
    ASSERT_FALSE(labelled.ok());
    EXPECT_EQ(labelled.err().message.rfind("my-model: truncated", 0), 0u) << labelled.err().message;
    std::filesystem::remove(path);

    auto missing = read_gguf_file(path);
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.err().kind, error_kind::not_found);
    EXPECT_NE(missing.err().message.find(path.string() + ": cannot open"), std::string::npos);

    auto dir = read_gguf_file(std::filesystem::temp_directory_path());
    ASSERT_FALSE(dir.ok());
    EXPECT_NE(dir.err().message.find("not a regular file"), std::string::npos) << dir.err().message;
}

// --- tokenizer checks (issue 24): damage that llama.cpp loads and then dies of -------------------

namespace {

// An array of fixed-size elements: type id, element type, count, then `size` bytes per value.
kv_entry kv_numbers(std::string key, uint32_t element_type, int size, const std::vector<uint64_t> &values) {
    bytes b;
    put_u32(b, 9);
    put_u32(b, element_type);
    put_u64(b, values.size());
    for (const uint64_t v : values) {
        for (int i = 0; i < size; ++i) {
            b.push_back(uint8_t(v >> (8 * i)));
        }
    }
    return {std::move(key), b};
}
kv_entry kv_i32s(std::string key, const std::vector<int32_t> &v) {
    return kv_numbers(std::move(key), 5, 4, std::vector<uint64_t>(v.begin(), v.end()));
}
kv_entry kv_f32s(std::string key, size_t n, float value) {
    uint32_t u;
    std::memcpy(&u, &value, 4);
    return kv_numbers(std::move(key), 6, 4, std::vector<uint64_t>(n, u));
}
kv_entry kv_scalar(std::string key, uint32_t type, int size, uint64_t v) {
    bytes b;
    put_u32(b, type);
    for (int i = 0; i < size; ++i) {
        b.push_back(uint8_t(v >> (8 * i)));
    }
    return {std::move(key), b};
}

constexpr int32_t normal = 1, control = 3, byte_type = 6;

// A SentencePiece-style vocabulary as llama.cpp's converter writes it: <unk>, <s>, </s>, the 256
// byte tokens <0x00>..<0xFF> (token type BYTE), then "a" and "b"; 261 tokens.
struct vocab {
    std::string              model = "llama";
    std::vector<std::string> tokens;
    std::vector<int32_t>     types;

    vocab() {
        tokens = {"<unk>", "<s>", "</s>"};
        types  = {2, control, control};
        for (int b = 0; b < 256; ++b) {
            char t[8];
            std::snprintf(t, sizeof t, "<0x%02X>", b);
            tokens.emplace_back(t);
            types.push_back(byte_type);
        }
        for (const char *t : {"a", "b"}) {
            tokens.emplace_back(t);
            types.push_back(normal);
        }
    }
    // The index of token `text`.
    size_t at(std::string_view text) const {
        return size_t(std::find(tokens.begin(), tokens.end(), text) - tokens.begin());
    }
};

// tiny_spec() with the vocabulary's tokenizer keys in place of its token list.
gguf_spec tokenizer_spec(const vocab &v) {
    gguf_spec s = tiny_spec();
    s.kvs[10]   = kv_strings("tokenizer.ggml.tokens", v.tokens);
    s.kvs.push_back(kv_string("tokenizer.ggml.model", v.model));
    s.kvs.push_back(kv_f32s("tokenizer.ggml.scores", v.tokens.size(), -1.0f));
    s.kvs.push_back(kv_i32s("tokenizer.ggml.token_type", v.types));
    s.kvs.push_back(kv_strings("tokenizer.ggml.merges", {"a b"}));
    s.kvs.push_back(kv_u32("tokenizer.ggml.unknown_token_id", 0));
    s.kvs.push_back(kv_u32("tokenizer.ggml.bos_token_id", 1));
    s.kvs.push_back(kv_u32("tokenizer.ggml.eos_token_id", 2));
    return s;
}

// Replaces the entry `key` of `s` (which must be there).
void replace_kv(gguf_spec &s, kv_entry e) {
    for (auto &kv : s.kvs) {
        if (kv.key == e.key) {
            kv = std::move(e);
            return;
        }
    }
    FAIL() << e.key << " is not in the spec";
}

void expect_ok(const bytes &b) {
    auto r = parse(b);
    EXPECT_TRUE(r.ok()) << r.err().message;
}

} // namespace

TEST(GgufTokenizer, a_good_vocabulary_is_accepted) {
    const vocab v;
    auto        r = parse(build(tokenizer_spec(v)));
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->vocab_size, 261u);
    EXPECT_EQ(v.tokens[v.at("<0x0A>")], "<0x0A>"); // the good byte token the damaged cases change

    // The keys in the reverse order (the checks do not depend on it).
    gguf_spec reversed = tokenizer_spec(v);
    std::reverse(reversed.kvs.begin(), reversed.kvs.end());
    expect_ok(build(reversed));

    // A BYTE token with lower-case digits is decoded all the same; llama.cpp's byte lookup only
    // tries upper case, and then the one-byte token, which this vocabulary has.
    vocab lower                      = v;
    lower.tokens[lower.at("<0x0A>")] = "<0x0a>";
    lower.tokens.emplace_back("\n");
    lower.types.push_back(normal);
    expect_ok(build(tokenizer_spec(lower)));

    // Integer scores: llama.cpp reads an i32 array as well as an f32 one.
    gguf_spec ints = tokenizer_spec(v);
    replace_kv(ints, kv_i32s("tokenizer.ggml.scores", std::vector<int32_t>(v.tokens.size(), -3)));
    expect_ok(build(ints));

    // Special ids: the last token, and 0xFFFFFFFF (-1: none).
    gguf_spec ids = tokenizer_spec(v);
    replace_kv(ids, kv_u32("tokenizer.ggml.eos_token_id", 260));
    ids.kvs.push_back(kv_u32("tokenizer.ggml.padding_token_id", 0xFFFFFFFFu));
    expect_ok(build(ids));

    // A BPE vocabulary needs no byte tokens; no tokenizer at all (tiny_spec) is fine too.
    vocab bpe;
    bpe.model  = "gpt2";
    bpe.tokens = {"a", "b", "ab"};
    bpe.types  = {normal, normal, normal};
    expect_ok(build(tokenizer_spec(bpe)));
}

TEST(GgufTokenizer, per_token_arrays_must_have_the_right_element_types) {
    const vocab v;
    const auto  with = [&](kv_entry e) {
        gguf_spec s = tokenizer_spec(v);
        replace_kv(s, std::move(e));
        return build(s);
    };
    const std::vector<uint64_t> zeros(v.tokens.size(), 0);
    expect_error(with(kv_numbers("tokenizer.ggml.scores", 12, 8, zeros)),
                 "tokenizer.ggml.scores is an array of f64, expected an array of f32 or i32");
    expect_error(with(kv_numbers("tokenizer.ggml.scores", 11, 8, zeros)),
                 "tokenizer.ggml.scores is an array of i64, expected an array of f32 or i32");
    expect_error(with(kv_f32("tokenizer.ggml.scores", 0.0f)),
                 "tokenizer.ggml.scores has type f32, expected an array of f32 or i32");
    expect_error(with(kv_numbers("tokenizer.ggml.token_type", 4, 4, zeros)),
                 "tokenizer.ggml.token_type is an array of u32, expected an array of i32");
    expect_error(with(kv_numbers("tokenizer.ggml.token_type", 1, 1, zeros)),
                 "tokenizer.ggml.token_type is an array of i8, expected an array of i32");
    expect_error(with(kv_numbers("tokenizer.ggml.tokens", 5, 4, zeros)),
                 "tokenizer.ggml.tokens is an array of i32, expected an array of string");
    expect_error(with(kv_string("tokenizer.ggml.tokens", "abc")),
                 "tokenizer.ggml.tokens has type string, expected an array of string");
    expect_error(with(kv_numbers("tokenizer.ggml.merges", 5, 4, {1, 2})),
                 "tokenizer.ggml.merges is an array of i32, expected an array of string");
}

TEST(GgufTokenizer, scores_and_token_types_have_one_element_per_token) {
    const vocab v;
    gguf_spec   s = tokenizer_spec(v);
    replace_kv(s, kv_f32s("tokenizer.ggml.scores", 260, 0.0f));
    expect_error(build(s), "tokenizer.ggml.scores has 260 elements but tokenizer.ggml.tokens has 261; there must "
                           "be one per token");

    gguf_spec t     = tokenizer_spec(v);
    auto      types = v.types;
    types.push_back(normal);
    replace_kv(t, kv_i32s("tokenizer.ggml.token_type", types));
    expect_error(build(t), "tokenizer.ggml.token_type has 262 elements but tokenizer.ggml.tokens has 261");
}

TEST(GgufTokenizer, special_token_ids_must_be_u32_token_ids) {
    const vocab v;
    gguf_spec   big = tokenizer_spec(v);
    replace_kv(big, kv_u32("tokenizer.ggml.bos_token_id", 0x80000000u));
    expect_error(build(big), "tokenizer.ggml.bos_token_id is 2147483648, not a token id: the vocabulary has 261 "
                             "tokens (4294967295 means none)");

    for (const char *key : {"eos", "eot", "eom", "unknown", "seperator", "padding", "cls", "mask", "fim_pre", "fim_suf",
                            "fim_mid", "fim_pad", "fim_rep", "fim_sep", "prefix", "suffix", "middle"}) {
        SCOPED_TRACE(key);
        const std::string name = std::string("tokenizer.ggml.") + key + "_token_id";
        gguf_spec         s    = tokenizer_spec(v);
        std::erase_if(s.kvs, [&](const kv_entry &e) { return e.key == name; });
        s.kvs.push_back(kv_u32(name, 261));
        expect_error(build(s), name + " is 261, not a token id: the vocabulary has 261 tokens");
    }

    // llama.cpp reads only a u32 (another type fails its load).
    const std::vector<std::pair<kv_entry, std::string>> wrong = {
        {kv_scalar("tokenizer.ggml.bos_token_id", 5, 4, 1), "i32"},
        {kv_scalar("tokenizer.ggml.bos_token_id", 5, 4, 0xFFFFFFFFu), "i32"}, // -1
        {kv_scalar("tokenizer.ggml.bos_token_id", 10, 8, 1), "u64"},
        {kv_scalar("tokenizer.ggml.bos_token_id", 2, 2, 1), "u16"},
        {kv_f32("tokenizer.ggml.bos_token_id", 1.0f), "f32"},
        {kv_string("tokenizer.ggml.bos_token_id", "1"), "string"},
    };
    for (const auto &[entry, type] : wrong) {
        gguf_spec s = tokenizer_spec(v);
        replace_kv(s, entry);
        expect_error(build(s), "tokenizer.ggml.bos_token_id has type " + type + ", expected u32");
    }
}

TEST(GgufTokenizer, byte_tokens_must_be_spelled_0xHH) {
    const vocab v;
    const auto  respelled = [&](std::string_view from, const std::string &to, std::string model = "llama") {
        vocab w              = v;
        w.model              = std::move(model);
        w.tokens[w.at(from)] = to;
        return build(tokenizer_spec(w));
    };
    // The cases of issue 24, and more damage of the same kind.
    expect_error(respelled("<0x0A>", "<0xZZ>"),
                 "tokenizer.ggml.tokens element 13 '<0xZZ>' has token type BYTE (6) but is not spelled <0xHH> with "
                 "two hex digits");
    expect_error(respelled("<0x41>", "<0x-1>"), "tokenizer.ggml.tokens element 68 '<0x-1>' has token type BYTE");
    expect_error(respelled("<0x41>", "<0x4>"), "element 68 '<0x4>' has token type BYTE");
    expect_error(respelled("<0x41>", "<0x41"), "element 68 '<0x41' has token type BYTE");
    expect_error(respelled("<0x41>", "<0x41>>"), "element 68 '<0x41>>' has token type BYTE");
    expect_error(respelled("<0x41>", "A"), "element 68 'A' has token type BYTE");
    expect_error(respelled("<0x41>", "[0x41]"), "element 68 '[0x41]' has token type BYTE");
    // The spelling rule holds for every vocabulary type (llama.cpp decodes BYTE tokens the same way).
    expect_error(respelled("<0x0A>", "<0xZZ>", "gpt2"), "element 13 '<0xZZ>' has token type BYTE (6)");
    expect_error(respelled("<0x0A>", "<0xZZ>", "t5"), "element 13 '<0xZZ>' has token type BYTE (6)");

    // The token types before the tokens in the file: the same error, with the text read back.
    vocab w                  = v;
    w.tokens[w.at("<0xFF>")] = "<0xZZ>";
    gguf_spec reversed       = tokenizer_spec(w);
    std::reverse(reversed.kvs.begin(), reversed.kvs.end());
    expect_error(build(reversed), "tokenizer.ggml.tokens element 258 '<0xZZ>' has token type BYTE");

    // WordPiece has no byte tokens: llama.cpp aborts when it decodes one.
    vocab bert = v;
    bert.model = "bert";
    expect_error(build(tokenizer_spec(bert)),
                 "tokenizer.ggml.token_type element 3 is BYTE (6), which a 'bert' (WordPiece) vocabulary cannot "
                 "have");
}

TEST(GgufTokenizer, a_sentencepiece_vocabulary_needs_a_token_for_every_byte) {
    // '<0xZZ>' as a NORMAL token: the spelling rule does not apply, but llama.cpp's byte lookup
    // finds no token for 0x0A ('<0x0A>' or "\n"), and it throws out of the tokenizer.
    vocab        v;
    const size_t i = v.at("<0x0A>");
    v.tokens[i]    = "<0xZZ>";
    v.types[i]     = normal;
    expect_error(build(tokenizer_spec(v)), "tokenizer.ggml.tokens has no token for byte 0x0A (no '<0x0A>' and no "
                                           "one-byte token): llama.cpp's SentencePiece tokenizer "
                                           "(tokenizer.ggml.model 'llama') aborts");
    // The one-byte token is the other way llama.cpp finds the byte.
    vocab with_newline = v;
    with_newline.tokens.emplace_back("\n");
    with_newline.types.push_back(normal);
    expect_ok(build(tokenizer_spec(with_newline)));
    // Only SentencePiece looks bytes up so; a BPE or Unigram vocabulary may lack them.
    for (const char *model : {"gpt2", "t5", "bert"}) {
        vocab other = v;
        other.model = model;
        std::replace(other.types.begin(), other.types.end(), byte_type, normal);
        expect_ok(build(tokenizer_spec(other)));
    }

    // Lower-case digits are not what llama.cpp looks up.
    vocab lower                      = vocab();
    lower.tokens[lower.at("<0xAB>")] = "<0xab>";
    expect_error(build(tokenizer_spec(lower)), "has no token for byte 0xAB");

    // Byte 0: its one-byte token is never found (llama.cpp passes an empty C string).
    vocab        zero = vocab();
    const size_t z    = zero.at("<0x00>");
    zero.tokens[z]    = std::string(1, '\0');
    zero.types[z]     = normal;
    expect_error(build(tokenizer_spec(zero)), "has no token for byte 0x00");

    // No byte tokens at all.
    vocab none;
    none.tokens = {"<unk>", "<s>", "</s>", "a"};
    none.types  = {2, control, control, normal};
    expect_error(build(tokenizer_spec(none)), "has no token for byte 0x00");
}

TEST(GgufTokenizer, the_file_reader_names_the_damaged_byte_token) {
    vocab v;
    v.tokens[v.at("<0x0A>")]      = "<0x-1>";
    const bytes                 b = build(tokenizer_spec(v));
    const std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("inferbox-gguf-tok-test-" + std::to_string(::getpid()) + ".gguf");
    {
        std::ofstream f(path, std::ios::binary);
        f.write(reinterpret_cast<const char *>(b.data()), std::streamsize(b.size()));
    }
    auto r = read_gguf_file(path, "bad.gguf");
    std::filesystem::remove(path);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, "invalid_gguf");
    EXPECT_EQ(r.err().message, "bad.gguf: tokenizer.ggml.tokens element 13 '<0x-1>' has token type BYTE (6) but is "
                               "not spelled <0xHH> with two hex digits");
}

// --- the real test models -----------------------------------------------------------------------

namespace {

std::filesystem::path test_model(const char *name) {
    const char *dir = std::getenv("INFERBOX_TEST_MODELS");
    return std::filesystem::path(dir && *dir ? dir : "/work/shared/models") / name;
}

} // namespace

TEST(GgufModels, stories260k) {
    const auto path = test_model("stories260K.gguf");
    ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing: set INFERBOX_TEST_MODELS";
    auto r = read_gguf_file(path);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->architecture, "llama");
    EXPECT_EQ(r->context_length, 512u);
    EXPECT_EQ(r->embedding_length, 64u);
    EXPECT_EQ(r->block_count, 5u);
    EXPECT_EQ(r->head_count, 8u);
    EXPECT_EQ(r->head_count_kv, 4u);
    EXPECT_EQ(r->vocab_size, 512u);
    EXPECT_EQ(r->quantization, "F32");
    EXPECT_FALSE(r->has_chat_template);
    EXPECT_EQ(r->file_size, std::filesystem::file_size(path));
    EXPECT_GT(r->n_params, 250000u);
    EXPECT_LT(r->n_params, 300000u);
    EXPECT_LE(r->data_offset + r->tensor_bytes, r->file_size);
    for (const auto &t : r->tensors) {
        EXPECT_EQ(t.type, 0u) << t.name; // all F32
    }
}

TEST(GgufModels, stories260k_chatml_has_a_template) {
    const auto path = test_model("stories260K-chatml.gguf");
    ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing: set INFERBOX_TEST_MODELS";
    auto r = read_gguf_file(path);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_TRUE(r->has_chat_template);
    EXPECT_NE(r->find("tokenizer.chat_template")->as_string()->find("<|im_start|>"), std::string::npos);
    EXPECT_EQ(r->architecture, "llama");
    EXPECT_EQ(r->vocab_size, 512u);
}

TEST(GgufModels, stories260k_q8_0) {
    const auto path = test_model("stories260K-Q8_0.gguf");
    ASSERT_TRUE(std::filesystem::exists(path)) << path << " is missing: set INFERBOX_TEST_MODELS";
    auto r = read_gguf_file(path);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->quantization, "Q8_0");
    EXPECT_EQ(r->context_length, 512u);
    bool any_q8 = false;
    for (const auto &t : r->tensors) {
        any_q8 = any_q8 || t.type == 8;
    }
    EXPECT_TRUE(any_q8);
    // Same shapes as the F32 model, so the same parameter count.
    auto f32 = read_gguf_file(test_model("stories260K.gguf"));
    ASSERT_TRUE(f32.ok());
    EXPECT_EQ(r->n_params, f32->n_params);
    EXPECT_LT(r->tensor_bytes, f32->tensor_bytes);
}

TEST(GgufTokenizer, two_tokens_with_the_same_text_are_refused) {
    // llama.cpp's loader asserts that no two tokens share a text (the process dies while loading).
    vocab bpe;
    bpe.model  = "gpt2";
    bpe.tokens = {"a", "b", "ab", "b"};
    bpe.types  = {normal, normal, normal, normal};
    expect_error(build(tokenizer_spec(bpe)),
                 "tokenizer.ggml.tokens has token 1 and token 3 with the same text 'b': llama.cpp's vocabulary loader "
                 "aborts on a duplicate token");
    // An empty token is loaded as "[EMPTY_<id>]": it collides with a token spelled that way.
    bpe.tokens = {"a", "", "[EMPTY_1]", "c"};
    expect_error(build(tokenizer_spec(bpe)), "token 1 and token 2 with the same text '[EMPTY_1]'");
    // Two empty tokens get different names, and texts that differ only in case are different.
    bpe.tokens = {"", "", "B", "b"};
    expect_ok(build(tokenizer_spec(bpe)));
}

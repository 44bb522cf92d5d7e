// Bytes -> read_gguf_buffer (GGUF pre-validation). Whatever the bytes, the reader returns an
// error naming the file or a gguf_info whose promises hold:
//   - every tensor's data lies inside the file, in order, at aligned offsets past the metadata;
//   - the alignment is a power of two; the counts are within gguf_limits;
//   - n_params and tensor_bytes are the sums over the tensors;
//   - every metadata value renders for a terminal without raw control characters.
// The seed corpus is tests/fuzz/corpus/gguf/ (tests/fuzz/make_gguf_seeds.py writes it).

#include "fuzz_check.h"
#include "store/gguf.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

using namespace inferbox;

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string label = "fuzz.gguf";
    auto              r     = read_gguf_buffer(std::span<const uint8_t>(data, size), label);
    if (!r.ok()) {
        FUZZ_CHECK(r.err().message.rfind(label + ": ", 0) == 0);
        FUZZ_CHECK(r.err().message.size() > label.size() + 2);
        return 0;
    }
    const gguf_info &g = *r;
    FUZZ_CHECK(g.file_size == size);
    FUZZ_CHECK(g.version == 2 || g.version == 3);
    FUZZ_CHECK(g.alignment != 0 && (g.alignment & (g.alignment - 1)) == 0);
    FUZZ_CHECK(g.metadata.size() <= gguf_limits::max_kv);
    FUZZ_CHECK(g.tensors.size() <= gguf_limits::max_tensors);

    uint64_t params = 0, bytes = 0, next = 0;
    for (const gguf_tensor_info &t : g.tensors) {
        FUZZ_CHECK(t.n_dims >= 1 && t.n_dims <= gguf_limits::max_dims);
        FUZZ_CHECK(t.name.size() <= gguf_limits::max_name_bytes);
        const auto traits = ggml_type_traits_of(t.type);
        FUZZ_CHECK(traits.has_value());
        FUZZ_CHECK(t.offset % g.alignment == 0);
        FUZZ_CHECK(t.offset == next);
        FUZZ_CHECK(g.data_offset <= size);
        FUZZ_CHECK(t.offset <= size - g.data_offset);
        FUZZ_CHECK(t.n_bytes <= size - g.data_offset - t.offset);
        uint64_t n = 1;
        for (uint32_t d = 0; d < t.n_dims; ++d) {
            n *= t.dims[d]; // cannot wrap: the reader refused shapes that overflow
        }
        FUZZ_CHECK(n == t.n_elements);
        FUZZ_CHECK(t.n_bytes == t.n_elements / traits->block_size * traits->type_size);
        next = (t.offset + t.n_bytes + g.alignment - 1) / g.alignment * g.alignment;
        params += t.n_elements;
        bytes += t.n_bytes;
    }
    FUZZ_CHECK(params == g.n_params);
    FUZZ_CHECK(bytes == g.tensor_bytes);

    for (const auto &[key, value] : g.metadata) {
        FUZZ_CHECK(!key.empty() && key.size() <= gguf_limits::max_key_bytes);
        const std::string shown = value.to_display(40);
        for (const char c : shown) {
            FUZZ_CHECK(uint8_t(c) >= 0x20 && c != 0x7f);
        }
        if (const gguf_array *a = value.as_array()) {
            FUZZ_CHECK(a->length <= gguf_limits::max_array_length);
        }
    }
    return 0;
}

// Document text -> chunk_text (retrieval's chunker). The first byte picks the chunk size (1..32
// tokens) and the overlap (up to half of it), the second the counter (approximate_tokens, or one
// token per byte, which makes every multi-byte character count over small limits). Invariants:
//   - valid UTF-8 is chunked, invalid UTF-8 is refused;
//   - every chunk is the text at its offset, valid UTF-8, non-empty, without surrounding
//     whitespace, within the limit unless it is a single character;
//   - chunks start strictly later each time and cover every non-whitespace byte of the text.

#include "common/utf8.h"
#include "fuzz_check.h"
#include "retrieval/chunker.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace inferbox;

namespace {

bool ascii_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

size_t code_points(std::string_view s) {
    size_t n = 0;
    for (const char c : s) {
        n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
    }
    return n;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) {
        return 0;
    }
    retrieval::chunking_options opts;
    opts.max_tokens     = 1 + data[0] % 32;
    opts.overlap_tokens = (data[0] / 32) % (opts.max_tokens / 2 + 1);
    if ((data[1] & 1) != 0) {
        opts.count_tokens = [](std::string_view s) { return s.size(); };
    }
    const retrieval::token_counter count = opts.count_tokens ? opts.count_tokens : retrieval::approximate_tokens;
    const std::string_view         text(reinterpret_cast<const char *>(data + 2), size - 2);

    const auto chunks = retrieval::chunk_text(text, opts);
    FUZZ_CHECK(chunks.ok() == utf8_valid(text));
    if (!chunks.ok()) {
        return 0;
    }
    std::vector<bool> covered(text.size(), false);
    size_t            last_offset = 0;
    for (size_t i = 0; i < chunks->size(); ++i) {
        const auto &c = (*chunks)[i];
        FUZZ_CHECK(!c.text.empty());
        FUZZ_CHECK(c.offset + c.text.size() <= text.size());
        FUZZ_CHECK(text.substr(c.offset, c.text.size()) == c.text);
        FUZZ_CHECK(utf8_valid(c.text));
        FUZZ_CHECK(!ascii_space(c.text.front()) && !ascii_space(c.text.back()));
        FUZZ_CHECK(c.n_tokens <= opts.max_tokens || code_points(c.text) == 1);
        FUZZ_CHECK(count(c.text) <= c.n_tokens); // both counters are subadditive
        FUZZ_CHECK(i == 0 || c.offset > last_offset);
        last_offset = c.offset;
        for (size_t b = c.offset; b < c.offset + c.text.size(); ++b) {
            covered[b] = true;
        }
    }
    for (size_t b = 0; b < text.size(); ++b) {
        FUZZ_CHECK(covered[b] || ascii_space(text[b]));
    }
    return 0;
}

// Bytes -> parse_imatrix (both formats: GGUF when the bytes start with "GGUF", else the legacy
// binary format). Whatever the bytes, the parser returns an error naming the file or an importance
// matrix whose promises hold: at least one entry, every entry named and non-empty, every value
// finite and >= 0, and no more values in all than the bytes could hold.
// The seed corpus is tests/fuzz/corpus/imatrix/.

#include "fuzz_check.h"
#include "store/imatrix.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

using namespace inferbox;

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string label = "fuzz.imatrix";
    auto              r     = parse_imatrix(std::span<const uint8_t>(data, size), label);
    if (!r.ok()) {
        FUZZ_CHECK(r.err().message.rfind(label + ": ", 0) == 0);
        FUZZ_CHECK(r.err().message.size() > label.size() + 2);
        return 0;
    }
    FUZZ_CHECK(r->format == "gguf" || r->format == "legacy");
    FUZZ_CHECK(!r->entries.empty());
    FUZZ_CHECK(r->entries.size() <= imatrix_limits::max_entries);
    uint64_t values = 0;
    for (const auto &[name, v] : r->entries) {
        FUZZ_CHECK(!name.empty());
        FUZZ_CHECK(!v.empty());
        for (const float f : v) {
            FUZZ_CHECK(std::isfinite(f) && f >= 0);
        }
        values += v.size();
    }
    FUZZ_CHECK(values * 4 <= size); // every value came from four bytes of the input
    return 0;
}

// Request-target and header bytes -> query_params / percent_decoded / accepts_gzip /
// if_none_match_lists (api/query_string.h), the parsers the console's routes read untrusted
// input with. Invariants:
//   - nothing crashes or hangs, whatever the bytes;
//   - an accepted query string has at most 32 parameters, and writing its parameters back
//     percent-encoded and parsing them again gives the same map (no value is lost or altered);
//   - percent_decoded never grows its input, and decodes what percent-encoding made;
//   - another coding appended to an Accept-Encoding list never changes the gzip decision;
//   - a list that ends with the tag always matches it.

#include "api/query_string.h"
#include "fuzz_check.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

using namespace inferbox;

namespace {

std::string encoded(std::string_view s) {
    static const char *hex = "0123456789ABCDEF";
    std::string        out;
    for (unsigned char c : s) {
        out += '%';
        out += hex[c >> 4];
        out += hex[c & 15];
    }
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string_view bytes(reinterpret_cast<const char *>(data), size);

    const std::string target = "/v1/console/conversations?" + std::string(bytes);
    if (auto params = query_params(target); params.ok()) {
        FUZZ_CHECK(params->size() <= 32);
        std::string again = "/x?";
        for (const auto &[name, value] : *params) {
            again += encoded(name) + "=" + encoded(value) + "&";
        }
        auto reparsed = query_params(again);
        FUZZ_CHECK(reparsed.ok());
        FUZZ_CHECK(*reparsed == *params);
    }
    if (auto decoded = percent_decoded(bytes)) {
        FUZZ_CHECK(decoded->size() <= bytes.size());
    }
    FUZZ_CHECK(percent_decoded(encoded(bytes)) == std::string(bytes));

    const bool gzip = accepts_gzip(bytes);
    FUZZ_CHECK(accepts_gzip(std::string(bytes) + ", br;q=0.3") == gzip);

    const std::string etag = "\"c0ffee\"";
    FUZZ_CHECK(if_none_match_lists(std::string(bytes) + ", " + etag, etag));
    (void)if_none_match_lists(bytes, etag);
    return 0;
}

// Bytes -> the UTF-8 helpers, checked against a reference decoder written from the Unicode
// table of well-formed byte sequences (Unicode 15, table 3-7):
//   - utf8_valid agrees with the reference;
//   - utf8_sanitize returns valid input unchanged, and otherwise replaces exactly each byte the
//     reference cannot start a character at with one U+FFFD; its output is valid and idempotent;
//   - utf8_incomplete_tail holds back every character that is cut short, never more than 3
//     bytes, and a cut there never changes what sanitizing the whole gives, whatever follows
//     (text_stream relies on this). The first input byte picks where "whatever follows" begins.

#include "common/utf8.h"
#include "fuzz_check.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

using namespace inferbox;

namespace {

// The bytes allowed right after lead byte b0 (later continuation bytes are always 80..BF).
struct byte_range {
    uint8_t lo;
    uint8_t hi;
};

size_t ref_len(uint8_t b0) {
    if (b0 < 0x80) {
        return 1;
    }
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        return 2;
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        return 3;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        return 4;
    }
    return 0;
}

byte_range ref_second(uint8_t b0) {
    switch (b0) {
    case 0xE0:
        return {0xA0, 0xBF};
    case 0xED:
        return {0x80, 0x9F};
    case 0xF0:
        return {0x90, 0xBF};
    case 0xF4:
        return {0x80, 0x8F};
    default:
        return {0x80, 0xBF};
    }
}

// How many bytes at s[i..] match a well-formed sequence (possibly cut short by the end of s),
// and whether the sequence is complete.
struct ref_match {
    size_t len      = 0; // bytes that match; 0 = s[i] cannot start a character
    bool   complete = false;
};

ref_match ref_at(std::string_view s, size_t i) {
    const auto   b0   = static_cast<uint8_t>(s[i]);
    const size_t need = ref_len(b0);
    if (need == 0) {
        return {};
    }
    size_t k = 1;
    for (; k < need && i + k < s.size(); ++k) {
        const auto       b = static_cast<uint8_t>(s[i + k]);
        const byte_range r = k == 1 ? ref_second(b0) : byte_range{0x80, 0xBF};
        if (b < r.lo || b > r.hi) {
            return {0, false};
        }
    }
    return {k, k == need};
}

bool ref_valid(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        const auto m = ref_at(s, i);
        if (!m.complete) {
            return false;
        }
        i += m.len;
    }
    return true;
}

std::string ref_sanitize(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size();) {
        const auto m = ref_at(s, i);
        if (m.complete) {
            out.append(s.substr(i, m.len));
            i += m.len;
        } else {
            out += "\xEF\xBF\xBD";
            i += 1;
        }
    }
    return out;
}

// Bytes at the end of s that are a proper prefix of a well-formed character (0..3).
size_t ref_truncated_tail(std::string_view s) {
    for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
        const auto m = ref_at(s, s.size() - back);
        if (m.len == back && !m.complete) {
            return back;
        }
    }
    return 0;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string_view s(reinterpret_cast<const char *>(data), size);

    const bool valid = utf8_valid(s);
    FUZZ_CHECK(valid == ref_valid(s));

    const std::string clean = utf8_sanitize(s);
    FUZZ_CHECK(clean == ref_sanitize(s));
    FUZZ_CHECK(utf8_valid(clean));
    FUZZ_CHECK(!valid || clean == s);
    FUZZ_CHECK(valid || clean != s);
    FUZZ_CHECK(clean.size() <= 3 * s.size());
    FUZZ_CHECK(utf8_sanitize(clean) == clean);

    // Cut s at an arbitrary point: the first part is what a stream has received so far.
    const size_t           split    = size == 0 ? 0 : data[0] % (size + 1);
    const std::string_view received = s.substr(0, split);
    const std::string_view later    = s.substr(split);
    const size_t           tail     = utf8_incomplete_tail(received);
    FUZZ_CHECK(tail <= 3 && tail <= received.size());
    const size_t truncated = ref_truncated_tail(received);
    FUZZ_CHECK(truncated == 0 || tail == truncated);
    if (tail > 0) {
        // Only the start of a multi-byte character is held back.
        FUZZ_CHECK((static_cast<uint8_t>(received[received.size() - tail]) & 0xC0) == 0xC0);
    }
    const std::string_view safe = received.substr(0, received.size() - tail);
    std::string            held(received.substr(safe.size()));
    held.append(later);
    FUZZ_CHECK(utf8_sanitize(safe) + utf8_sanitize(held) == clean);
    return 0;
}

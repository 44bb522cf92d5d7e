#pragma once
// UTF-8 helpers for streamed text: tokens end in the middle of characters (byte-fallback
// vocabularies emit one byte per token), and JSON must never carry invalid UTF-8.

#include <cstddef>
#include <string>
#include <string_view>

namespace inferbox {

// Number of bytes at the end of `s` that form the start of a multi-byte character whose
// remaining bytes have not arrived yet (0..3). Invalid bytes are not "incomplete": they are
// replaced by utf8_sanitize, so holding them back would gain nothing.
size_t utf8_incomplete_tail(std::string_view s);

// `s` with every invalid or truncated sequence replaced by U+FFFD. Valid input is returned as is.
std::string utf8_sanitize(std::string_view s);

// True when `s` is entirely valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool utf8_valid(std::string_view s);

// The value of a hexadecimal digit (either case), or -1.
int hex_value(char c);

// Whether two strings are equal ignoring ASCII case (HTTP field names, codings, auth schemes).
// Boost.Beast 1.81's iequals reads one byte past its arguments after a case difference, which
// ASan reports on a view that ends at its buffer (tests/fuzz/query_fuzz.cpp found it); this one
// reads only inside them.
bool ascii_iequals(std::string_view a, std::string_view b);

} // namespace inferbox

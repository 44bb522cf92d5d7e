#include "common/utf8.h"

#include <gtest/gtest.h>

using namespace inferbox;

TEST(utf8, incomplete_tail_counts_only_truncated_characters) {
    EXPECT_EQ(utf8_incomplete_tail("abc"), 0u);
    EXPECT_EQ(utf8_incomplete_tail("a\xC3"), 1u);         // first byte of é
    EXPECT_EQ(utf8_incomplete_tail("a\xE2\x82"), 2u);     // 2 of 3 bytes of €
    EXPECT_EQ(utf8_incomplete_tail("a\xF0\x9F\x98"), 3u); // 3 of 4 bytes of 😀
    EXPECT_EQ(utf8_incomplete_tail("a\xE2\x82\xAC"), 0u); // complete €
    EXPECT_EQ(utf8_incomplete_tail("a\x80"), 0u);         // stray continuation: invalid, not incomplete
}

TEST(utf8, sanitize_replaces_invalid_sequences) {
    EXPECT_EQ(utf8_sanitize("h\xC3\xA9llo"), "h\xC3\xA9llo");
    EXPECT_EQ(utf8_sanitize("a\xFF"
                            "b"),
              "a\xEF\xBF\xBD"
              "b");
    EXPECT_EQ(utf8_sanitize("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                 // overlong
    EXPECT_EQ(utf8_sanitize("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"); // surrogate
    EXPECT_EQ(utf8_sanitize(std::string("a\0b", 3)), std::string("a\0b", 3));
    EXPECT_TRUE(utf8_valid("\xF0\x9F\x98\x80"));
    EXPECT_FALSE(utf8_valid("\xF0\x9F\x98"));
}

TEST(ascii_iequals, equal_ignoring_ascii_case_only) {
    EXPECT_TRUE(ascii_iequals("Bearer ", "bEARER "));
    EXPECT_TRUE(ascii_iequals("", ""));
    EXPECT_FALSE(ascii_iequals("gzip", "gzi"));
    EXPECT_FALSE(ascii_iequals("gzip", "gzjp"));
    EXPECT_FALSE(ascii_iequals("\xc3\x89", "\xc3\xa9")); // no Unicode folding: É is not é here
    // Only the views' own bytes are read: a view cut out of a longer buffer compares as itself.
    const std::string buf = "gzIpXYZ";
    EXPECT_TRUE(ascii_iequals(std::string_view(buf.data(), 4), "gzip"));
}

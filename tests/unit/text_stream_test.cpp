#include "common/text_stream.h"

#include <gtest/gtest.h>

using namespace inferbox;

namespace {

// Feeds `pieces`, returns {emitted chunks, concatenation}.
std::pair<std::vector<std::string>, std::string> run(text_stream &ts, const std::vector<std::string> &pieces) {
    std::vector<std::string> chunks;
    std::string              all;
    for (const auto &p : pieces) {
        auto out = ts.push(p);
        all += out;
        chunks.push_back(out);
        if (ts.stopped()) {
            break;
        }
    }
    auto rest = ts.finish();
    all += rest;
    chunks.push_back(rest);
    return {chunks, all};
}

} // namespace

TEST(text_stream, no_stop_strings_passes_text_through) {
    text_stream ts({});
    auto [chunks, all] = run(ts, {"Once", " upon", " a time"});
    EXPECT_EQ(all, "Once upon a time");
    EXPECT_EQ(chunks[0], "Once");
    EXPECT_FALSE(ts.stopped());
}

TEST(text_stream, stop_string_split_across_pieces_is_never_emitted) {
    text_stream ts({"named"});
    auto [chunks, all] = run(ts, {"a girl na", "m", "ed Lily"});
    EXPECT_TRUE(ts.stopped());
    EXPECT_EQ(ts.matched_stop(), "named");
    EXPECT_EQ(all, "a girl ");
    EXPECT_EQ(chunks[0], "a girl "); // "na" held back: it may start the stop string
    EXPECT_EQ(chunks[1], "");
}

TEST(text_stream, held_prefix_is_released_when_it_does_not_complete) {
    text_stream ts({"named"});
    auto [chunks, all] = run(ts, {"a girl na", "p"});
    EXPECT_EQ(chunks[0], "a girl ");
    EXPECT_EQ(chunks[1], "nap");
    EXPECT_EQ(all, "a girl nap");
    EXPECT_FALSE(ts.stopped());
}

TEST(text_stream, earliest_stop_wins) {
    text_stream ts({"world", "lo w"});
    auto [chunks, all] = run(ts, {"hello world"});
    EXPECT_EQ(all, "hel");
    EXPECT_EQ(ts.matched_stop(), "lo w");
}

TEST(text_stream, multibyte_character_is_never_split) {
    text_stream ts({});
    // "é€" arriving one byte at a time (byte-fallback tokens)
    std::vector<std::string> pieces = {"\xC3", "\xA9", "\xE2", "\x82", "\xAC"};
    auto [chunks, all]              = run(ts, pieces);
    EXPECT_EQ(all, "\xC3\xA9\xE2\x82\xAC");
    EXPECT_EQ(chunks[0], "");
    EXPECT_EQ(chunks[1], "\xC3\xA9");
    EXPECT_EQ(chunks[2], "");
    EXPECT_EQ(chunks[3], "");
    EXPECT_EQ(chunks[4], "\xE2\x82\xAC");
}

TEST(text_stream, truncated_character_at_the_end_becomes_replacement) {
    // Policy: every byte that is not part of a valid character becomes one U+FFFD.
    text_stream ts({});
    auto [chunks, all] = run(ts, {"ok\xE2\x82"});
    EXPECT_EQ(all, "ok\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(text_stream, stop_string_with_multibyte_characters) {
    text_stream ts({"\xE2\x82\xAC"
                    "5"});
    auto [chunks, all] = run(ts, {"costs \xE2", "\x82\xAC", "5 today"});
    EXPECT_TRUE(ts.stopped());
    EXPECT_EQ(all, "costs ");
}

TEST(text_stream, concatenation_is_independent_of_how_pieces_are_cut) {
    const std::string text = "The caf\xC3\xA9 sold na\xC3\xAFve pies. STOP here";
    std::string       whole;
    {
        text_stream ts({"STOP", "pies!"});
        whole = run(ts, {text}).second;
    }
    EXPECT_EQ(whole, "The caf\xC3\xA9 sold na\xC3\xAFve pies. ");
    for (size_t cut = 1; cut < 6; ++cut) {
        std::vector<std::string> pieces;
        for (size_t i = 0; i < text.size(); i += cut) {
            pieces.push_back(text.substr(i, cut));
        }
        text_stream ts({"STOP", "pies!"});
        EXPECT_EQ(run(ts, pieces).second, whole) << "cut " << cut;
    }
}

// Found by text_stream_fuzz: with overlapping stop strings the earliest-*starting* match won
// when the text came in one piece, but the first to *complete* won when it came token by token.
TEST(text_stream, the_stop_string_that_completes_first_wins_however_pieces_are_cut) {
    for (const auto &pieces : {std::vector<std::string>{"xabc"}, std::vector<std::string>{"x", "a", "b", "c"}}) {
        text_stream ts({"abc", "b"});
        EXPECT_EQ(run(ts, pieces).second, "xa");
        EXPECT_EQ(ts.matched_stop(), "b");
    }
    for (const auto &pieces : {std::vector<std::string>{"xabc"}, std::vector<std::string>{"x", "a", "b", "c"}}) {
        text_stream ts({"bc", "abc"}); // both complete together: the longer one wins
        EXPECT_EQ(run(ts, pieces).second, "x");
        EXPECT_EQ(ts.matched_stop(), "abc");
    }
}

// Found by text_stream_fuzz: stop strings were matched against the raw bytes, so a stop string
// holding U+FFFD never matched the U+FFFD that an invalid byte becomes, and the client saw it.
TEST(text_stream, stop_strings_match_the_text_as_sent_after_replacement) {
    text_stream ts({"\xEF\xBF\xBD"});
    auto [chunks, all] = run(ts, {"ok\xFF then"});
    EXPECT_TRUE(ts.stopped());
    EXPECT_EQ(all, "ok");
}

TEST(text_stream, a_truncated_character_at_the_end_can_complete_a_stop_string) {
    text_stream ts({"a\xEF\xBF\xBD"});
    EXPECT_EQ(ts.push("xa\xE2"), "x");
    EXPECT_EQ(ts.finish(), "");
    EXPECT_TRUE(ts.stopped());
    EXPECT_EQ(ts.matched_stop(), "a\xEF\xBF\xBD");
}

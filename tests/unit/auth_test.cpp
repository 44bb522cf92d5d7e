#include "api/auth.h"
#include "api/request_context.h"
#include "common/log.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

using namespace inferbox;

TEST(ApiKeys, MatchesOnlyConfiguredKeys) {
    api_keys keys({"secret-key-one", "", "secret-key-two"});
    EXPECT_TRUE(keys.enabled());
    EXPECT_EQ(keys.size(), 2u); // the empty key is ignored
    EXPECT_EQ(keys.match("secret-key-one"), std::optional<size_t>(0));
    EXPECT_EQ(keys.match("secret-key-two"), std::optional<size_t>(1));
    EXPECT_FALSE(keys.match("secret-key-on"));
    EXPECT_FALSE(keys.match("secret-key-one "));
    EXPECT_FALSE(keys.match(""));
    EXPECT_FALSE(api_keys({}).enabled());
}

TEST(ApiKeys, KeyFileAndList) {
    const std::string path = ::testing::TempDir() + "/keys.txt";
    {
        std::ofstream f(path);
        f << "# comment\n\n  first-key-123  \r\nsecond-key-456\n";
    }
    std::vector<std::string> keys;
    std::string              err;
    ASSERT_TRUE(read_key_file(path, keys, err)) << err;
    EXPECT_EQ(keys, (std::vector<std::string>{"first-key-123", "second-key-456"}));
    std::remove(path.c_str());
    EXPECT_FALSE(read_key_file(path, keys, err));
    EXPECT_NE(err.find(path), std::string::npos);
    EXPECT_EQ(split_key_list(" a , b,,c "), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(RateLimiter, RequestsPerMinute) {
    rate_limiter rl({2, 0}, 1);
    const auto   t0 = rate_limiter::clock::now();
    EXPECT_FALSE(rl.admit_request(0, t0));
    EXPECT_FALSE(rl.admit_request(0, t0));
    const auto wait = rl.admit_request(0, t0);
    ASSERT_TRUE(wait);
    EXPECT_EQ(*wait, 30.0); // one request refills in 60/2 s
    // Another key has its own bucket.
    EXPECT_FALSE(rl.admit_request(1, t0));
    // After 30 s one more request is allowed, not two.
    const auto t1 = t0 + std::chrono::seconds(30);
    EXPECT_FALSE(rl.admit_request(0, t1));
    EXPECT_TRUE(rl.admit_request(0, t1));
}

TEST(RateLimiter, TokensPerMinuteDebtBlocksUntilRefilled) {
    rate_limiter rl({0, 600}, 1);
    const auto   t0 = rate_limiter::clock::now();
    EXPECT_FALSE(rl.admit_request(0, t0));
    rl.charge_tokens(0, 900, t0); // 300 tokens in debt
    const auto wait = rl.admit_request(0, t0);
    ASSERT_TRUE(wait);
    EXPECT_EQ(*wait, 31.0); // (300 + 1) tokens at 10 per second, rounded up
    EXPECT_TRUE(rl.admit_request(0, t0 + std::chrono::seconds(29)));
    EXPECT_FALSE(rl.admit_request(0, t0 + std::chrono::seconds(31)));
    EXPECT_FALSE(rate_limiter({0, 0}, 1).enabled());
}

TEST(RequestContext, RequestIdEchoedOnlyWhenSane) {
    EXPECT_EQ(request_id_from("abc-123_x.y:z"), "abc-123_x.y:z");
    const auto gen = request_id_from("");
    EXPECT_EQ(gen.size(), 32u);
    EXPECT_NE(request_id_from("bad id"), "bad id");
    EXPECT_NE(request_id_from("a\r\nInjected: 1"), "a\r\nInjected: 1");
    EXPECT_EQ(request_id_from(std::string(129, 'a')).size(), 32u);
    EXPECT_EQ(request_id_from(std::string(128, 'a')), std::string(128, 'a'));
}

TEST(RequestContext, TraceparentParsing) {
    const auto t = trace_from("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    EXPECT_EQ(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    EXPECT_EQ(t.parent_id, "00f067aa0ba902b7");
    EXPECT_EQ(t.span_id.size(), 16u);
    EXPECT_NE(t.span_id, t.parent_id);
    EXPECT_EQ(t.header(), "00-4bf92f3577b34da6a3ce929d0e0e4736-" + t.span_id + "-01");
    // Invalid ones start a new trace.
    for (const char *bad : {"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"}) {
        const auto n = trace_from(bad);
        EXPECT_TRUE(n.parent_id.empty()) << bad;
        EXPECT_EQ(n.trace_id.size(), 32u) << bad;
        EXPECT_NE(n.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736") << bad;
    }
    // A future version may append fields.
    EXPECT_EQ(trace_from("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future").parent_id,
              "00f067aa0ba902b7");
}

TEST(Log, JsonEscape) {
    EXPECT_EQ(json_escape("plain"), "plain");
    EXPECT_EQ(json_escape("a\"b\\c\nd\te"), "a\\\"b\\\\c\\nd\\te");
    EXPECT_EQ(json_escape(std::string("\x01", 1)), "\\u0001");
    EXPECT_EQ(json_escape("\xff"), "\xEF\xBF\xBD"); // invalid UTF-8 becomes U+FFFD
    log_format f = log_format::text;
    EXPECT_TRUE(parse_log_format("JSON", f));
    EXPECT_EQ(f, log_format::json);
    EXPECT_FALSE(parse_log_format("xml", f));
}

// rewrite_query (retrieval/query_rewrite.h): a question → a keyword query, each rule with its
// exact output, and parse_search_request's rewrite_query field (api/vector_stores.h).

#include "api/vector_stores.h"
#include "retrieval/query_rewrite.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace inferbox {
namespace {

using json = nlohmann::json;
using retrieval::rewrite_query;

// Each rule of the rewrite, as query -> exact result.
struct rewrite_case {
    const char *rule;
    const char *query;
    const char *expected;
};

TEST(QueryRewrite, EachRuleGivesItsExactResult) {
    const rewrite_case cases[] = {
        // Question words, articles, fillers and punctuation go.
        {"question", "What is the capital of France?", "capital france"},
        {"question", "Can you please tell me about the refund policy for orders?", "refund policy orders"},
        {"question", "I'd like to know what's in the 'quoted' text.", "quoted text"},
        {"question", "Why doesn't the build, which failed, work?!", "build failed work"},
        // Joined words and versions stay whole; a joiner needs a word character on both sides, so
        // trailing dots, leading and doubled dashes break words.
        {"joined", "How do I upgrade from v1.2 to v2.0 of GPT-4?", "upgrade v1.2 v2.0 gpt-4"},
        {"joined", "snake_case and O'Reilly books", "snake_case o'reilly books"},
        {"joined", "e.g. U.S.A. -flag stop--go _private", "e.g u.s.a flag stop go private"},
        // Numbers are never stop words.
        {"numbers", "What happened in 1969?", "happened 1969"},
        {"numbers", "Is it 3 or 4", "3 4"},
        {"numbers", "0", "0"},
        // The first of repeated terms stays; whole words only ("car" is not "carpet").
        {"repeats", "Rust borrow checker: rust RUST Borrow", "rust borrow checker"},
        {"repeats", "42 and 42, then 7 and 42", "42 7"},
        {"repeats", "carpet car carpet", "carpet car"},
        // Nothing left: the whole query, lower-cased, its whitespace collapsed.
        {"fallback", "What is it?", "what is it?"},
        {"fallback", "  Who\tare\n\nYOU??  ", "who are you??"},
        {"fallback", "?!", "?!"},
        // UTF-8 bytes are kept as they are; only ASCII is lower-cased.
        {"utf8", "Wo liegt Zürich?", "wo liegt zürich"},
        {"utf8", "ÉCOLE école", "École école"},
        {"utf8", "東京の人口は？", "東京の人口は？"},
        {"utf8", "what is the café-crème", "café-crème"},
        // Empty and whitespace give empty.
        {"empty", "", ""},
        {"empty", " \t\n ", ""},
    };
    for (const auto &c : cases) {
        EXPECT_EQ(rewrite_query(c.query), c.expected) << c.rule << ": " << c.query;
    }
}

TEST(QueryRewrite, NeverLongerThanTheQuery) {
    for (const std::string_view q : {"a-b.c_d'e", "The the THE", "x , y ; z", "1 2 3 1 2 3", "-.-'_", "ÿ ÿ"}) {
        const std::string r = rewrite_query(q);
        EXPECT_LE(r.size(), q.size()) << q;
        EXPECT_FALSE(r.empty()) << q;
    }
}

TEST(QueryRewrite, SearchRequestRewritesWhenAsked) {
    auto plain = parse_search_request(json{{"query", "What is the capital of France?"}}, 4096);
    ASSERT_TRUE(plain);
    EXPECT_EQ(plain->query, "What is the capital of France?");

    auto off = parse_search_request(json{{"query", "What is the capital of France?"}, {"rewrite_query", false}}, 4096);
    ASSERT_TRUE(off);
    EXPECT_EQ(off->query, "What is the capital of France?");

    // The field may come before the query; an array query is joined, then rewritten.
    auto on = parse_search_request(
        json::parse(R"({"rewrite_query":true,"query":["What is the capital","of France?"],"max_num_results":2})"),
        4096);
    ASSERT_TRUE(on) << on.err().message;
    EXPECT_EQ(on->query, "capital france");
    EXPECT_EQ(on->max_num_results, 2U);

    // A whitespace-only query has no rewrite: it is searched as given, as without rewrite_query.
    auto blank = parse_search_request(json{{"query", "   "}, {"rewrite_query", true}}, 4096);
    ASSERT_TRUE(blank);
    EXPECT_EQ(blank->query, "   ");

    // The length bound applies to the query as sent, before the rewrite.
    auto too_long = parse_search_request(json{{"query", "the " + std::string(100, 'q')}, {"rewrite_query", true}}, 64);
    ASSERT_FALSE(too_long);
    EXPECT_EQ(too_long.err().param, "query");

    for (const json &bad : {json("yes"), json(1), json(nullptr), json::array({true})}) {
        auto r = parse_search_request(json{{"query", "x"}, {"rewrite_query", bad}}, 4096);
        ASSERT_FALSE(r) << bad.dump();
        EXPECT_EQ(r.err().param, "rewrite_query");
        EXPECT_NE(r.err().message.find("boolean"), std::string::npos) << r.err().message;
    }
}

} // namespace
} // namespace inferbox

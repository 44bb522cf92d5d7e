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

TEST(QueryRewrite, DropsQuestionWordsArticlesAndPunctuation) {
    EXPECT_EQ(rewrite_query("What is the capital of France?"), "capital france");
    EXPECT_EQ(rewrite_query("Can you please tell me about the refund policy for orders?"), "refund policy orders");
    EXPECT_EQ(rewrite_query("I'd like to know what's in the 'quoted' text."), "quoted text");
    EXPECT_EQ(rewrite_query("Why doesn't the build, which failed, work?!"), "build failed work");
}

TEST(QueryRewrite, KeepsJoinedWordsAndVersions) {
    EXPECT_EQ(rewrite_query("How do I upgrade from v1.2 to v2.0 of GPT-4?"), "upgrade v1.2 v2.0 gpt-4");
    EXPECT_EQ(rewrite_query("snake_case and O'Reilly books"), "snake_case o'reilly books");
    // A joiner needs a word character on both sides: trailing dots, leading and doubled dashes
    // break words.
    EXPECT_EQ(rewrite_query("e.g. U.S.A. -flag stop--go _private"), "e.g u.s.a flag stop go private");
}

TEST(QueryRewrite, KeepsNumbers) {
    EXPECT_EQ(rewrite_query("What happened in 1969?"), "happened 1969");
    EXPECT_EQ(rewrite_query("Is it 3 or 4"), "3 4");
    EXPECT_EQ(rewrite_query("0"), "0");
}

TEST(QueryRewrite, KeepsTheFirstOfRepeatedTerms) {
    EXPECT_EQ(rewrite_query("Rust borrow checker: rust RUST Borrow"), "rust borrow checker");
    EXPECT_EQ(rewrite_query("42 and 42, then 7 and 42"), "42 7");
    // Whole words only: "car" is not a repeat of "carpet".
    EXPECT_EQ(rewrite_query("carpet car carpet"), "carpet car");
}

TEST(QueryRewrite, FallsBackToTheWholeQueryWhenNothingIsLeft) {
    EXPECT_EQ(rewrite_query("What is it?"), "what is it?");
    EXPECT_EQ(rewrite_query("  Who\tare\n\nYOU??  "), "who are you??");
    EXPECT_EQ(rewrite_query("?!"), "?!");
}

TEST(QueryRewrite, KeepsUtf8BytesAsTheyAre) {
    EXPECT_EQ(rewrite_query("Wo liegt Zürich?"), "wo liegt zürich");
    EXPECT_EQ(rewrite_query("ÉCOLE école"), "École école"); // only ASCII is lower-cased
    EXPECT_EQ(rewrite_query("東京の人口は？"), "東京の人口は？");
    EXPECT_EQ(rewrite_query("what is the café-crème"), "café-crème");
}

TEST(QueryRewrite, EmptyAndWhitespaceGiveEmpty) {
    EXPECT_EQ(rewrite_query(""), "");
    EXPECT_EQ(rewrite_query(" \t\n "), "");
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
    EXPECT_FALSE(plain->rewritten);

    auto off = parse_search_request(json{{"query", "What is the capital of France?"}, {"rewrite_query", false}}, 4096);
    ASSERT_TRUE(off);
    EXPECT_EQ(off->query, "What is the capital of France?");
    EXPECT_FALSE(off->rewritten);

    // The field may come before the query; an array query is joined, then rewritten.
    auto on = parse_search_request(
        json::parse(R"({"rewrite_query":true,"query":["What is the capital","of France?"],"max_num_results":2})"),
        4096);
    ASSERT_TRUE(on) << on.err().message;
    EXPECT_EQ(on->query, "capital france");
    EXPECT_TRUE(on->rewritten);
    EXPECT_EQ(on->max_num_results, 2U);

    // A whitespace-only query has no rewrite: it is searched as given, as without rewrite_query.
    auto blank = parse_search_request(json{{"query", "   "}, {"rewrite_query", true}}, 4096);
    ASSERT_TRUE(blank);
    EXPECT_EQ(blank->query, "   ");
    EXPECT_FALSE(blank->rewritten);

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

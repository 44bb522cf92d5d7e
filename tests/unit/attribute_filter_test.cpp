// Vector store file attributes and search filters: the JSON readers (api/vector_stores.h:
// parse_attributes, parse_attribute_filter, parse_ranking_options, parse_expires_after) and the
// evaluator (retrieval/attribute_filter.h), each operator, type mismatches, nesting and each bound.

#include "api/vector_stores.h"
#include "retrieval/attribute_filter.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace inferbox {
namespace {

using json = nlohmann::json;
using retrieval::attribute_map;
using retrieval::filter_op;

// The filter read from `text`; a failed read fails the test.
retrieval::attribute_filter filter_of(const std::string &text) {
    auto f = parse_attribute_filter(json::parse(text), "filters");
    EXPECT_TRUE(f) << text << ": " << (f ? "" : f.err().message);
    return f ? *f : retrieval::attribute_filter{};
}

bool passes(const std::string &filter, const attribute_map &attrs, const std::string &file_id = "file-1") {
    return retrieval::matches(filter_of(filter), file_id, attrs);
}

// The error a malformed filter gives: its param, and the message must name `needle`.
std::string param_of_bad(const std::string &text, const std::string &needle) {
    auto f = parse_attribute_filter(json::parse(text), "filters");
    EXPECT_FALSE(f) << text;
    if (f) {
        return "";
    }
    EXPECT_NE(f.err().message.find(needle), std::string::npos) << f.err().message;
    EXPECT_EQ(f.err().kind, error_kind::invalid_request);
    return f.err().param;
}

const attribute_map doc = {{"author", std::string("ann")}, {"year", 2021.0}, {"draft", false}};

TEST(AttributeFilter, ReadsEachOperator) {
    const char     *ops[]  = {"eq", "ne", "gt", "gte", "lt", "lte"};
    const filter_op want[] = {filter_op::eq,  filter_op::ne, filter_op::gt,
                              filter_op::gte, filter_op::lt, filter_op::lte};
    for (size_t i = 0; i < 6; ++i) {
        auto f = filter_of(json{{"type", ops[i]}, {"key", "year"}, {"value", 2020}}.dump());
        EXPECT_EQ(f.op, want[i]);
        EXPECT_EQ(f.key, "year");
        ASSERT_EQ(f.values.size(), 1U);
        EXPECT_EQ(std::get<double>(f.values[0]), 2020.0);
        EXPECT_STREQ(retrieval::filter_op_name(f.op), ops[i]);
    }
    auto in = filter_of(R"({"type":"in","key":"author","value":["ann",3]})");
    EXPECT_EQ(in.op, filter_op::in);
    ASSERT_EQ(in.values.size(), 2U);
    EXPECT_EQ(std::get<std::string>(in.values[0]), "ann");
    EXPECT_EQ(filter_of(R"({"type":"nin","key":"a","value":["x"]})").op, filter_op::nin);
    auto both = filter_of(R"({"type":"and","filters":[{"type":"eq","key":"a","value":true},
                                                     {"type":"or","filters":[{"type":"eq","key":"b","value":"c"}]}]})");
    EXPECT_EQ(both.op, filter_op::all_of);
    ASSERT_EQ(both.children.size(), 2U);
    EXPECT_EQ(both.children[1].op, filter_op::any_of);
    EXPECT_TRUE(std::get<bool>(both.children[0].values[0]));
}

TEST(AttributeFilter, EvaluatesComparisons) {
    EXPECT_TRUE(passes(R"({"type":"eq","key":"author","value":"ann"})", doc));
    EXPECT_FALSE(passes(R"({"type":"eq","key":"author","value":"bob"})", doc));
    EXPECT_TRUE(passes(R"({"type":"ne","key":"author","value":"bob"})", doc));
    EXPECT_FALSE(passes(R"({"type":"ne","key":"author","value":"ann"})", doc));
    EXPECT_TRUE(passes(R"({"type":"eq","key":"year","value":2021})", doc));
    EXPECT_TRUE(passes(R"({"type":"eq","key":"year","value":2021.0})", doc));
    EXPECT_TRUE(passes(R"({"type":"eq","key":"draft","value":false})", doc));
    EXPECT_FALSE(passes(R"({"type":"eq","key":"draft","value":true})", doc));

    EXPECT_TRUE(passes(R"({"type":"gt","key":"year","value":2020})", doc));
    EXPECT_FALSE(passes(R"({"type":"gt","key":"year","value":2021})", doc));
    EXPECT_TRUE(passes(R"({"type":"gte","key":"year","value":2021})", doc));
    EXPECT_FALSE(passes(R"({"type":"gte","key":"year","value":2021.5})", doc));
    EXPECT_TRUE(passes(R"({"type":"lt","key":"year","value":2022})", doc));
    EXPECT_FALSE(passes(R"({"type":"lt","key":"year","value":2021})", doc));
    EXPECT_TRUE(passes(R"({"type":"lte","key":"year","value":2021})", doc));
    EXPECT_FALSE(passes(R"({"type":"lte","key":"year","value":2020})", doc));
    // Strings order bytewise.
    EXPECT_TRUE(passes(R"({"type":"gt","key":"author","value":"al"})", doc));
    EXPECT_TRUE(passes(R"({"type":"lt","key":"author","value":"b"})", doc));

    EXPECT_TRUE(passes(R"({"type":"in","key":"author","value":["bob","ann"]})", doc));
    EXPECT_FALSE(passes(R"({"type":"in","key":"author","value":["bob","cy"]})", doc));
    EXPECT_TRUE(passes(R"({"type":"in","key":"year","value":[1999,2021]})", doc));
    EXPECT_TRUE(passes(R"({"type":"nin","key":"author","value":["bob"]})", doc));
    EXPECT_FALSE(passes(R"({"type":"nin","key":"author","value":["bob","ann"]})", doc));
}

TEST(AttributeFilter, TypeMismatchesAndMissingKeys) {
    // A string never equals a number, nor orders against one.
    EXPECT_FALSE(passes(R"({"type":"eq","key":"year","value":"2021"})", doc));
    EXPECT_TRUE(passes(R"({"type":"ne","key":"year","value":"2021"})", doc));
    EXPECT_FALSE(passes(R"({"type":"gt","key":"year","value":"1000"})", doc));
    EXPECT_FALSE(passes(R"({"type":"lt","key":"author","value":5})", doc));
    EXPECT_FALSE(passes(R"({"type":"in","key":"year","value":["2021"]})", doc));
    EXPECT_FALSE(passes(R"({"type":"eq","key":"draft","value":0})", doc));
    // A boolean attribute never orders.
    EXPECT_FALSE(passes(R"({"type":"gte","key":"draft","value":0})", doc));
    // A missing key: only the negations pass.
    for (const char *op : {"eq", "gt", "gte", "lt", "lte"}) {
        EXPECT_FALSE(passes(json{{"type", op}, {"key", "missing"}, {"value", 1}}.dump(), doc)) << op;
    }
    EXPECT_FALSE(passes(R"({"type":"in","key":"missing","value":[1]})", doc));
    EXPECT_TRUE(passes(R"({"type":"ne","key":"missing","value":1})", doc));
    EXPECT_TRUE(passes(R"({"type":"nin","key":"missing","value":[1]})", doc));
}

TEST(AttributeFilter, FileIdIsAPseudoAttribute) {
    EXPECT_TRUE(passes(R"({"type":"eq","key":"file_id","value":"file-1"})", doc, "file-1"));
    EXPECT_FALSE(passes(R"({"type":"eq","key":"file_id","value":"file-1"})", doc, "file-2"));
    EXPECT_TRUE(passes(R"({"type":"in","key":"file_id","value":["file-2","file-3"]})", doc, "file-3"));
    // A file's own attribute of that name comes first.
    const attribute_map own = {{"file_id", std::string("mine")}};
    EXPECT_TRUE(passes(R"({"type":"eq","key":"file_id","value":"mine"})", own, "file-1"));
    EXPECT_FALSE(passes(R"({"type":"eq","key":"file_id","value":"file-1"})", own, "file-1"));
}

TEST(AttributeFilter, EvaluatesNestedCompounds) {
    const std::string f = R"({"type":"or","filters":[
        {"type":"and","filters":[{"type":"eq","key":"author","value":"ann"},{"type":"gte","key":"year","value":2022}]},
        {"type":"and","filters":[{"type":"eq","key":"draft","value":false},
                                 {"type":"or","filters":[{"type":"lt","key":"year","value":2000},
                                                         {"type":"in","key":"author","value":["ann"]}]}]}]})";
    EXPECT_TRUE(passes(f, doc)); // the second branch: not a draft, and ann
    attribute_map draft = doc;
    draft["draft"]      = true;
    EXPECT_FALSE(passes(f, draft));
    draft["year"] = 2023.0;
    EXPECT_TRUE(passes(f, draft)); // the first branch now
    EXPECT_FALSE(passes(R"({"type":"and","filters":[{"type":"eq","key":"author","value":"ann"},
                                                    {"type":"eq","key":"year","value":1}]})",
                        doc));
    EXPECT_TRUE(passes(R"({"type":"or","filters":[{"type":"eq","key":"author","value":"x"},
                                                  {"type":"eq","key":"year","value":2021}]})",
                       doc));
}

TEST(AttributeFilter, MalformedFiltersNameTheField) {
    EXPECT_EQ(param_of_bad(R"("eq")", "comparison filter"), "filters");
    EXPECT_EQ(param_of_bad(R"({"type":"like","key":"a","value":1})", "must be eq"), "filters.type");
    EXPECT_EQ(param_of_bad(R"({"key":"a","value":1})", "must be eq"), "filters.type");
    EXPECT_EQ(param_of_bad(R"({"type":"eq","value":1})", "key"), "filters.key");
    EXPECT_EQ(param_of_bad(R"({"type":"eq","key":"","value":1})", "1 to 64"), "filters.key");
    EXPECT_EQ(param_of_bad(json{{"type", "eq"}, {"key", std::string(65, 'k')}, {"value", 1}}.dump(), "1 to 64"),
              "filters.key");
    EXPECT_EQ(param_of_bad(R"({"type":"eq","key":"a"})", "required"), "filters.value");
    EXPECT_EQ(param_of_bad(R"({"type":"eq","key":"a","value":null})", "string, a number or a boolean"),
              "filters.value");
    EXPECT_EQ(param_of_bad(R"({"type":"eq","key":"a","value":[1]})", "string, a number or a boolean"), "filters.value");
    EXPECT_EQ(param_of_bad(R"({"type":"gt","key":"a","value":true})", "a string or a number"), "filters.value");
    EXPECT_EQ(param_of_bad(json{{"type", "eq"}, {"key", "a"}, {"value", std::string(513, 'v')}}.dump(), "512"),
              "filters.value");
    EXPECT_EQ(param_of_bad(R"({"type":"in","key":"a","value":"x"})", "array of 1 to 64"), "filters.value");
    EXPECT_EQ(param_of_bad(R"({"type":"in","key":"a","value":[]})", "array of 1 to 64"), "filters.value");
    EXPECT_EQ(param_of_bad(R"({"type":"nin","key":"a","value":["x",false]})", "a number"), "filters.value[1]");
    EXPECT_EQ(param_of_bad(R"({"type":"eq","key":"a","value":1,"extra":2})", "unknown field 'extra'"), "filters.extra");
    EXPECT_EQ(param_of_bad(R"({"type":"and","filters":[],"x":1})", "unknown field"), "filters.x");
    EXPECT_EQ(param_of_bad(R"({"type":"and","filters":[]})", "non-empty"), "filters.filters");
    EXPECT_EQ(param_of_bad(R"({"type":"or"})", "non-empty"), "filters.filters");
    EXPECT_EQ(param_of_bad(R"({"type":"or","filters":[{"type":"eq","key":"a","value":1},{"type":"eq","key":"a"}]})",
                           "required"),
              "filters.filters[1].value");
}

TEST(AttributeFilter, EnforcesEachBound) {
    // Depth: 8 levels pass, 9 do not.
    auto nest = [](int levels) {
        json f = {{"type", "eq"}, {"key", "a"}, {"value", 1}};
        for (int i = 1; i < levels; ++i) {
            f = {{"type", "and"}, {"filters", json::array({f})}};
        }
        return f;
    };
    EXPECT_TRUE(parse_attribute_filter(nest(8), "filters"));
    auto deep = parse_attribute_filter(nest(9), "filters");
    ASSERT_FALSE(deep);
    EXPECT_NE(deep.err().message.find("more than 8 levels"), std::string::npos) << deep.err().message;
    EXPECT_EQ(deep.err().param, "filters.filters[0].filters[0].filters[0].filters[0].filters[0].filters[0].filters[0]."
                                "filters[0]");
    // Nodes: one compound and 63 comparisons are 64; one more is over.
    json wide = {{"type", "or"}, {"filters", json::array()}};
    for (int i = 0; i < 63; ++i) {
        wide["filters"].push_back({{"type", "eq"}, {"key", "a"}, {"value", i}});
    }
    EXPECT_TRUE(parse_attribute_filter(wide, "filters"));
    wide["filters"].push_back({{"type", "eq"}, {"key", "a"}, {"value", 64}});
    auto over = parse_attribute_filter(wide, "filters");
    ASSERT_FALSE(over);
    EXPECT_NE(over.err().message.find("at most 64"), std::string::npos) << over.err().message;
    EXPECT_EQ(over.err().param, "filters.filters[63]");
    // in lists: 64 values pass, 65 do not.
    json list = {{"type", "in"}, {"key", "a"}, {"value", json::array()}};
    for (int i = 0; i < 64; ++i) {
        list["value"].push_back(i);
    }
    EXPECT_TRUE(parse_attribute_filter(list, "filters"));
    list["value"].push_back(64);
    auto long_list = parse_attribute_filter(list, "filters");
    ASSERT_FALSE(long_list);
    EXPECT_EQ(long_list.err().param, "filters.value");
    EXPECT_NE(long_list.err().message.find("1 to 64"), std::string::npos);
}

TEST(AttributeFilter, ReadsAttributesWithinBounds) {
    auto ok = parse_attributes(json::parse(R"({"author":"ann","year":2021,"draft":false,"score":0.5})"), "attributes");
    ASSERT_TRUE(ok) << ok.err().message;
    EXPECT_EQ(json::parse(*ok)["year"], 2021);
    EXPECT_EQ(attributes_object(*ok)["author"], "ann");
    EXPECT_EQ(*parse_attributes(json(nullptr), "attributes"), "{}");
    EXPECT_EQ(attributes_object("not json"), json::object());

    json many = json::object();
    for (int i = 0; i < 16; ++i) {
        many["k" + std::to_string(i)] = i;
    }
    EXPECT_TRUE(parse_attributes(many, "attributes"));
    many["k16"]   = 16;
    auto too_many = parse_attributes(many, "attributes");
    ASSERT_FALSE(too_many);
    EXPECT_EQ(too_many.err().param, "attributes");
    EXPECT_NE(too_many.err().message.find("at most 16"), std::string::npos);

    auto long_key = parse_attributes(json{{std::string(65, 'k'), 1}}, "attributes");
    ASSERT_FALSE(long_key);
    EXPECT_NE(long_key.err().message.find("1 to 64 bytes"), std::string::npos);
    EXPECT_TRUE(parse_attributes(json{{std::string(64, 'k'), 1}}, "attributes"));
    EXPECT_TRUE(parse_attributes(json{{"v", std::string(512, 'v')}}, "attributes"));
    auto long_value = parse_attributes(json{{"v", std::string(513, 'v')}}, "attributes");
    ASSERT_FALSE(long_value);
    EXPECT_EQ(long_value.err().param, "attributes.v");
    EXPECT_NE(long_value.err().message.find("at most 512"), std::string::npos);
    auto nested = parse_attributes(json::parse(R"({"o":{"x":1}})"), "attributes");
    ASSERT_FALSE(nested);
    EXPECT_EQ(nested.err().param, "attributes.o");
    EXPECT_FALSE(parse_attributes(json::parse(R"({"n":null})"), "attributes"));
    EXPECT_FALSE(parse_attributes(json::array(), "attributes"));
}

TEST(AttributeFilter, ReadsRankingOptionsAndExpiry) {
    EXPECT_EQ(*parse_ranking_options(json::parse(R"({"ranker":"none","score_threshold":0.25})"), "r"), 0.25);
    EXPECT_EQ(*parse_ranking_options(json::parse(R"({"ranker":"default-2024-11-15"})"), "r"), 0.0);
    EXPECT_EQ(*parse_ranking_options(json(nullptr), "r"), 0.0);
    EXPECT_TRUE(parse_ranking_options(json::parse(R"({"score_threshold":1})"), "r"));
    auto high = parse_ranking_options(json::parse(R"({"score_threshold":1.5})"), "ranking_options");
    ASSERT_FALSE(high);
    EXPECT_EQ(high.err().param, "ranking_options.score_threshold");
    EXPECT_FALSE(parse_ranking_options(json::parse(R"({"score_threshold":-0.1})"), "r"));
    EXPECT_FALSE(parse_ranking_options(json::parse(R"({"score_threshold":"0.5"})"), "r"));
    EXPECT_EQ(parse_ranking_options(json::parse(R"({"ranker":"fast"})"), "r").err().param, "r.ranker");
    EXPECT_EQ(parse_ranking_options(json::parse(R"({"hybrid_search":{}})"), "r").err().param, "r.hybrid_search");
    EXPECT_EQ(parse_ranking_options(json::parse(R"({"other":1})"), "r").err().param, "r.other");

    EXPECT_EQ(*parse_expires_after(json::parse(R"({"anchor":"last_active_at","days":7})"), false), 7);
    EXPECT_EQ(*parse_expires_after(json(nullptr), true), 0);
    EXPECT_FALSE(parse_expires_after(json(nullptr), false));
    EXPECT_EQ(parse_expires_after(json::parse(R"({"anchor":"created_at","days":7})"), false).err().param,
              "expires_after.anchor");
    EXPECT_EQ(parse_expires_after(json::parse(R"({"anchor":"last_active_at","days":0})"), false).err().param,
              "expires_after.days");
    EXPECT_EQ(parse_expires_after(json::parse(R"({"anchor":"last_active_at","days":366})"), false).err().param,
              "expires_after.days");
    EXPECT_TRUE(parse_expires_after(json::parse(R"({"anchor":"last_active_at","days":365})"), false));
    EXPECT_FALSE(parse_expires_after(json::parse(R"({"anchor":"last_active_at","days":1.5})"), false));
}

} // namespace
} // namespace inferbox

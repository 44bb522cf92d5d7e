// Request bodies: parse_json_body's limits and errors, the key order it records, and that every
// JSON Schema a request carries reaches the grammar converter in the client's property order.
#include "api/json_body.h"
#include "api/schema.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace inferbox;
using json = nlohmann::json;

namespace {

std::string schema_of(api_kind kind, const std::string &body) {
    key_order order;
    auto      doc = parse_json_body(body, 64, &order);
    EXPECT_TRUE(doc.ok()) << doc.err().message;
    auto r = parse_request(kind, *doc, api_limits{}, &order);
    EXPECT_TRUE(r.ok()) << r.err().message;
    return r.ok() ? r->constraint.schema : std::string();
}

} // namespace

TEST(json_body, documents_equal_json_parse) {
    const std::string text =
        R"({"z":1,"a":[1,2.5,-3,true,null,"s",{"y":{},"b":[]}],"m":{"k":"v\u00e9"},"u":18446744073709551615})";
    auto doc = parse_json_body(text, 64);
    ASSERT_TRUE(doc.ok()) << doc.err().message;
    EXPECT_EQ(*doc, json::parse(text));
}

TEST(json_body, key_order_is_the_bodys) {
    const std::string text = R"({"zeta":1,"alpha":{"c":1,"b":2,"a":3},"mid":[{"y":1,"x":2}]})";
    key_order         order;
    auto              doc = parse_json_body(text, 64, &order);
    ASSERT_TRUE(doc.ok());
    EXPECT_EQ(dump_in_order(*doc, &order), text);
    EXPECT_EQ(dump_in_order(*doc, nullptr), doc->dump()); // without an order: sorted, as dump()
    // The order survives moving the document (what the router does with it).
    json moved = std::move(*doc);
    EXPECT_EQ(dump_in_order(moved, &order), text);
}

TEST(json_body, a_repeated_key_keeps_the_last_value_at_its_first_place) {
    key_order order;
    auto      doc = parse_json_body(R"({"b":1,"a":2,"b":3})", 64, &order);
    ASSERT_TRUE(doc.ok());
    EXPECT_EQ((*doc)["b"], 3);
    EXPECT_EQ(dump_in_order(*doc, &order), R"({"b":3,"a":2})");
}

TEST(json_body, depth_is_bounded_and_errors_are_named) {
    std::string ok = std::string(63, '[') + std::string(63, ']');
    EXPECT_TRUE(parse_json_body("{\"a\":" + ok + "}", 64).ok());
    std::string deep = std::string(200000, '[') + std::string(200000, ']');
    auto        r    = parse_json_body("{\"a\":" + deep + "}", 64);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.err().message.find("deeper than 64 levels"), std::string::npos);
    auto bad = parse_json_body(R"({"a":1,})", 64);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.err().message.find("not valid JSON: [json.exception.parse_error"), std::string::npos)
        << bad.err().message;
    EXPECT_EQ(parse_json_body(R"({"a":1} x)", 64).err().code, "invalid_json"); // trailing bytes
    EXPECT_NE(parse_json_body(std::string("{\"a\":\"x\0\"}", 10), 64).err().message.find("NUL byte at offset 7"),
              std::string::npos);
}

TEST(json_body, schemas_keep_the_clients_property_order) {
    // Issue 20: a schema "reasoning, answer, confidence" was generated in alphabetical order.
    const std::string props =
        R"({"type":"object","properties":{"reasoning":{"type":"string"},"answer":{"type":"string"},"confidence":{"type":"number"}},"required":["reasoning","answer","confidence"]})";
    EXPECT_EQ(
        schema_of(
            api_kind::chat,
            R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":)" +
                props + "}}}"),
        props);
    EXPECT_EQ(schema_of(api_kind::completion, R"({"prompt":"x","guided_json":)" + props + "}"), props);
    EXPECT_EQ(schema_of(api_kind::completion, R"({"prompt":"x","nvext":{"guided_json":)" + props + "}}"), props);
    // guided_json given as text keeps the text's order.
    EXPECT_EQ(schema_of(api_kind::completion, R"({"prompt":"x","guided_json":)" + json(props).dump() + "}"), props);
    // Tool parameters too.
    key_order order;
    auto      doc = parse_json_body(
             R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":)" +
                 props + "}}]}",
             64, &order);
    ASSERT_TRUE(doc.ok());
    auto r = parse_request(api_kind::chat, *doc, api_limits{}, &order);
    ASSERT_TRUE(r.ok()) << r.err().message;
    ASSERT_EQ(r->tools.size(), 1u);
    EXPECT_EQ(r->tools[0].parameters, props);
}

TEST(json_body, an_oversized_schema_is_refused_by_its_size) {
    // 60,000 properties (a 1.6 MB schema): refused naming the size and the limit. Before, the body
    // parser's cost grew with the square of the property count (10-15 s here); now linear.
    json props = json::object();
    for (int i = 0; i < 60000; ++i) {
        props["p" + std::to_string(i)] = {{"type", "string"}};
    }
    const json body = {{"prompt", "x"}, {"guided_json", {{"type", "object"}, {"properties", props}}}};
    key_order  order;
    auto       doc = parse_json_body(body.dump(), 64, &order);
    ASSERT_TRUE(doc.ok());
    auto r = parse_request(api_kind::completion, *doc, api_limits{}, &order);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().param, "guided_json");
    EXPECT_NE(r.err().message.find("bytes; the limit is 65536"), std::string::npos) << r.err().message;
}

// The Responses API request: input items, instructions, function tools and text.format read
// into the chat request the pipeline runs, with errors naming the Responses field.
#include "api/responses.h"

#include <gtest/gtest.h>

using namespace inferbox;
using json = nlohmann::json;

namespace {

result<responses_request> parse(const std::string &body) {
    key_order order;
    auto      doc = parse_json_body(body, 64, &order);
    EXPECT_TRUE(doc.ok()) << doc.err().message;
    return parse_responses_request(*doc, api_limits{}, &order);
}

} // namespace

TEST(responses, input_items_become_the_conversation) {
    auto r = parse(R"({"model":"m","instructions":"Be brief","max_output_tokens":9,"input":[
        {"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]},
        {"type":"function_call","call_id":"c1","name":"f","arguments":"{\"x\":1}"},
        {"type":"function_call","call_id":"c2","name":"f","arguments":"{}"},
        {"type":"function_call_output","call_id":"c1","output":"one"},
        {"type":"message","role":"developer","content":"dev"}]})");
    ASSERT_TRUE(r.ok()) << r.err().message;
    const auto &m = r->chat.messages;
    ASSERT_EQ(m.size(), 5u);
    EXPECT_EQ(m[0].role, "system");
    EXPECT_EQ(m[0].content, "Be brief");
    EXPECT_EQ(m[1].content, "ab");
    EXPECT_EQ(m[2].role, "assistant");
    ASSERT_EQ(m[2].tool_calls.size(), 2u); // consecutive calls are one turn
    EXPECT_EQ(m[2].tool_calls[1].id, "c2");
    EXPECT_EQ(m[3].role, "tool");
    EXPECT_EQ(m[3].tool_call_id, "c1");
    EXPECT_EQ(*r->chat.max_tokens, 9);
    EXPECT_EQ(r->echo.max_output_tokens, 9);
    EXPECT_EQ(r->echo.instructions, "Be brief");
}

TEST(responses, function_tools_and_text_format_keep_their_schemas_order) {
    auto r = parse(
        R"({"input":"x","tools":[{"type":"function","name":"f","parameters":{"type":"object","properties":{"z":{"type":"string"},"a":{"type":"string"}}}}],
        "tool_choice":{"type":"function","name":"f"}})");
    ASSERT_TRUE(r.ok()) << r.err().message;
    ASSERT_EQ(r->chat.tools.size(), 1u);
    EXPECT_EQ(r->chat.tools[0].parameters,
              R"({"type":"object","properties":{"z":{"type":"string"},"a":{"type":"string"}}})");
    EXPECT_EQ(r->chat.choice, tool_choice::required);
    auto f = parse(
        R"({"input":"x","text":{"format":{"type":"json_schema","name":"o","schema":{"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"integer"}}}}}})");
    ASSERT_TRUE(f.ok()) << f.err().message;
    EXPECT_EQ(f->chat.constraint.schema,
              R"({"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"integer"}}})");
}

TEST(responses, errors_name_the_responses_field) {
    struct bad_case {
        const char *body;
        const char *param;
        const char *message;
    };
    const bad_case cases[] = {
        {R"({"model":"m"})", "input", "input is required"},
        {R"({"input":[{"type":"image_generation_call"}]})", "input[0].type", "is not supported"},
        {R"({"input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]})",
         "input[0].content[0].type", "this server reads text only"},
        {R"({"input":"x","tools":[{"type":"web_search"}]})", "tools[0].type", "built-in tools"},
        {R"({"input":"x","max_output_tokens":0})", "max_output_tokens", "between 1 and"},
        {R"({"input":"x","text":{"format":{"type":"json_schema","schema":{"type":"string","pattern":"(("}}}})",
         "text.format.schema", "not a usable regular expression"},
        {R"({"input":"x","tools":[{"type":"function","name":"bad name!"}]})", "tools[0].name", "1 to 64 characters"},
        {R"({"input":"x","background":true})", "background", "not supported"},
        {R"({"input":"x","store":"yes"})", "store", "must be a boolean"},
        {R"({"input":"x","nvext":{"max_tool_corrections":9}})", "nvext.max_tool_corrections", "from 0 to 8"},
        {R"({"input":"x","nvext":{"max_tool_corrections":-1}})", "nvext.max_tool_corrections", "from 0 to 8"},
        {R"({"input":"x","nvext":{"max_tool_corrections":"2"}})", "nvext.max_tool_corrections", "an integer"},
        {R"({"input":[{"role":"wizard","content":"x"}]})", "input[0].role", ""},
    };
    for (const auto &c : cases) {
        auto r = parse(c.body);
        ASSERT_FALSE(r.ok()) << c.body;
        EXPECT_EQ(r.err().param, c.param) << c.body << " -> " << r.err().message;
        EXPECT_NE(r.err().message.find(c.message), std::string::npos) << r.err().message;
    }
}

TEST(responses, nvext_max_tool_corrections_sets_the_correction_budget) {
    auto dflt = parse(R"({"input":"x","tools":[{"type":"sql","database":"shop"}]})");
    ASSERT_TRUE(dflt.ok()) << dflt.err().message;
    EXPECT_EQ(dflt->chat.max_tool_corrections, 2);
    auto none = parse(R"({"input":"x","tools":[{"type":"sql","database":"shop"}],"nvext":{"max_tool_corrections":0}})");
    ASSERT_TRUE(none.ok()) << none.err().message;
    EXPECT_EQ(none->chat.max_tool_corrections, 0);
    auto most = parse(R"({"input":"x","nvext":{"max_tool_corrections":8}})");
    ASSERT_TRUE(most.ok()) << most.err().message;
    EXPECT_EQ(most->chat.max_tool_corrections, 8);
}

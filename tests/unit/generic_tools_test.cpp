// inferbox's generic tool-call format (templates without one): the schema the grammar comes
// from, the conversation the template renders, and the reader, whole and while text streams in.
#include "model/generic_tools.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace inferbox;
using json = nlohmann::json;

namespace {

chat_inputs two_tools(tool_choice choice, bool parallel) {
    chat_inputs in;
    in.messages = {{"user", "weather?", {}, {}}};
    in.tools    = {
           {"get_weather", "Weather for a city",
            R"({"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["c","f"]}},"required":["city"]})"},
           {"lookup", "", ""}};
    in.choice              = choice;
    in.parallel_tool_calls = parallel;
    return in;
}

} // namespace

TEST(generic_tools, schema_puts_name_before_arguments_and_bounds_the_calls) {
    const auto one = generic_tools_schema(two_tools(tool_choice::required, false));
    const auto j   = json::parse(one);
    EXPECT_EQ(j["properties"]["tool_calls"]["maxItems"], 1);
    EXPECT_EQ(j["properties"]["tool_calls"]["minItems"], 1);
    const auto &alts = j["properties"]["tool_calls"]["items"]["anyOf"];
    ASSERT_EQ(alts.size(), 2u);
    EXPECT_EQ(alts[0]["properties"]["name"]["const"], "get_weather");
    EXPECT_EQ(alts[1]["properties"]["arguments"], json::parse(R"({"type":"object"})")); // no parameters
    // The text keeps the order: name, then arguments, and the tool's own property order.
    EXPECT_LT(one.find("\"name\""), one.find("\"arguments\""));
    EXPECT_LT(one.find("\"city\""), one.find("\"unit\""));
    EXPECT_FALSE(
        json::parse(generic_tools_schema(two_tools(tool_choice::required, true)))["properties"]["tool_calls"].contains(
            "maxItems"));
}

TEST(generic_tools, the_conversation_describes_the_tools_and_replays_calls) {
    auto in        = two_tools(tool_choice::automatic, true);
    in.messages    = {{"system", "Be brief.", {}, {}},
                      {"user", "weather?", {}, {}},
                      {"assistant", "", {{"call_1", "get_weather", R"({"city":"Paris"})"}}, {}},
                      {"tool", "sunny", {}, "call_1"}};
    const auto out = generic_tools_messages(in);
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(out[0].role, "system");
    EXPECT_EQ(out[0].content.rfind("Be brief.\n\n", 0), 0u);
    EXPECT_NE(out[0].content.find("- get_weather: Weather for a city"), std::string::npos);
    EXPECT_NE(out[0].content.find("If no function is needed, answer normally."), std::string::npos);
    EXPECT_EQ(out[2].content, R"({"tool_calls":[{"arguments":{"city":"Paris"},"name":"get_weather"}]})");
    EXPECT_EQ(out[3].role, "user");
    EXPECT_EQ(out[3].content, "Result of call call_1:\nsunny");
    // Without a system message, one is added first; "required" says so.
    const auto req = generic_tools_messages(two_tools(tool_choice::required, false));
    ASSERT_EQ(req.size(), 2u);
    EXPECT_EQ(req[0].role, "system");
    EXPECT_NE(req[0].content.find("You must call a function now."), std::string::npos);
    EXPECT_NE(req[0].content.find("(exactly one call)"), std::string::npos);
}

TEST(generic_tools, reads_whole_calls) {
    const std::string text = R"({ "tool_calls" : [ { "name" : "get_weather", "arguments" : { "city" : "a}\"b" } },)"
                             R"({"name":"lookup","arguments":{}} ] })";
    auto              r    = read_generic_tools(text, false);
    EXPECT_TRUE(r.found);
    EXPECT_TRUE(r.valid);
    EXPECT_TRUE(r.complete);
    EXPECT_EQ(r.content, "");
    ASSERT_EQ(r.calls.size(), 2u);
    EXPECT_EQ(r.calls[0].name, "get_weather");
    EXPECT_EQ(json::parse(r.calls[0].arguments)["city"], "a}\"b");
    EXPECT_EQ(r.calls[1].arguments, "{}");
    // Prose before a lazily triggered call object is content; prose alone is all content.
    auto lazy = read_generic_tools(R"(Let me check. {"tool_calls":[{"name":"lookup","arguments":{"q":1}}]})", false);
    EXPECT_EQ(lazy.content, "Let me check. ");
    ASSERT_EQ(lazy.calls.size(), 1u);
    auto prose = read_generic_tools("Once upon a {time}", false);
    EXPECT_FALSE(prose.found);
    EXPECT_EQ(prose.content, "Once upon a {time}");
    // Not the format: invalid (the whole text is then the answer).
    EXPECT_FALSE(read_generic_tools(R"({"tool_calls": {"name": 1}})", false).valid);
}

TEST(generic_tools, partial_reads_only_grow) {
    const std::string full = R"(Hi {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]})";
    std::string       content;
    std::string       args;
    bool              named = false;
    for (size_t n = 0; n <= full.size(); ++n) {
        auto r = read_generic_tools(full.substr(0, n), true);
        ASSERT_TRUE(r.valid) << n;
        EXPECT_EQ(r.content.rfind(content, 0), 0u) << "content shrank at " << n;
        content = r.content;
        // A tail that may become the trigger is held back.
        EXPECT_EQ(content.find('{'), std::string::npos) << n;
        if (!r.calls.empty()) {
            EXPECT_EQ(r.calls[0].name, "get_weather") << n; // only once the name is whole
            EXPECT_EQ(r.calls[0].arguments.rfind(args, 0), 0u) << "arguments shrank at " << n;
            args  = r.calls[0].arguments;
            named = true;
        }
    }
    EXPECT_TRUE(named);
    EXPECT_EQ(content, "Hi ");
    EXPECT_EQ(args, R"({"city": "Paris"})");
}

// Guided decoding without a model: regex -> GBNF, choices, GBNF literals, the GBNF shape check,
// and request parsing of response_format / guided_* (forms, conflicts, limits). Every grammar the
// converters produce is also parsed by llama.cpp's own GBNF parser.

#include "api/guided.h"
#include "api/schema.h"

#include "llama.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

using namespace inferbox;
using json = nlohmann::json;

namespace {

const guided_limits limits;

std::string gbnf(const std::string &pattern) {
    auto r = regex_to_gbnf(pattern, limits);
    EXPECT_TRUE(r.ok()) << pattern << " -> " << (r.ok() ? "" : r.err().message);
    return r.ok() ? *r : "";
}

std::string regex_error(const std::string &pattern) {
    auto r = regex_to_gbnf(pattern, limits);
    EXPECT_FALSE(r.ok()) << pattern << " was accepted: " << (r.ok() ? *r : "");
    return r.ok() ? "" : r.err().message;
}

// llama.cpp's GBNF parser, without a vocabulary (no token references here): true when it builds.
bool llama_parses(const std::string &g) {
    llama_sampler *s = llama_sampler_init_grammar(nullptr, g.c_str(), "root");
    if (s == nullptr) {
        return false;
    }
    llama_sampler_free(s);
    return true;
}

} // namespace

TEST(regex_to_gbnf, translates_each_construct) {
    EXPECT_EQ(gbnf("abc"), "root ::= \"abc\"\n");
    EXPECT_EQ(gbnf("^abc$"), "root ::= \"abc\"\n"); // anchors at the ends change nothing
    EXPECT_EQ(gbnf("a|b"), "root ::= \"a\" | \"b\"\n");
    EXPECT_EQ(gbnf("ab*c+d?"), "root ::= \"a\" \"b\"* \"c\"+ \"d\"?\n");
    EXPECT_EQ(gbnf("a{3}b{2,}c{1,4}d{,2}"), "root ::= \"a\"{3} \"b\"{2,} \"c\"{1,4} \"d\"{0,2}\n");
    EXPECT_EQ(gbnf("a{1}b{0}"), "root ::= \"a\" \"\"\n");
    EXPECT_EQ(gbnf("(ab|c)+"), "root ::= (\"ab\" | \"c\")+\n");
    EXPECT_EQ(gbnf("(?:x)(?<n>y)(?P<m>z)"), "root ::= (\"x\") (\"y\") (\"z\")\n");
    EXPECT_EQ(gbnf("[a-z0-9_]"), "root ::= [0-9\\x5Fa-z]\n");
    EXPECT_EQ(gbnf("[^\"\\\\]"), "root ::= [^\\x22\\x5C]\n");
    EXPECT_EQ(gbnf("\\d\\w\\s"), "root ::= [0-9] [0-9A-Z\\x5Fa-z] [\\x09-\\x0D\\x20]\n");
    EXPECT_EQ(gbnf("\\D"), "root ::= [^0-9]\n");
    EXPECT_EQ(gbnf("."), "root ::= [^\\x0A\\x0D\\u2028-\\u2029]\n");
    EXPECT_EQ(gbnf("[\\d.-]"), "root ::= [\\x2D-\\x2E0-9]\n");
    EXPECT_EQ(gbnf("[a\\D]"), "root ::= ([a] | [^0-9])\n");
    EXPECT_EQ(gbnf("[]a]"), "root ::= [\\x5Da]\n"); // ']' first is a member
    EXPECT_EQ(gbnf("\\.\\*\\x41\\u00e9\\n"), "root ::= \".*A\\xE9\\x0A\"\n");
    EXPECT_EQ(gbnf("a{x}"), "root ::= \"a{x}\"\n");        // '{' that opens no quantifier is a literal
    EXPECT_EQ(gbnf("a*?b+?"), "root ::= \"a\"* \"b\"+\n"); // lazy: same strings
    EXPECT_EQ(gbnf(""), "root ::= \"\"\n");
    EXPECT_EQ(gbnf("a|"), "root ::= \"a\" | \"\"\n");
    EXPECT_EQ(gbnf("é+"), "root ::= \"\\xE9\"+\n");
    EXPECT_EQ(gbnf("\\$5"), "root ::= \"$5\"\n");
    EXPECT_EQ(gbnf("a\\$"), "root ::= \"a$\"\n"); // an escaped trailing $ is a literal
}

TEST(regex_to_gbnf, every_output_parses_in_llama_cpp) {
    for (const char *p :
         {"abc", "(a|b)*c{2,5}", "[^a-z]+\\d{1,3}", "\\w+@\\w+\\.(com|org)", "((a)|(b(c)?))+", ".{0,10}", "[\\s\\S]",
          "[a\\D\\W]x", "(?:\\+|-)?\\d+(\\.\\d+)?", "\"quoted\\\\\"", "[\\]\\[\\-^]", "\\x7f\\u2603", ""}) {
        const auto g = gbnf(p);
        EXPECT_TRUE(llama_parses(g)) << p << " -> " << g;
    }
}

TEST(regex_to_gbnf, refuses_unsupported_constructs_by_name) {
    EXPECT_NE(regex_error("(a)\\1").find("backreferences are not supported at offset 4"), std::string::npos);
    EXPECT_NE(regex_error("(?P<x>a)(?P=x)").find("backreferences"), std::string::npos);
    EXPECT_NE(regex_error("\\k<x>").find("backreferences"), std::string::npos);
    EXPECT_NE(regex_error("a(?=b)").find("lookaround"), std::string::npos);
    EXPECT_NE(regex_error("a(?!b)").find("lookaround"), std::string::npos);
    EXPECT_NE(regex_error("(?<=a)b").find("lookaround"), std::string::npos);
    EXPECT_NE(regex_error("(?<!a)b").find("lookaround"), std::string::npos);
    EXPECT_NE(regex_error("\\bword").find("word boundaries"), std::string::npos);
    EXPECT_NE(regex_error("(?i)abc").find("inline flags"), std::string::npos);
    EXPECT_NE(regex_error("(?>a)").find("atomic"), std::string::npos);
    EXPECT_NE(regex_error("a*+").find("possessive"), std::string::npos);
    EXPECT_NE(regex_error("\\p{L}").find("Unicode property"), std::string::npos);
    EXPECT_NE(regex_error("a^b").find("anchors"), std::string::npos);
    EXPECT_NE(regex_error("a$b").find("anchors"), std::string::npos);
    EXPECT_NE(regex_error("*a").find("nothing to repeat at offset 0"), std::string::npos);
    EXPECT_NE(regex_error("a**").find("multiple repeat"), std::string::npos);
    EXPECT_NE(regex_error("(ab").find("unterminated group"), std::string::npos);
    EXPECT_NE(regex_error("ab)").find("unbalanced ')' at offset 2"), std::string::npos);
    EXPECT_NE(regex_error("[ab").find("unterminated character class"), std::string::npos);
    EXPECT_NE(regex_error("[z-a]").find("out of order"), std::string::npos);
    EXPECT_NE(regex_error("[^\\D]").find("negated class"), std::string::npos);
    EXPECT_NE(regex_error("ab\\").find("trailing backslash"), std::string::npos);
    EXPECT_NE(regex_error("\\q").find("unknown escape \\q"), std::string::npos);
    EXPECT_NE(regex_error("\\x4").find("hex digits"), std::string::npos);
    EXPECT_NE(regex_error("\\ud800").find("surrogate"), std::string::npos);
    EXPECT_NE(regex_error("a\\x00").find("NUL"), std::string::npos);
    EXPECT_NE(regex_error(std::string("a\0b", 3)).find("NUL"), std::string::npos);
    EXPECT_NE(regex_error("a{5,2}").find("min > max"), std::string::npos);
    EXPECT_NE(regex_error("\xff").find("UTF-8"), std::string::npos);
}

TEST(regex_to_gbnf, bounds_repetition_nesting_and_size) {
    EXPECT_NE(regex_error("a{1001}").find("repetition count 1001 exceeds the limit of 1000"), std::string::npos);
    EXPECT_NE(regex_error("a{2,99999999999999999999}").find("exceeds the limit"), std::string::npos);
    EXPECT_EQ(gbnf("(a{10}){100}"), "root ::= (\"a\"{10}){100}\n");
    EXPECT_NE(regex_error("((a{10}){10}){11}").find("nested repetitions multiply to 1100"), std::string::npos);
    EXPECT_NE(regex_error("(a{2,}){600}").find("multiply to 1200"), std::string::npos);
    std::string deep(33, '(');
    deep += "a" + std::string(33, ')');
    EXPECT_NE(regex_error(deep).find("nest deeper than 32"), std::string::npos);
    std::string ok_deep(32, '(');
    ok_deep += "a" + std::string(32, ')');
    EXPECT_TRUE(llama_parses(gbnf(ok_deep)));
    EXPECT_NE(regex_error(std::string(4097, 'a')).find("4097 bytes; the limit is 4096"), std::string::npos);
    guided_limits tight;
    tight.max_grammar_bytes = 64;
    auto r                  = regex_to_gbnf("\\S\\S\\S\\S\\S", tight);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.err().message.find("the limit is 64"), std::string::npos);
}

TEST(gbnf_literal, escapes_what_gbnf_reads_specially) {
    EXPECT_EQ(gbnf_literal("plain text"), "\"plain text\"");
    EXPECT_EQ(gbnf_literal("say \"hi\"\\"), "\"say \\x22hi\\x22\\x5C\"");
    EXPECT_EQ(gbnf_literal("a\nb\tc"), "\"a\\x0Ab\\x09c\"");
    EXPECT_EQ(gbnf_literal("é☃😀"), "\"\\xE9\\u2603\\U0001F600\"");
    EXPECT_EQ(gbnf_literal(""), "\"\"");
}

TEST(choice_to_gbnf, alternates_escaped_literals) {
    auto g = choice_to_gbnf({"yes", "no", "say \"maybe\"", ""}, limits);
    ASSERT_TRUE(g.ok());
    EXPECT_EQ(*g, "root ::= \"yes\" | \"no\" | \"say \\x22maybe\\x22\" | \"\"\n");
    EXPECT_TRUE(llama_parses(*g));
    EXPECT_FALSE(choice_to_gbnf({}, limits).ok());
    EXPECT_FALSE(choice_to_gbnf({std::string("a\0b", 3)}, limits).ok());
    EXPECT_FALSE(choice_to_gbnf({std::string(4097, 'x')}, limits).ok());
    EXPECT_FALSE(choice_to_gbnf(std::vector<std::string>(257, "x"), limits).ok());
}

TEST(gbnf_shape_error, finds_what_the_parser_would_meet_unguarded) {
    EXPECT_EQ(gbnf_shape_error("root ::= \"a\" (b | c)\nb ::= [)(]\nc ::= \"(\" # (\n", limits), "");
    EXPECT_EQ(gbnf_shape_error("root::=x\nx ::= <[42]> | <|im_end|>", limits), "");
    EXPECT_NE(gbnf_shape_error("item ::= \"a\"", limits).find("no root rule"), std::string::npos);
    EXPECT_NE(gbnf_shape_error("root ::= \"a", limits).find("string opened at offset 9 is never closed"),
              std::string::npos);
    EXPECT_NE(gbnf_shape_error("root ::= [a", limits).find("character class"), std::string::npos);
    EXPECT_NE(gbnf_shape_error("root ::= (a", limits).find("never closed"), std::string::npos);
    EXPECT_NE(gbnf_shape_error("root ::= a)", limits).find("unbalanced ')'"), std::string::npos);
    EXPECT_NE(gbnf_shape_error(std::string("root ::= \"a\0\"", 13), limits).find("NUL"), std::string::npos);
    EXPECT_NE(gbnf_shape_error("root ::= " + std::string(33, '(') + "\"a\"" + std::string(33, ')'), limits)
                  .find("nest deeper than 32"),
              std::string::npos);
    EXPECT_NE(gbnf_shape_error(std::string(limits.max_grammar_bytes + 1, ' '), limits).find("the limit is"),
              std::string::npos);
}

namespace {

struct constraint_case {
    api_kind        kind;
    const char     *extra; // fields added to a valid body
    constraint_kind expect;
    const char     *param;   // the constraint's param when accepted, the error's when refused
    const char     *message; // substring of the error; nullptr = accepted
};

const constraint_case constraint_cases[] = {
    {api_kind::chat, R"("response_format":{"type":"text"})", constraint_kind::none, "response_format", nullptr},
    {api_kind::chat, R"("response_format":{"type":"json_object"})", constraint_kind::json_object, "response_format",
     nullptr},
    {api_kind::chat,
     R"("response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":{"type":"object"}}})",
     constraint_kind::json_schema, "response_format.json_schema.schema", nullptr},
    {api_kind::completion, R"("response_format":{"type":"json_object"})", constraint_kind::json_object,
     "response_format", nullptr},
    {api_kind::chat, R"("guided_json":{"type":"object"})", constraint_kind::json_schema, "guided_json", nullptr},
    {api_kind::chat, R"("guided_json":"{\"type\":\"array\"}")", constraint_kind::json_schema, "guided_json", nullptr},
    {api_kind::chat, R"("nvext":{"guided_json":{"type":"object"}})", constraint_kind::json_schema, "nvext.guided_json",
     nullptr},
    {api_kind::completion, R"("guided_regex":"[a-z]+")", constraint_kind::regex, "guided_regex", nullptr},
    {api_kind::chat, R"("nvext":{"guided_regex":"\\d"})", constraint_kind::regex, "nvext.guided_regex", nullptr},
    {api_kind::chat, R"("guided_choice":["a","b"])", constraint_kind::choice, "guided_choice", nullptr},
    {api_kind::chat, R"("nvext":{"guided_choice":["a"]})", constraint_kind::choice, "nvext.guided_choice", nullptr},
    {api_kind::chat, R"("guided_grammar":"root ::= \"x\"")", constraint_kind::grammar, "guided_grammar", nullptr},
    {api_kind::chat, R"("nvext":{"guided_grammar":"root ::= \"x\""})", constraint_kind::grammar, "nvext.guided_grammar",
     nullptr},
    {api_kind::chat, R"("guided_regex":null,"nvext":{})", constraint_kind::none, "", nullptr},
    // conflicts
    {api_kind::chat, R"("response_format":{"type":"json_object"},"guided_regex":"a")", constraint_kind::none,
     "guided_regex", "response_format and guided_regex both constrain the output"},
    {api_kind::chat, R"("guided_choice":["a"],"nvext":{"guided_choice":["b"]})", constraint_kind::none,
     "nvext.guided_choice", "guided_choice and nvext.guided_choice both constrain"},
    {api_kind::chat, R"("guided_json":{},"guided_grammar":"root ::= \"x\"")", constraint_kind::none, "guided_grammar",
     "guided_json and guided_grammar"},
    {api_kind::completion,
     R"("response_format":{"type":"json_schema","json_schema":{"schema":{}}},"nvext":{"guided_json":{}})",
     constraint_kind::none, "nvext.guided_json", "response_format and nvext.guided_json"},
    // shapes
    {api_kind::chat, R"("response_format":"json")", constraint_kind::none, "response_format", "must be an object"},
    {api_kind::chat, R"("response_format":{"type":"yaml"})", constraint_kind::none, "response_format.type",
     "got \"yaml\""},
    {api_kind::chat, R"("response_format":{"type":"json_schema"})", constraint_kind::none,
     "response_format.json_schema", "must be an object"},
    {api_kind::chat, R"("response_format":{"type":"json_schema","json_schema":{"name":"x"}})", constraint_kind::none,
     "response_format.json_schema.schema", "must be a JSON Schema object"},
    {api_kind::chat, R"("response_format":{"type":"json_schema","json_schema":{"strict":"yes","schema":{}}})",
     constraint_kind::none, "response_format.json_schema.strict", "must be a boolean"},
    {api_kind::chat, R"("guided_json":5)", constraint_kind::none, "guided_json", "must be a JSON Schema object"},
    {api_kind::chat, R"("guided_json":"{not json")", constraint_kind::none, "guided_json", "not a JSON object"},
    {api_kind::chat, R"("guided_choice":"a")", constraint_kind::none, "guided_choice", "array of strings"},
    {api_kind::chat, R"("guided_choice":[1])", constraint_kind::none, "guided_choice", "array of strings"},
    {api_kind::chat, R"("guided_choice":[])", constraint_kind::none, "guided_choice", "at least one choice"},
    {api_kind::chat, R"("guided_regex":5)", constraint_kind::none, "guided_regex", "must be a string"},
    {api_kind::chat, R"j("guided_regex":"(?=a)")j", constraint_kind::none, "guided_regex", "lookaround"},
    {api_kind::chat, R"("guided_grammar":"rule ::= \"x\"")", constraint_kind::none, "guided_grammar", "no root rule"},
    {api_kind::chat, R"("nvext":[])", constraint_kind::none, "nvext", "must be an object"},
    // schema bounds
    {api_kind::chat, R"("guided_json":{"type":"array","maxItems":5000})", constraint_kind::none, "guided_json",
     "maxItems 5000 at / exceeds the limit of 1000"},
    {api_kind::chat, R"("guided_json":{"properties":{"s":{"type":"string","minLength":1e9}}})", constraint_kind::none,
     "guided_json", "minLength 1000000000 at /properties/s exceeds"},
    {api_kind::chat, R"("guided_json":{"type":"string","pattern":"^a{2,50000}$"})", constraint_kind::none,
     "guided_json", "repetition count 50000"},
    {api_kind::chat, R"("guided_json":{"enum":[{"maxItems":99999}]})", constraint_kind::json_schema, "guided_json",
     nullptr}, // enum values are data
};

} // namespace

TEST(schema, output_constraints_forms_conflicts_and_limits) {
    api_limits lim;
    for (const auto &c : constraint_cases) {
        const std::string base =
            c.kind == api_kind::chat ? R"({"messages":[{"role":"user","content":"x"}],)" : R"({"prompt":"x",)";
        const std::string text = base + c.extra + "}";
        auto              body = parse_json_body(text, lim.max_json_depth);
        ASSERT_TRUE(body.ok()) << text;
        auto r = parse_request(c.kind, *body, lim);
        if (c.message == nullptr) {
            ASSERT_TRUE(r.ok()) << text << " -> " << r.err().message;
            EXPECT_EQ(r->constraint.kind, c.expect) << text;
            if (c.expect != constraint_kind::none) {
                EXPECT_EQ(r->constraint.param, c.param) << text;
                const bool json_kind =
                    c.expect == constraint_kind::json_schema || c.expect == constraint_kind::json_object;
                EXPECT_EQ(r->constraint.gbnf.empty(), json_kind) << text;
            }
            continue;
        }
        ASSERT_FALSE(r.ok()) << text;
        EXPECT_EQ(r.err().kind, error_kind::invalid_request);
        EXPECT_EQ(r.err().param, c.param) << text << " -> " << r.err().message;
        EXPECT_NE(r.err().message.find(c.message), std::string::npos) << text << " -> " << r.err().message;
    }
}

TEST(schema, schema_size_is_bounded) {
    api_limits lim;
    lim.guided.max_schema_bytes = 100;
    json body                   = {{"prompt", "x"}, {"guided_json", {{"description", std::string(200, 'd')}}}};
    auto r                      = parse_request(api_kind::completion, body, lim);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().param, "guided_json");
    EXPECT_NE(r.err().message.find("the limit is 100"), std::string::npos);
}

namespace {

const char *const tools_json =
    R"("tools":[{"type":"function","function":{"name":"get_weather","description":"d","parameters":{"type":"object",)"
    R"("properties":{"city":{"type":"string"}},"required":["city"]}}},{"type":"function","function":{"name":"noop"}}])";

result<api_request> chat_with(const std::string &extra) {
    api_limits lim;
    auto       body = parse_json_body(R"({"messages":[{"role":"user","content":"x"}],)" + extra + "}", 64);
    EXPECT_TRUE(body.ok()) << extra;
    return parse_request(api_kind::chat, *body, lim);
}

} // namespace

TEST(schema, tools_and_tool_choice) {
    auto r = chat_with(tools_json);
    ASSERT_TRUE(r.ok()) << r.err().message;
    ASSERT_EQ(r->tools.size(), 2u);
    EXPECT_EQ(r->tools[0].name, "get_weather");
    EXPECT_EQ(json::parse(r->tools[0].parameters)["required"][0], "city");
    EXPECT_EQ(r->tools[1].parameters, "");
    EXPECT_EQ(r->choice, tool_choice::automatic);
    EXPECT_TRUE(r->parallel_tool_calls);
    EXPECT_TRUE(r->tools_active());

    r = chat_with(std::string(tools_json) + R"(,"tool_choice":"none","parallel_tool_calls":false)");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->choice, tool_choice::none);
    EXPECT_FALSE(r->tools_active());
    EXPECT_FALSE(r->parallel_tool_calls);

    r = chat_with(std::string(tools_json) + R"(,"tool_choice":"required")");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->choice, tool_choice::required);

    // A named function leaves only that tool, required.
    r = chat_with(std::string(tools_json) + R"(,"tool_choice":{"type":"function","function":{"name":"noop"}})");
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->tools.size(), 1u);
    EXPECT_EQ(r->tools[0].name, "noop");
    EXPECT_EQ(r->choice, tool_choice::required);

    // tool_choice none with a constraint is fine: no tools in play.
    r = chat_with(std::string(tools_json) + R"(,"tool_choice":"none","guided_regex":"a")");
    ASSERT_TRUE(r.ok());
}

TEST(schema, tool_messages_in_the_conversation) {
    api_limits lim;
    auto       body = parse_json_body(
              R"({"messages":[{"role":"user","content":"w?"},{"role":"assistant","content":null,"tool_calls":[)"
                    R"({"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},)"
                    R"({"role":"tool","tool_call_id":"c1","content":"sunny"}]})",
              64);
    ASSERT_TRUE(body.ok());
    auto r = parse_request(api_kind::chat, *body, lim);
    ASSERT_TRUE(r.ok()) << r.err().message;
    ASSERT_EQ(r->messages.size(), 3u);
    ASSERT_EQ(r->messages[1].tool_calls.size(), 1u);
    EXPECT_EQ(r->messages[1].tool_calls[0].id, "c1");
    EXPECT_EQ(r->messages[1].tool_calls[0].name, "get_weather");
    EXPECT_EQ(r->messages[1].tool_calls[0].arguments, R"({"city":"Oslo"})");
    EXPECT_EQ(r->messages[2].role, "tool");
    EXPECT_EQ(r->messages[2].tool_call_id, "c1");
    EXPECT_EQ(r->messages[2].content, "sunny");
}

TEST(schema, tool_errors_name_the_param) {
    const std::string t = tools_json;
    const struct {
        std::string extra;
        const char *param;
        const char *message;
    } cases[] = {
        {R"("tools":{})", "tools", "must be an array"},
        {R"("tools":[{"type":"retrieval"}])", "tools[0].type", "type \"function\""},
        {R"("tools":[{"type":"function"}])", "tools[0].function", "must be an object"},
        {R"("tools":[{"type":"function","function":{"name":"bad name"}}])", "tools[0].function.name", "1 to 64"},
        {R"("tools":[{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"a"}}])",
         "tools[1].function.name", "two functions named \"a\""},
        {R"("tools":[{"type":"function","function":{"name":"a","parameters":[]}}])", "tools[0].function.parameters",
         "JSON Schema object"},
        {R"("tools":[{"type":"function","function":{"name":"a","parameters":{"type":"array","maxItems":5000}}}])",
         "tools[0].function.parameters", "maxItems 5000"},
        {t + R"(,"tool_choice":"sometimes")", "tool_choice", "got \"sometimes\""},
        {R"("tool_choice":"required")", "tool_choice", "needs tools"},
        {t + R"(,"tool_choice":{"type":"function","function":{"name":"missing"}})", "tool_choice.function.name",
         "not among tools"},
        {t + R"(,"tool_choice":{"type":"function"})", "tool_choice", "must be"},
        {t + R"(,"parallel_tool_calls":"yes")", "parallel_tool_calls", "must be a boolean"},
        {t + R"(,"response_format":{"type":"json_object"})", "response_format", "cannot be combined with tools"},
        {t + R"(,"nvext":{"guided_regex":"a"})", "nvext.guided_regex", "cannot be combined with tools"},
    };
    for (const auto &c : cases) {
        auto r = chat_with(c.extra);
        ASSERT_FALSE(r.ok()) << c.extra;
        EXPECT_EQ(r.err().param, c.param) << c.extra << " -> " << r.err().message;
        EXPECT_NE(r.err().message.find(c.message), std::string::npos) << c.extra << " -> " << r.err().message;
    }
    api_limits  lim;
    const char *bad_messages[][2] = {
        {R"({"messages":[{"role":"tool","content":"x"}]})", "messages[0].tool_call_id"},
        {R"({"messages":[{"role":"user","content":"x","tool_calls":[]}]})", "messages[0].tool_calls"},
        {R"({"messages":[{"role":"assistant","tool_calls":[{"id":"a"}]}]})", "messages[0].tool_calls[0]"},
        {R"({"messages":[{"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":{}}}]}]})",
         "messages[0].tool_calls[0].function"},
    };
    for (const auto &m : bad_messages) {
        auto body = parse_json_body(m[0], 64);
        ASSERT_TRUE(body.ok());
        auto r = parse_request(api_kind::chat, *body, lim);
        ASSERT_FALSE(r.ok()) << m[0];
        EXPECT_EQ(r.err().param, m[1]) << m[0] << " -> " << r.err().message;
    }
}

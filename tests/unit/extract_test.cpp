// Extraction (agent/extract.h): the input an extraction reads (text and the caller's files, with
// their bounds), the `extract` tool of /v1/responses (parsing, and a call on a scripted model:
// the generation runs under the schema and its JSON comes back), and a team member declared with
// a schema (`member.M.schema`: parsing, bounds, and its answer generated under the schema).
#include "agent/extract.h"
#include "agent/team.h"
#include "api/responses.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <deque>
#include <mutex>
#include <thread>

namespace inferbox {
namespace {

using json = nlohmann::json;

// The caller's files: two of them; anything else is not_found (as another key's file is).
file_text_source two_files() {
    return [](const std::string &id, size_t max_bytes) -> result<file_text> {
        std::string name, text;
        if (id == "file-aaaaaaaaaaaaaaaaaaaaaaaa") {
            name = "a.txt";
            text = "Alice is 31.";
        } else if (id == "file-bbbbbbbbbbbbbbbbbbbbbbbb") {
            name = "big.txt";
            text = std::string(5000, 'x');
        } else {
            return error{error_kind::not_found, "No such file: '" + id + "'", "file_id", "file_not_found"};
        }
        if (text.size() > max_bytes) {
            return error::invalid("the file's text is over the limit of " + std::to_string(max_bytes) + " bytes", "",
                                  "text_too_large");
        }
        return file_text{name, text};
    };
}

TEST(extraction_input_test, TextThenEachFileUnderALineNamingIt) {
    auto in = extraction_input("Who is it?", {"file-aaaaaaaaaaaaaaaaaaaaaaaa"}, two_files());
    ASSERT_TRUE(in) << in.err().message;
    EXPECT_EQ(*in, "Who is it?\n\nFile a.txt (file-aaaaaaaaaaaaaaaaaaaaaaaa):\nAlice is 31.");
    auto only_file = extraction_input("", {"file-aaaaaaaaaaaaaaaaaaaaaaaa"}, two_files());
    ASSERT_TRUE(only_file);
    EXPECT_EQ(*only_file, "File a.txt (file-aaaaaaaaaaaaaaaaaaaaaaaa):\nAlice is 31.");
    auto only_text = extraction_input("plain", {}, {});
    ASSERT_TRUE(only_text);
    EXPECT_EQ(*only_text, "plain");
}

TEST(extraction_input_test, ErrorsNameTheArgumentTheFileAndTheLimit) {
    auto none = extraction_input("", {}, two_files());
    ASSERT_FALSE(none);
    EXPECT_NE(none.err().message.find("neither text nor file_ids"), std::string::npos);

    auto unknown =
        extraction_input("x", {"file-aaaaaaaaaaaaaaaaaaaaaaaa", "file-cccccccccccccccccccccccc"}, two_files());
    ASSERT_FALSE(unknown);
    EXPECT_EQ(unknown.err().kind, error_kind::not_found);
    EXPECT_EQ(unknown.err().param, "file_ids[1]");
    EXPECT_NE(unknown.err().message.find("file_ids[1]: the file 'file-cccccccccccccccccccccccc'"), std::string::npos)
        << unknown.err().message;

    // 5000 bytes of text do not fit in 1000: the source is asked for at most what is left.
    auto big = extraction_input("x", {"file-bbbbbbbbbbbbbbbbbbbbbbbb"}, two_files(), 1000);
    ASSERT_FALSE(big);
    EXPECT_EQ(big.err().param, "file_ids[0]");
    EXPECT_NE(big.err().message.find("file-bbbbbbbbbbbbbbbbbbbbbbbb"), std::string::npos) << big.err().message;
    EXPECT_NE(big.err().message.find("limit of 992 bytes"), std::string::npos) << big.err().message;

    auto long_text = extraction_input(std::string(2000, 'y'), {}, two_files(), 1000);
    ASSERT_FALSE(long_text);
    EXPECT_EQ(long_text.err().param, "text");
    EXPECT_NE(long_text.err().message.find("at most 1000 bytes"), std::string::npos) << long_text.err().message;

    auto twice = extraction_input("x", {"file-aaaaaaaaaaaaaaaaaaaaaaaa", "file-aaaaaaaaaaaaaaaaaaaaaaaa"}, two_files());
    ASSERT_FALSE(twice);
    EXPECT_NE(twice.err().message.find("named twice"), std::string::npos);

    auto many = extraction_input("x", std::vector<std::string>(max_extract_files + 1, "f"), two_files());
    ASSERT_FALSE(many);
    EXPECT_NE(many.err().message.find("the limit is " + std::to_string(max_extract_files)), std::string::npos);

    auto off = extraction_input("x", {"file-aaaaaaaaaaaaaaaaaaaaaaaa"}, {});
    ASSERT_FALSE(off);
    EXPECT_NE(off.err().message.find("Files API is off"), std::string::npos);
}

// --- the `extract` tool in a Responses request ---

result<responses_request> parse(const std::string &body) {
    key_order order;
    auto      j = parse_json_body(body, 64, &order);
    EXPECT_TRUE(j) << body;
    return parse_responses_request(*j, api_limits{}, &order);
}

TEST(extract_tool_parse_test, ReadsTheToolKeepingTheSchemasOrder) {
    auto r = parse(R"({"input": "x", "tool_choice": {"type": "extract"}, "tools": [{"type": "extract",
        "name": "person", "model": "small", "instructions": "Read it.", "file_ids": ["file-1"],
        "max_output_tokens": 64, "description": "People",
        "schema": {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}}]})");
    ASSERT_TRUE(r) << r.err().message;
    ASSERT_EQ(r->chat.builtin_tools.size(), 1u);
    const auto &t = r->chat.builtin_tools[0];
    EXPECT_EQ(t.type, "extract");
    EXPECT_EQ(t.name, "person");
    EXPECT_EQ(t.server, "small");
    EXPECT_EQ(t.instructions, "Read it.");
    EXPECT_EQ(t.description, "People");
    EXPECT_EQ(t.allowed, std::vector<std::string>{"file-1"});
    EXPECT_EQ(t.max_output_tokens, 64);
    EXPECT_EQ(t.schema, R"({"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"}}})");
    EXPECT_EQ(r->chat.builtin_choice, "extract");

    auto named = parse(R"({"input": "x", "tool_choice": {"type": "extract", "name": "person"},
        "tools": [{"type": "extract", "name": "person", "schema": {"type": "object"}}]})");
    ASSERT_TRUE(named) << named.err().message;
    EXPECT_EQ(named->chat.builtin_choice, "extract=person");
    for (const char *bad : {R"(5)", R"("")", R"(["person"])"}) {
        auto refused = parse(std::string(R"({"input": "x", "tool_choice": {"type": "extract", "name": )") + bad +
                             R"(}, "tools": [{"type": "extract", "schema": {"type": "object"}}]})");
        ASSERT_FALSE(refused) << bad;
        EXPECT_EQ(refused.err().param, "tool_choice.name") << bad;
    }

    auto plain = parse(R"({"input": "x", "tools": [{"type": "extract", "schema": {"type": "object"}}]})");
    ASSERT_TRUE(plain) << plain.err().message;
    EXPECT_EQ(plain->chat.builtin_tools[0].name, "extract");
    EXPECT_EQ(plain->chat.builtin_tools[0].server, "");
    EXPECT_EQ(plain->chat.builtin_tools[0].max_output_tokens, 512);
}

TEST(extract_tool_parse_test, BadToolsAreRefusedNamingTheFieldAndTheLimit) {
    const std::string big_schema = R"({"type": "object", "description": ")" + std::string(70'000, 'd') + R"("})";
    const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
        {R"({"type": "extract"})", "tools[0].schema", "must be a JSON Schema object"},
        {R"({"type": "extract", "schema": "{}"})", "tools[0].schema", "must be a JSON Schema object"},
        {R"({"type": "extract", "schema": {}, "url": "http://x"})", "tools[0].url", "not a field of an extract tool"},
        {R"({"type": "extract", "schema": {}, "path": "/etc"})", "tools[0].path", "not a field of an extract tool"},
        {R"({"type": "extract", "schema": {}, "name": "a b"})", "tools[0].name", "letters, digits"},
        {R"({"type": "extract", "schema": {}, "name": ""})", "tools[0].name", "1 to 64 bytes"},
        {R"({"type": "extract", "schema": {}, "model": 3})", "tools[0].model", "1 to 256 bytes"},
        {R"({"type": "extract", "schema": {}, "file_ids": ["a", "b", "c", "d", "e"]})", "tools[0].file_ids",
         "1 to 4 file ids"},
        {R"({"type": "extract", "schema": {}, "file_ids": ["a", "a"]})", "tools[0].file_ids", "twice"},
        {R"({"type": "extract", "schema": {}, "max_output_tokens": 5000})", "tools[0].max_output_tokens",
         "from 1 to 4096"},
        {R"({"type": "extract", "schema": {"type": "string", "maxLength": 100000}})", "tools[0].schema",
         "exceeds the limit of 1000"},
        {R"({"type": "extract", "schema": )" + big_schema + "}", "tools[0].schema", "the limit is 65536"},
    };
    for (const auto &[tool, param, want] : cases) {
        auto r = parse(R"({"input": "x", "tools": [)" + tool + "]}");
        ASSERT_FALSE(r) << tool.substr(0, 200);
        EXPECT_EQ(r.err().param, param) << tool.substr(0, 200);
        EXPECT_NE(r.err().message.find(want), std::string::npos) << r.err().message.substr(0, 300);
    }
}

// --- the tool's call on a scripted model ---

// A model that answers every submit at once with `answer` (or an error, or a cut-off answer) and
// records what it was asked.
class scripted_model final : public generation_backend {
  public:
    std::optional<error>    check(const api_request    &/*req*/) const override { return std::nullopt; }
    std::optional<error>    over_capacity(int32_t /*n*/) const override { return std::nullopt; }
    result<backend_request> prepare(api_request req) const override {
        std::lock_guard lock(mu);
        prepared.push_back(req);
        backend_request r;
        r.req = std::move(req);
        r.prompts.push_back({{1, 2, 3}, ""});
        return r;
    }
    result<std::shared_ptr<generation_stream>> submit(std::shared_ptr<const backend_request> /*req*/,
                                                      std::function<void()> notify) override {
        auto          s = std::make_shared<answered>();
        backend_event fin;
        {
            std::lock_guard lock(mu);
            fin.content = answers.empty() ? std::string("{}") : answers.front();
            if (!answers.empty()) {
                answers.pop_front();
            }
        }
        fin.finish      = cut_off ? finish_reason::length : finish_reason::stop;
        fin.n_prompt    = 11;
        fin.n_generated = 4;
        fin.message     = chat_output{fin.content, {}};
        s->events.push_back(std::move(fin));
        notify();
        return std::shared_ptr<generation_stream>(s);
    }
    bool healthy() const override { return true; }

    struct answered final : generation_stream {
        std::vector<backend_event> events;
        std::vector<backend_event> take() override { return std::exchange(events, {}); }
        void                       cancel() override {}
    };

    mutable std::mutex               mu;
    mutable std::vector<api_request> prepared;
    std::deque<std::string>          answers;
    bool                             cut_off = false;
};

struct extract_fixture : ::testing::Test {
    void TearDown() override {
        for (auto &t : threads) {
            t.join();
        }
    }

    backend_resolver resolver() {
        return [this](const std::string &m) -> result<member_backend> {
            if (m != "small") {
                return error{error_kind::not_found, "the model '" + m + "' is not served here", "model", ""};
            }
            return member_backend{model, nullptr, "local"};
        };
    }

    std::shared_ptr<builtin_tool> tool(std::vector<std::string> files = {}) {
        extract_spec spec;
        spec.name         = "person";
        spec.model        = "small";
        spec.schema       = R"({"type":"object","properties":{"name":{"type":"string"}},"required":["name"]})";
        spec.schema_param = "tools[0].schema";
        spec.file_ids     = std::move(files);
        spec.max_tokens   = 32;
        return make_extract_tool(std::move(spec), {resolver(), two_files()});
    }

    std::shared_ptr<scripted_model> model = std::make_shared<scripted_model>();
    std::deque<std::thread>         threads;
};

TEST_F(extract_fixture, TheFunctionOffersTextAndOnlyTheToolsFiles) {
    auto plain = json::parse(tool()->function().parameters);
    EXPECT_EQ(plain["properties"]["text"]["maxLength"], max_extract_text_chars);
    EXPECT_FALSE(plain["properties"].contains("file_ids"));
    EXPECT_EQ(plain["required"], json::array({"text"}));

    auto with_files = tool({"file-aaaaaaaaaaaaaaaaaaaaaaaa"});
    auto p          = json::parse(with_files->function().parameters);
    EXPECT_EQ(p["properties"]["file_ids"]["items"]["enum"], json::array({"file-aaaaaaaaaaaaaaaaaaaaaaaa"}));
    EXPECT_EQ(p["required"], json::array({"file_ids"}));
    EXPECT_EQ(with_files->function().name, "person");
    EXPECT_EQ(with_files->kind(), "extract");
    EXPECT_EQ(with_files->item_type(), "extract_call");
}

TEST_F(extract_fixture, ACallRunsOneGenerationUnderTheSchemaAndReturnsItsJson) {
    model->answers = {R"({"name": "Alice"})"};
    auto t         = tool({"file-aaaaaaaaaaaaaaaaaaaaaaaa"});
    auto out       = dynamic_cast<const supervised_tool &>(*t).run_supervised(
              R"({"text": "Who?", "file_ids": ["file-aaaaaaaaaaaaaaaaaaaaaaaa"]})",
              {"extract_1", std::make_shared<cancel_signal>(), [](const server_tool_call &) {}});
    EXPECT_EQ(out.result.error, "");
    EXPECT_EQ(out.result.output, R"({"name": "Alice"})");
    ASSERT_EQ(model->prepared.size(), 1u);
    const auto &req = model->prepared[0];
    EXPECT_EQ(req.model, "small");
    EXPECT_EQ(req.constraint.kind, constraint_kind::json_schema);
    EXPECT_EQ(req.constraint.param, "tools[0].schema");
    EXPECT_EQ(req.constraint.schema,
              R"({"type":"object","properties":{"name":{"type":"string"}},"required":["name"]})");
    EXPECT_EQ(req.max_tokens, 32);
    EXPECT_EQ(req.sampling.temperature, 0.0f);
    ASSERT_EQ(req.messages.size(), 2u);
    EXPECT_EQ(req.messages[0].role, "system");
    EXPECT_EQ(req.messages[1].content, "Who?\n\nFile a.txt (file-aaaaaaaaaaaaaaaaaaaaaaaa):\nAlice is 31.");

    server_tool_call c{"extract_1",           "extract_call",    "person", out.item_server,
                       R"({"text": "Who?"})", out.result.output, ""};
    auto             item = extract_call_item(c);
    EXPECT_EQ(item["type"], "extract_call");
    EXPECT_EQ(item["status"], "completed");
    EXPECT_EQ(item["model"], "small");
    EXPECT_EQ(item["output"], R"({"name": "Alice"})");
    EXPECT_EQ(item["error"], nullptr);
    EXPECT_EQ(item["usage"], json({{"input_tokens", 11}, {"output_tokens", 4}}));
    EXPECT_TRUE(item["duration_ms"].is_number_integer());
}

TEST_F(extract_fixture, FailuresAreToolErrorsTheModelReads) {
    const auto run = [&](const std::shared_ptr<builtin_tool> &t, const std::string &args) { return t->run(args); };
    // A file the tool was not given (the grammar holds the model to them; checked again).
    auto other = run(tool({"file-aaaaaaaaaaaaaaaaaaaaaaaa"}), R"({"file_ids": ["file-cccccccccccccccccccccccc"]})");
    EXPECT_NE(other.error.find("not one of this tool's files"), std::string::npos) << other.error;
    EXPECT_TRUE(model->prepared.empty());

    auto nothing = run(tool(), "{}");
    EXPECT_NE(nothing.error.find("neither text nor file_ids"), std::string::npos) << nothing.error;

    model->answers = {"not json"};
    auto bad       = run(tool(), R"({"text": "x"})");
    EXPECT_NE(bad.error.find("not JSON"), std::string::npos) << bad.error;

    model->cut_off = true;
    auto cut       = run(tool(), R"({"text": "x"})");
    EXPECT_NE(cut.error.find("max_output_tokens (32)"), std::string::npos) << cut.error;
    EXPECT_EQ(cut.output, "");

    extract_spec spec;
    spec.model   = "huge";
    spec.schema  = "{}";
    auto unknown = make_extract_tool(spec, {resolver(), {}})->run(R"({"text": "x"})");
    EXPECT_NE(unknown.error.find("the model 'huge' cannot run this extraction"), std::string::npos) << unknown.error;

    auto signal = std::make_shared<cancel_signal>();
    signal->cancel();
    auto cancelled = dynamic_cast<const supervised_tool &>(*tool()).run_supervised(
        R"({"text": "x"})", {"extract_2", signal, [](const server_tool_call &) {}});
    EXPECT_NE(cancelled.result.error.find("cancelled"), std::string::npos);
}

// --- a team member with a schema ---

TEST(team_schema_test, TheEntryTakesABoundedSchemaAndGivesItBack) {
    auto t = parse_team_spec(
        R"(crew=big;member.reader=small;member.reader.schema={"type":"object","properties":{"z":{"enum":["a\;b"]},"a":{"type":"integer"}}})");
    ASSERT_TRUE(t) << t.err().message;
    EXPECT_EQ(t->members[0].schema, R"({"type":"object","properties":{"z":{"enum":["a;b"]},"a":{"type":"integer"}}})");
    auto again = parse_team_spec(format_team_spec(*t));
    ASSERT_TRUE(again) << again.err().message;
    EXPECT_EQ(again->members[0].schema, t->members[0].schema);

    const std::vector<std::pair<std::string, std::string>> cases = {
        {"member.reader.schema=not json", "member.reader.schema is a string but not a JSON object"},
        {"member.reader.schema=[1]",
         "member.reader.schema is a string but not a JSON object: the request body must be a JSON object"},
        {R"(member.reader.schema={"type":"object","description":")" + std::string(70'000, 'd') + "\"}",
         "member.reader.schema is 70"},
        {R"(member.reader.schema={"type":"array","maxItems":5000})",
         "member.reader.schema: maxItems 5000 at / exceeds the limit of 1000"},
    };
    for (const auto &[entry, want] : cases) {
        auto bad = parse_team_spec("crew=big;member.reader=small;" + entry);
        ASSERT_FALSE(bad) << entry.substr(0, 100);
        EXPECT_NE(bad.err().message.find("team 'crew': " + want), std::string::npos)
            << bad.err().message.substr(0, 300);
    }
    auto size = parse_team_spec("crew=big;member.reader=small;" + cases[2].first);
    ASSERT_FALSE(size);
    EXPECT_NE(size.err().message.find("the limit is 65536"), std::string::npos);
}

TEST_F(extract_fixture, AMemberWithASchemaAnswersUnderItAndReadsTheCallersFiles) {
    team_member_spec m;
    m.name   = "reader";
    m.model  = "small";
    m.schema = R"({"type":"object","properties":{"age":{"type":"integer"}}})";
    team_runtime rt;
    rt.resolve = resolver();
    rt.files   = two_files();
    rt.post    = [this](std::function<void()> t) { threads.emplace_back(std::move(t)); };
    auto tool  = make_team_member_tool("crew", m, {}, rt);

    auto params = json::parse(tool->function().parameters);
    EXPECT_EQ(params["required"], json::array({"task"}));
    EXPECT_EQ(params["properties"]["file_ids"]["maxItems"], max_extract_files);

    model->answers = {R"({"age": 31})"};
    auto out       = tool->run(R"({"task": "How old?", "file_ids": ["file-aaaaaaaaaaaaaaaaaaaaaaaa"]})");
    EXPECT_EQ(out.error, "");
    EXPECT_EQ(out.output, R"({"age": 31})");
    ASSERT_EQ(model->prepared.size(), 1u);
    const auto &req = model->prepared[0];
    EXPECT_EQ(req.constraint.kind, constraint_kind::json_schema);
    EXPECT_EQ(req.constraint.param, "member.reader.schema");
    EXPECT_EQ(req.constraint.schema, m.schema);
    EXPECT_EQ(req.messages.back().content, "How old?\n\nFile a.txt (file-aaaaaaaaaaaaaaaaaaaaaaaa):\nAlice is 31.");

    // Another key's file is as unknown as a missing one: a tool error naming it.
    auto missing = tool->run(R"({"task": "x", "file_ids": ["file-cccccccccccccccccccccccc"]})");
    EXPECT_NE(missing.error.find("file_ids[0]: the file 'file-cccccccccccccccccccccccc'"), std::string::npos)
        << missing.error;

    // A member without a schema takes no files and answers in text.
    team_member_spec plain;
    plain.name  = "writer";
    plain.model = "small";
    auto p2     = json::parse(make_team_member_tool("crew", plain, {}, rt)->function().parameters);
    EXPECT_FALSE(p2["properties"].contains("file_ids"));
}

// A tool of a member's own, which the scripted model never calls.
class idle_tool final : public builtin_tool {
  public:
    tool_function function() const override { return {"lookup", "Looks up", R"({"type":"object"})"}; }
    std::string   kind() const override { return "mcp"; }
    std::string   server() const override { return "idle"; }
    std::string   item_type() const override { return "mcp_call"; }
    tool_outcome  run(const std::string  &/*arguments_json*/) const override { return {"", "unused"}; }
};

TEST_F(extract_fixture, AMemberWithToolsAndASchemaWritesItsAnswerAsJsonAfterwards) {
    team_member_spec m;
    m.name              = "reader";
    m.model             = "small";
    m.instructions      = "You read.";
    m.schema            = R"({"type":"object","properties":{"age":{"type":"integer"}}})";
    m.budget.max_tokens = 100;
    team_runtime rt;
    rt.resolve = resolver();
    rt.post    = [this](std::function<void()> t) { threads.emplace_back(std::move(t)); };
    builtin_toolbox own;
    own.tools.push_back(std::make_shared<idle_tool>());
    auto tool = make_team_member_tool("crew", m, own, rt);

    model->answers = {"She is 31.", R"({"age": 31})"};
    auto out       = tool->run(R"({"task": "How old?"})");
    EXPECT_EQ(out.error, "");
    EXPECT_EQ(out.output, R"({"age": 31})");
    ASSERT_EQ(model->prepared.size(), 2u);
    // Its steps offer its tools, free of the schema; then one generation under the schema, with
    // what it has left of its tokens, reads its answer.
    EXPECT_EQ(model->prepared[0].constraint.kind, constraint_kind::none);
    const auto &shape = model->prepared[1];
    EXPECT_EQ(shape.constraint.kind, constraint_kind::json_schema);
    EXPECT_EQ(shape.constraint.schema, m.schema);
    EXPECT_EQ(shape.max_tokens, 100 - 4);
    ASSERT_EQ(shape.messages.size(), 4u);
    EXPECT_EQ(shape.messages[0].content, "You read.");
    EXPECT_EQ(shape.messages[1].content, "How old?");
    EXPECT_EQ(shape.messages[2].role, "assistant");
    EXPECT_EQ(shape.messages[2].content, "She is 31.");

    // Nothing left of its tokens: a budget error the captain reads.
    model->answers      = {"She is 31."};
    m.budget.max_tokens = 4;
    auto spent          = make_team_member_tool("crew", m, own, rt)->run(R"({"task": "How old?"})");
    EXPECT_NE(spent.error.find("before it wrote its answer as JSON"), std::string::npos) << spent.error;
}

} // namespace
} // namespace inferbox

// The server-side tool loop (agent/tool_loop.h), driven by a scripted backend that stands for the
// model: each step's events are scripted, the `sql` tool runs on a real SQLite file, and the test
// runs the loop's posted work itself, so every interleaving it checks is deterministic.
#include "agent/tool_loop.h"
#include "tools/sql_database.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <deque>
#include <filesystem>
#include <mutex>

namespace inferbox {
namespace {

namespace fs = std::filesystem;
using json   = nlohmann::json;

class step_stream final : public generation_stream {
  public:
    explicit step_stream(std::vector<backend_event> evs) : pending_(std::move(evs)) {}
    std::vector<backend_event> take() override {
        std::lock_guard lock(mu_);
        return std::exchange(pending_, {});
    }
    void cancel() override { ++cancels; }
    int  cancels = 0;

  private:
    std::mutex                 mu_;
    std::vector<backend_event> pending_;
};

// Each submit() plays the next scripted step; every prepare() is recorded.
class scripted_model final : public generation_backend {
  public:
    std::optional<error>    check(const api_request    &/*req*/) const override { return std::nullopt; }
    std::optional<error>    over_capacity(int32_t /*n*/) const override { return std::nullopt; }
    result<backend_request> prepare(api_request req) const override {
        prepared.push_back(req);
        if (prepared.size() == refuse_prepare_at) {
            return error::invalid("the prompt has 5000 tokens", "max_tokens", "context_length_exceeded");
        }
        backend_request r;
        r.req = std::move(req);
        r.prompts.push_back({{1, 2, 3}, ""});
        r.tools = true;
        return r;
    }
    result<std::shared_ptr<generation_stream>> submit(std::shared_ptr<const backend_request> /*req*/,
                                                      std::function<void()> notify) override {
        if (steps.empty()) {
            return error{error_kind::internal, "the script has no more steps", "", ""};
        }
        auto s = std::make_shared<step_stream>(std::move(steps.front()));
        steps.pop_front();
        streams.push_back(s);
        notify();
        return std::shared_ptr<generation_stream>(s);
    }
    bool healthy() const override { return true; }

    std::deque<std::vector<backend_event>>    steps;
    size_t                                    refuse_prepare_at = 0; // the Nth prepare() fails (1-based)
    mutable std::vector<api_request>          prepared;
    std::vector<std::shared_ptr<step_stream>> streams;
};

std::vector<backend_event> call_step(const std::string &id, const std::string &name, const std::string &args) {
    backend_event delta;
    delta.calls.push_back({0, true, id, name, ""});
    backend_event fin;
    fin.finish      = finish_reason::stop;
    fin.n_prompt    = 10;
    fin.n_cached    = 2;
    fin.n_generated = 5;
    fin.message     = chat_output{"", {{id, name, args}}};
    fin.calls.push_back({0, false, "", "", args});
    return {delta, fin};
}

std::vector<backend_event> answer_step(const std::string &text) {
    backend_event d;
    d.content = text;
    backend_event fin;
    fin.finish      = finish_reason::stop;
    fin.n_prompt    = 20;
    fin.n_cached    = 10;
    fin.n_generated = 3;
    fin.message     = chat_output{text, {}};
    return {d, fin};
}

struct tool_loop_fixture : ::testing::Test {
    void SetUp() override {
        dir = fs::temp_directory_path() /
              ("inferbox-loop-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
        fs::remove_all(dir);
        fs::create_directories(dir);
        const auto path = (dir / "shop.db").string();
        sqlite3   *db   = nullptr;
        ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
        ASSERT_EQ(sqlite3_exec(db,
                               "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT);"
                               "INSERT INTO items(name) VALUES ('apple'), ('pear'), ('plum');",
                               nullptr, nullptr, nullptr),
                  SQLITE_OK);
        sqlite3_close(db);
        auto opened = sql_database::open("shop", path);
        ASSERT_TRUE(opened) << opened.err().message;
        shop = *opened;
    }
    void TearDown() override { fs::remove_all(dir); }

    std::shared_ptr<tool_loop_backend> loop() {
        builtin_toolbox box;
        box.tools.push_back(make_sql_tool(shop, "sql"));
        tool_loop_limits limits;
        limits.on_step = [this](double s) { step_overheads.push_back(s); };
        limits.on_call = [this](const server_tool_call &c, double s) {
            EXPECT_GE(s, 0.0);
            timed_calls.push_back(c.name);
        };
        return std::make_shared<tool_loop_backend>(
            model, box, [this](std::function<void()> t) { tasks.push_back(std::move(t)); }, limits);
    }
    api_request request(const std::string &choice = "sql") const {
        api_request r;
        r.kind           = api_kind::chat;
        r.messages       = {{"user", "How many items?", {}, ""}};
        r.builtin_tools  = {{"sql", "shop", {}}};
        r.builtin_choice = choice;
        return r;
    }
    // Runs the posted work until none is left; returns how many tasks ran.
    int run_tasks() {
        int n = 0;
        while (!tasks.empty()) {
            auto t = std::move(tasks.front());
            tasks.pop_front();
            t();
            ++n;
        }
        return n;
    }
    std::shared_ptr<generation_stream> start(tool_loop_backend &l, api_request req) {
        auto p = l.prepare(std::move(req));
        EXPECT_TRUE(p) << p.err().message;
        auto s = l.submit(std::make_shared<const backend_request>(std::move(*p)), [this] { ++notified; });
        EXPECT_TRUE(s) << s.err().message;
        return *s;
    }
    // Takes and runs posted work until the stream's last event (or a step limit).
    std::vector<backend_event> drain(generation_stream &s) {
        std::vector<backend_event> all;
        for (int i = 0; i < 50; ++i) {
            for (auto &ev : s.take()) {
                all.push_back(std::move(ev));
            }
            if (!all.empty() && (all.back().finish != finish_reason::none || all.back().err)) {
                break;
            }
            run_tasks();
        }
        return all;
    }

    fs::path                          dir;
    std::shared_ptr<sql_database>     shop;
    std::shared_ptr<scripted_model>   model = std::make_shared<scripted_model>();
    std::deque<std::function<void()>> tasks;
    int                               notified = 0;
    std::vector<double>               step_overheads;
    std::vector<std::string>          timed_calls;
};

TEST_F(tool_loop_fixture, TheFirstStepOffersTheToolUnderItsGrammarAndTheChoice) {
    auto l = loop();
    model->steps.push_back(answer_step("hi"));
    auto s = start(*l, request("sql"));
    ASSERT_EQ(model->prepared.size(), 1u);
    const auto &step = model->prepared[0];
    ASSERT_EQ(step.tools.size(), 1u);
    EXPECT_EQ(step.tools[0].name, "sql");
    EXPECT_EQ(step.choice, tool_choice::required);
    EXPECT_FALSE(step.parallel_tool_calls);
    const auto params = json::parse(step.tools[0].parameters);
    EXPECT_EQ(params["properties"]["query"]["pattern"], shop->query_pattern());
    EXPECT_NE(step.tools[0].description.find("items(id INTEGER e.g. 1|2|3, name TEXT e.g. apple|pear|plum) 3 rows"),
              std::string::npos);
}

TEST_F(tool_loop_fixture, ACallRunsOnTheServerAndItsRowsFeedTheNextStep) {
    auto l = loop();
    model->steps.push_back(call_step("c1", "sql", R"({"query": "SELECT name FROM items ORDER BY name"})"));
    model->steps.push_back(answer_step("three"));
    auto s   = start(*l, request("sql"));
    auto evs = drain(*s);
    ASSERT_FALSE(evs.empty());
    // The built-in call never reaches the client as a call to make: no call deltas at all.
    std::vector<server_tool_call> ran;
    std::string                   text;
    for (const auto &ev : evs) {
        EXPECT_TRUE(ev.calls.empty());
        ran.insert(ran.end(), ev.server_calls.begin(), ev.server_calls.end());
        text += ev.content;
    }
    ASSERT_EQ(ran.size(), 1u);
    EXPECT_EQ(ran[0].type, "sql_call");
    EXPECT_EQ(ran[0].server, "shop");
    EXPECT_TRUE(ran[0].error.empty()) << ran[0].error;
    const auto out = json::parse(ran[0].output);
    EXPECT_EQ(out["rows"], json({{"apple"}, {"pear"}, {"plum"}}));
    EXPECT_EQ(text, "three");
    const auto &last = evs.back();
    EXPECT_EQ(last.finish, finish_reason::stop);
    ASSERT_TRUE(last.message);
    EXPECT_EQ(last.message->content, "three");
    EXPECT_TRUE(last.message->tool_calls.empty());
    EXPECT_EQ(last.n_prompt, 30); // every step counted
    EXPECT_EQ(last.n_cached, 12);
    EXPECT_EQ(last.n_generated, 8);
    // The second step saw the call and its result, and chose freely.
    ASSERT_EQ(model->prepared.size(), 2u);
    const auto &second = model->prepared[1];
    ASSERT_EQ(second.messages.size(), 3u);
    EXPECT_EQ(second.messages[1].role, "assistant");
    ASSERT_EQ(second.messages[1].tool_calls.size(), 1u);
    EXPECT_EQ(second.messages[1].tool_calls[0].id, "c1");
    EXPECT_EQ(second.messages[2].role, "tool");
    EXPECT_EQ(second.messages[2].tool_call_id, "c1");
    EXPECT_EQ(second.messages[2].content, ran[0].output);
    EXPECT_EQ(second.choice, tool_choice::automatic);
    // One step change, timed without the tool's time; one call, timed.
    ASSERT_EQ(step_overheads.size(), 1u);
    EXPECT_GE(step_overheads[0], 0.0);
    EXPECT_EQ(timed_calls, std::vector<std::string>{"sql"});
}

TEST_F(tool_loop_fixture, AToolErrorGoesBackToTheModelToCorrect) {
    auto l = loop();
    model->steps.push_back(call_step("c1", "sql", R"({"query": "DELETE FROM items"})"));
    model->steps.push_back(call_step("c2", "sql", R"({"query": "SELECT nme FROM items"})"));
    model->steps.push_back(call_step("c3", "sql", R"(not json)"));
    model->steps.push_back(answer_step("ok"));
    auto req                          = request("sql");
    req.max_tool_corrections          = 3; // three failures in a row, each one corrected
    auto                          s   = start(*l, req);
    auto                          evs = drain(*s);
    std::vector<server_tool_call> ran;
    for (const auto &ev : evs) {
        ran.insert(ran.end(), ev.server_calls.begin(), ev.server_calls.end());
    }
    ASSERT_EQ(ran.size(), 3u);
    EXPECT_NE(ran[0].error.find("only a SELECT"), std::string::npos) << ran[0].error;
    EXPECT_NE(ran[1].error.find("no such column: nme"), std::string::npos) << ran[1].error;
    EXPECT_NE(ran[2].error.find("arguments must be"), std::string::npos) << ran[2].error;
    ASSERT_EQ(model->prepared.size(), 4u);
    EXPECT_EQ(model->prepared[1].messages.back().content, "error: " + ran[0].error);
    EXPECT_EQ(evs.back().message->content, "ok");
}

// The calls the server ran, in the order their items reached the client.
std::vector<server_tool_call> items_of(const std::vector<backend_event> &evs) {
    std::vector<server_tool_call> ran;
    for (const auto &ev : evs) {
        ran.insert(ran.end(), ev.server_calls.begin(), ev.server_calls.end());
    }
    return ran;
}

TEST_F(tool_loop_fixture, AFailedQueryIsFedBackAndTheCorrectedOneSucceeds) {
    auto l = loop();
    model->steps.push_back(call_step("c1", "sql", R"({"query": "SELECT nme FROM items"})"));
    model->steps.push_back(call_step("c2", "sql", R"({"query": "SELECT name FROM items WHERE id = 2"})"));
    model->steps.push_back(answer_step("pear"));
    auto s   = start(*l, request("sql")); // the default correction budget
    auto evs = drain(*s);
    auto ran = items_of(evs);
    ASSERT_EQ(ran.size(), 2u);
    EXPECT_NE(ran[0].error.find("no such column: nme"), std::string::npos) << ran[0].error;
    EXPECT_TRUE(ran[1].error.empty()) << ran[1].error;
    EXPECT_EQ(json::parse(ran[1].output)["rows"], json({{"pear"}}));
    // The model read the error, then the rows of its corrected query.
    ASSERT_EQ(model->prepared.size(), 3u);
    EXPECT_EQ(model->prepared[1].messages.back().content, "error: " + ran[0].error);
    EXPECT_EQ(model->prepared[2].messages.back().content, ran[1].output);
    EXPECT_EQ(evs.back().finish, finish_reason::stop);
    EXPECT_TRUE(evs.back().incomplete_reason.empty());
    EXPECT_EQ(evs.back().message->content, "pear");
}

TEST_F(tool_loop_fixture, FailedCallsInARowPastTheCorrectionBudgetEndTheRunNamingIt) {
    for (const int32_t corrections : {0, 1, 2}) {
        SCOPED_TRACE("max_tool_corrections " + std::to_string(corrections));
        model  = std::make_shared<scripted_model>();
        auto l = loop();
        for (int i = 0; i < 6; ++i) {
            model->steps.push_back(call_step("c" + std::to_string(i), "sql", R"({"query": "SELECT nme FROM items"})"));
        }
        auto req                 = request("sql");
        req.max_tool_corrections = corrections;
        auto s                   = start(*l, req);
        auto evs                 = drain(*s);
        auto ran                 = items_of(evs);
        // The first failure and each correction ran, all failed; then the run ended, no step after.
        ASSERT_EQ(ran.size(), static_cast<size_t>(corrections + 1));
        for (const auto &c : ran) {
            EXPECT_NE(c.error.find("no such column: nme"), std::string::npos) << c.error;
        }
        EXPECT_EQ(model->prepared.size(), static_cast<size_t>(corrections + 1));
        ASSERT_FALSE(evs.empty());
        EXPECT_FALSE(evs.back().err);
        EXPECT_EQ(evs.back().finish, finish_reason::length);
        EXPECT_EQ(evs.back().incomplete_reason, "max_tool_corrections");
        EXPECT_EQ(evs.back().n_generated, 5 * (corrections + 1)); // every step counted
        EXPECT_TRUE(tasks.empty());
    }
}

TEST_F(tool_loop_fixture, ASuccessfulCallStartsTheCorrectionCountAgain) {
    auto l = loop();
    // Failed, succeeded, failed, succeeded, failed: never two failures in a row.
    for (int i = 0; i < 5; ++i) {
        const char *query = i % 2 == 0 ? R"({"query": "SELECT nme FROM items"})" : R"({"query": "SELECT 1"})";
        model->steps.push_back(call_step("c" + std::to_string(i), "sql", query));
    }
    model->steps.push_back(answer_step("done"));
    auto req                 = request("sql");
    req.max_tool_corrections = 1;
    auto s                   = start(*l, req);
    auto evs                 = drain(*s);
    auto ran                 = items_of(evs);
    ASSERT_EQ(ran.size(), 5u);
    for (size_t i = 0; i < ran.size(); ++i) {
        EXPECT_EQ(ran[i].error.empty(), i % 2 == 1) << i << ": " << ran[i].error;
    }
    EXPECT_EQ(evs.back().finish, finish_reason::stop);
    EXPECT_TRUE(evs.back().incomplete_reason.empty());
    EXPECT_EQ(evs.back().message->content, "done");
}

TEST_F(tool_loop_fixture, MaxToolCallsEndsTheRunAsIncompleteNamingIt) {
    auto l = loop();
    for (int i = 0; i < 5; ++i) {
        model->steps.push_back(call_step("c" + std::to_string(i), "sql", R"({"query": "SELECT 1"})"));
    }
    auto req           = request("required");
    req.max_tool_calls = 2;
    auto   s           = start(*l, req);
    auto   evs         = drain(*s);
    size_t ran         = 0;
    for (const auto &ev : evs) {
        ran += ev.server_calls.size();
    }
    EXPECT_EQ(ran, 2u);
    EXPECT_EQ(evs.back().finish, finish_reason::length);
    EXPECT_EQ(evs.back().incomplete_reason, "max_tool_calls");
    EXPECT_EQ(model->prepared.size(), 3u);
}

TEST_F(tool_loop_fixture, MaxOutputTokensCountsEveryStep) {
    auto l = loop();
    for (int i = 0; i < 5; ++i) {
        model->steps.push_back(call_step("c" + std::to_string(i), "sql", R"({"query": "SELECT 1"})"));
    }
    auto req       = request("sql");
    req.max_tokens = 12; // each scripted step generates 5
    auto s         = start(*l, req);
    auto evs       = drain(*s);
    EXPECT_EQ(evs.back().incomplete_reason, "max_output_tokens");
    ASSERT_EQ(model->prepared.size(), 3u);
    EXPECT_EQ(model->prepared[1].max_tokens, 7); // what is left for the second step
    EXPECT_EQ(model->prepared[2].max_tokens, 2);
}

TEST_F(tool_loop_fixture, ANextStepThatOutgrowsTheContextEndsTheRunKeepingItsTrace) {
    auto l = loop();
    model->steps.push_back(call_step("c1", "sql", R"({"query": "SELECT * FROM items"})"));
    model->refuse_prepare_at          = 2;
    auto                          s   = start(*l, request("sql"));
    auto                          evs = drain(*s);
    std::vector<server_tool_call> ran;
    for (const auto &ev : evs) {
        ran.insert(ran.end(), ev.server_calls.begin(), ev.server_calls.end());
        EXPECT_FALSE(ev.err) << ev.err->message;
    }
    ASSERT_EQ(ran.size(), 1u);
    EXPECT_EQ(evs.back().finish, finish_reason::length);
    EXPECT_EQ(evs.back().incomplete_reason, "max_context");
    EXPECT_EQ(evs.back().n_generated, 5);
}

TEST_F(tool_loop_fixture, AClientFunctionCallEndsTheLoopAndReachesTheClientRenumbered) {
    auto l   = loop();
    auto req = request("auto");
    req.tools.push_back({"get_weather", "Weather", R"({"type":"object"})"});
    backend_event fin;
    fin.calls.push_back({0, true, "b1", "sql", ""});
    fin.calls.push_back({1, true, "w1", "get_weather", ""});
    fin.calls.push_back({1, false, "", "", "{}"});
    fin.finish  = finish_reason::stop;
    fin.message = chat_output{"", {{"b1", "sql", R"({"query":"SELECT 1"})"}, {"w1", "get_weather", "{}"}}};
    model->steps.push_back({fin});
    auto s   = start(*l, req);
    auto evs = drain(*s);
    ASSERT_EQ(model->prepared[0].tools.size(), 2u); // the client's function, then ours
    EXPECT_EQ(model->prepared[0].choice, tool_choice::automatic);
    ASSERT_EQ(evs.size(), 1u);
    ASSERT_EQ(evs[0].calls.size(), 2u);
    EXPECT_EQ(evs[0].calls[0].call, 0u); // the client's call is its first
    EXPECT_EQ(evs[0].calls[0].name, "get_weather");
    ASSERT_TRUE(evs[0].message);
    ASSERT_EQ(evs[0].message->tool_calls.size(), 1u);
    EXPECT_EQ(evs[0].message->tool_calls[0].name, "get_weather");
    EXPECT_TRUE(tasks.empty());
}

TEST_F(tool_loop_fixture, CancelBetweenStepsStartsNoOtherStep) {
    auto l = loop();
    model->steps.push_back(call_step("c1", "sql", R"({"query": "SELECT 1"})"));
    model->steps.push_back(answer_step("never"));
    auto s = start(*l, request("sql"));
    EXPECT_TRUE(s->take().empty());
    ASSERT_EQ(tasks.size(), 1u);
    s->cancel();
    EXPECT_EQ(model->streams[0]->cancels, 1);
    run_tasks();
    EXPECT_EQ(model->prepared.size(), 1u); // no second step was prepared
    EXPECT_EQ(model->steps.size(), 1u);
}

TEST_F(tool_loop_fixture, RequestsThatCannotWorkAreRefusedBeforeAnyStep) {
    auto l   = loop();
    auto req = request("function:nope");
    EXPECT_FALSE(l->prepare(req));
    auto clash = request("auto");
    clash.tools.push_back({"sql", "mine", ""});
    auto r = l->prepare(clash);
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("the name of a built-in tool"), std::string::npos);
    // A forced built-in that no tool of the request matches: refused, naming what was forced.
    for (const char *choice : {"mcp:docs", "file_search", "sql=other", "extract"}) {
        auto forced = l->prepare(request(choice));
        ASSERT_FALSE(forced) << choice;
        EXPECT_EQ(forced.err().param, "tool_choice");
        EXPECT_NE(forced.err().message.find("matches none of this request's built-in tools"), std::string::npos)
            << forced.err().message;
    }
    EXPECT_NE(l->prepare(request("sql=other")).err().message.find("'sql other'"), std::string::npos);
}

TEST_F(tool_loop_fixture, AChoiceNamingTheKindAndTheFunctionForcesThatFunction) {
    auto l = loop();
    model->steps.push_back(answer_step("hi"));
    auto s = start(*l, request("sql=sql"));
    ASSERT_EQ(model->prepared.size(), 1u);
    ASSERT_EQ(model->prepared[0].tools.size(), 1u);
    EXPECT_EQ(model->prepared[0].tools[0].name, "sql");
    EXPECT_EQ(model->prepared[0].choice, tool_choice::required);
}

} // namespace
} // namespace inferbox

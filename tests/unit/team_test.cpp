// Teams (agent/team.h): the --team entry's parsing and checks, and the captain's fan-out to its
// members, driven by scripted models. The captain is a tool loop whose tools are the members; the
// members run on threads of their own (as on the router's team pool), so what is checked here is
// what happens when they really run at once: two members called in one step must both be running
// before either can finish (a barrier, no timing), a member's failure and budgets reach the captain
// as tool errors, and cancelling the captain's run cancels the members' generations.
#include "agent/team.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace inferbox {
namespace {

using json = nlohmann::json;

TEST(team_spec_test, ParsesTheOneLineFormAndGivesItBack) {
    auto t = parse_team_spec(
        "crew=big;instructions=Lead\\; then answer.;member.analyst=small;"
        "member.analyst.instructions=Count rows\\\\ only;member.analyst.tools=sql:shop,mcp:fs;"
        "member.analyst.max-tool-calls=2;member.analyst.tool-choice=required;member.analyst.temperature=0.5;"
        "member.writer=big;"
        "member.writer.max-time-ms=5000;member.writer.max-corrections=0");
    ASSERT_TRUE(t) << t.err().message;
    EXPECT_EQ(t->name, "crew");
    EXPECT_EQ(t->captain_model, "big");
    EXPECT_EQ(t->captain_instructions, "Lead; then answer.");
    ASSERT_EQ(t->members.size(), 2u);
    EXPECT_EQ(t->members[0].name, "analyst");
    EXPECT_EQ(t->members[0].instructions, "Count rows\\ only");
    EXPECT_EQ(t->members[0].tools, (std::vector<std::string>{"sql:shop", "mcp:fs"}));
    EXPECT_EQ(t->members[0].budget.max_tool_calls, 2);
    EXPECT_EQ(t->members[0].tool_choice, "required");
    EXPECT_EQ(t->members[1].tool_choice, "auto");
    EXPECT_EQ(t->members[0].temperature, 0.5f);
    EXPECT_EQ(t->members[1].temperature, 1.0f);
    EXPECT_EQ(t->members[1].budget.max_time, std::chrono::milliseconds(5000));
    EXPECT_EQ(t->members[1].budget.max_tokens, 512);
    EXPECT_EQ(t->members[0].budget.max_corrections, 2);
    EXPECT_EQ(t->members[1].budget.max_corrections, 0);
    auto again = parse_team_spec(format_team_spec(*t));
    ASSERT_TRUE(again) << again.err().message;
    EXPECT_EQ(format_team_spec(*again), format_team_spec(*t));
    EXPECT_EQ(again->members[0].instructions, t->members[0].instructions);
}

TEST(team_spec_test, BadEntriesAreRefusedNamingTheTeamAndTheKey) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"crew=big;member.a=x;member.a=y", "the member 'a' is given twice"},
        {"crew=big", "team 'crew' has no members"},
        {"crew=big;member.a.instructions=hi", "declare it first"},
        {"crew=big;member.a=x;member.a.colour=red", "member.a.colour: unknown key"},
        {"crew=big;member.a=x;member.a.tools=files:x", "is not a tool"},
        {"crew=big;member.a=x;member.a.max-tool-calls=99", "from 0 to 32"},
        {"crew=big;member.a=x;member.a.max-corrections=9", "member.a.max-corrections must be an integer from 0 to 8"},
        {"crew=big;member.a b=x", "a member's name"},
        {"crew=big;colour=red", "unknown key 'colour'"},
        {"cr ew=big;member.a=x", "is not NAME=CAPTAIN_MODEL"},
        {"crew=;member.a=x", "the captain's model is missing"},
        {"crew=big;member.a=x;instructions=a\\b", "neither ';' nor"},
        {"crew=big;member.a=x;member.a.tool-choice=sql", "must be auto, required or none"},
        {"crew=big;member.a=x;member.a.temperature=hot", "from 0 to 2"},
        {"crew=big;member.a=x;member.a.tool-choice=required", "needs tools"},
    };
    for (const auto &[text, want] : cases) {
        auto t = parse_team_spec(text);
        ASSERT_FALSE(t) << text;
        EXPECT_NE(t.err().message.find(want), std::string::npos) << text << " -> " << t.err().message;
        if (text.rfind("crew=", 0) == 0) {
            EXPECT_NE(t.err().message.find("crew"), std::string::npos) << t.err().message;
        }
    }
}

TEST(team_spec_test, ToolsAndModelsAreCheckedAgainstTheServer) {
    auto t = parse_team_spec("crew=big;member.a=small;member.a.tools=sql:shop;member.b=small;member.b.tools=mcp:fs");
    ASSERT_TRUE(t);
    EXPECT_FALSE(check_team_tools(*t, {"shop"}, {"fs"}));
    auto err = check_team_tools(*t, {"books"}, {"fs"});
    ASSERT_TRUE(err);
    EXPECT_NE(err->message.find("team 'crew', member 'a': the tool 'sql:shop'"), std::string::npos) << err->message;
    EXPECT_NE(err->message.find("books"), std::string::npos);
    err = check_team_tools(*t, {"shop"}, {});
    ASSERT_TRUE(err);
    EXPECT_NE(err->message.find("--mcp-server"), std::string::npos) << err->message;

    const auto serves = [](const std::string &m) { return m == "big" || m == "small"; };
    EXPECT_FALSE(check_team_models(*t, serves, "big, small"));
    t->members[1].model = "huge";
    err                 = check_team_models(*t, serves, "big, small");
    ASSERT_TRUE(err);
    EXPECT_NE(err->message.find("member 'b': unknown model 'huge' (this server serves: big, small)"), std::string::npos)
        << err->message;
    t->captain_model = "team/other";
    err              = check_team_models(
                     *t, [](const std::string &) { return true; }, "");
    ASSERT_TRUE(err);
    EXPECT_NE(err->message.find("the captain: the model 'team/other' is a team"), std::string::npos);
}

// A stream whose events the test (or the scripted model) pushes; cancel() is counted.
class pushed_stream final : public generation_stream {
  public:
    explicit pushed_stream(std::function<void()> notify) : notify_(std::move(notify)) {}
    void push(std::vector<backend_event> evs) {
        {
            std::lock_guard lock(mu_);
            for (auto &e : evs) {
                pending_.push_back(std::move(e));
            }
        }
        notify_();
    }
    std::vector<backend_event> take() override {
        std::lock_guard lock(mu_);
        return std::exchange(pending_, {});
    }
    void cancel() override {
        std::lock_guard lock(mu_);
        ++cancels_;
    }
    int cancelled() const {
        std::lock_guard lock(mu_);
        return cancels_;
    }

  private:
    std::function<void()>      notify_;
    mutable std::mutex         mu_;
    std::vector<backend_event> pending_;
    int                        cancels_ = 0;
};

// A model whose every submit() hands its stream and request to `on_submit` (which answers now,
// later, or never); prepare() records each request.
class pushed_model final : public generation_backend {
  public:
    std::optional<error>    check(const api_request    &/*req*/) const override { return std::nullopt; }
    std::optional<error>    over_capacity(int32_t /*n*/) const override { return std::nullopt; }
    result<backend_request> prepare(api_request req) const override {
        std::lock_guard lock(mu);
        prepared.push_back(req);
        backend_request r;
        r.req = std::move(req);
        r.prompts.push_back({{1, 2, 3}, ""});
        r.tools = true;
        return r;
    }
    result<std::shared_ptr<generation_stream>> submit(std::shared_ptr<const backend_request> req,
                                                      std::function<void()>                  notify) override {
        auto s = std::make_shared<pushed_stream>(std::move(notify));
        {
            std::lock_guard lock(mu);
            streams.push_back(s);
        }
        if (on_submit) {
            on_submit(s, *req);
        }
        return std::shared_ptr<generation_stream>(s);
    }
    bool healthy() const override { return true; }

    std::function<void(const std::shared_ptr<pushed_stream> &, const backend_request &)> on_submit;
    mutable std::mutex                                                                   mu;
    mutable std::vector<api_request>                                                     prepared;
    std::vector<std::shared_ptr<pushed_stream>>                                          streams;
};

std::vector<backend_event> calls_step(const std::vector<chat_tool_call> &calls) {
    backend_event fin;
    for (size_t i = 0; i < calls.size(); ++i) {
        fin.calls.push_back({i, true, calls[i].id, calls[i].name, ""});
        fin.calls.push_back({i, false, "", "", calls[i].arguments});
    }
    fin.finish      = finish_reason::stop;
    fin.n_prompt    = 10;
    fin.n_generated = 5;
    fin.message     = chat_output{"", calls};
    return {fin};
}

std::vector<backend_event> answer_step(const std::string &text) {
    backend_event fin;
    fin.content     = text;
    fin.finish      = finish_reason::stop;
    fin.n_prompt    = 7;
    fin.n_generated = 3;
    fin.message     = chat_output{text, {}};
    return {fin};
}

// A built-in tool of a member's own: echoes its argument.
class echo_tool final : public builtin_tool {
  public:
    tool_function function() const override {
        return {"echo", "Echoes", R"({"type":"object","properties":{"text":{"type":"string"}}})"};
    }
    std::string  kind() const override { return "mcp"; }
    std::string  server() const override { return "everything"; }
    std::string  item_type() const override { return "mcp_call"; }
    tool_outcome run(const std::string &arguments_json) const override { return {"Echo: " + arguments_json, ""}; }
};

struct team_fixture : ::testing::Test {
    void TearDown() override { join_all(); }

    // Every posted task runs on a thread of its own (as on a pool with room), joined at the end.
    task_poster spawn() {
        return [this](std::function<void()> t) {
            std::lock_guard lock(mu);
            threads.emplace_back(std::move(t));
        };
    }
    void join_all() {
        for (;;) {
            std::thread t;
            {
                std::lock_guard lock(mu);
                if (threads.empty()) {
                    return;
                }
                t = std::move(threads.front());
                threads.pop_front();
            }
            t.join();
        }
    }

    team_runtime runtime() {
        team_runtime rt;
        rt.resolve = [this](const std::string &model) -> result<member_backend> {
            if (model != "small") {
                return error{error_kind::not_found, "the model '" + model + "' does not exist", "model", ""};
            }
            return member_backend{members, nullptr, "local"};
        };
        rt.post           = spawn();
        rt.on_member_call = [this](const std::string &member, const std::string &outcome, double seconds) {
            EXPECT_GE(seconds, 0.0);
            std::lock_guard lock(mu);
            outcomes.push_back(member + ":" + outcome);
        };
        return rt;
    }

    std::shared_ptr<builtin_tool> member(const std::string &name, const std::string &model = "small",
                                         team_member_budget budget = {}, builtin_toolbox tools = {}) {
        team_member_spec m;
        m.name         = name;
        m.model        = model;
        m.instructions = "You are " + name + ".";
        m.budget       = budget;
        return make_team_member_tool("crew", m, std::move(tools), runtime());
    }

    std::shared_ptr<generation_stream> start_captain(std::vector<std::shared_ptr<builtin_tool>> team,
                                                     const std::string                         &choice = "required") {
        builtin_toolbox box;
        box.tools = std::move(team);
        tool_loop_limits limits;
        limits.max_parallel = 4;
        limits.run_calls    = spawn();
        loop                = std::make_shared<tool_loop_backend>(captain, box, spawn(), limits);
        api_request req;
        req.kind           = api_kind::chat;
        req.messages       = {{"user", "Find out.", {}, ""}};
        req.builtin_choice = choice;
        auto p             = loop->prepare(req);
        EXPECT_TRUE(p) << p.err().message;
        auto s = loop->submit(std::make_shared<const backend_request>(std::move(*p)), [this] {
            std::lock_guard lock(mu);
            ++notified;
            cv.notify_all();
        });
        EXPECT_TRUE(s) << s.err().message;
        return *s;
    }

    // The captain's events until its last one (or 20 s: a failure, not a hang).
    std::vector<backend_event> drain(generation_stream &s) {
        std::vector<backend_event> all;
        const auto                 until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        for (;;) {
            int seen = 0;
            {
                std::lock_guard lock(mu);
                seen = notified;
            }
            for (auto &ev : s.take()) {
                all.push_back(std::move(ev));
            }
            if (!all.empty() && (all.back().finish != finish_reason::none || all.back().err)) {
                return all;
            }
            std::unique_lock lock(mu);
            if (!cv.wait_until(lock, until, [&] { return notified != seen; })) {
                ADD_FAILURE() << "the captain's run did not end";
                return all;
            }
        }
    }

    static std::vector<server_tool_call> server_calls(const std::vector<backend_event> &evs) {
        std::vector<server_tool_call> out;
        for (const auto &ev : evs) {
            out.insert(out.end(), ev.server_calls.begin(), ev.server_calls.end());
        }
        return out;
    }

    std::shared_ptr<pushed_model>      captain = std::make_shared<pushed_model>();
    std::shared_ptr<pushed_model>      members = std::make_shared<pushed_model>();
    std::shared_ptr<tool_loop_backend> loop;
    std::mutex                         mu;
    std::condition_variable            cv;
    int                                notified = 0;
    std::deque<std::thread>            threads;
    std::vector<std::string>           outcomes;
};

// The captain's script: first step calls `calls`, every later step answers.
void script_captain(pushed_model &captain, const std::vector<chat_tool_call> &calls) {
    captain.on_submit = [calls, n = std::make_shared<int>(0)](const std::shared_ptr<pushed_stream> &s,
                                                              const backend_request & /*req*/) {
        s->push((*n)++ == 0 ? calls_step(calls) : answer_step("composed"));
    };
}

TEST_F(team_fixture, TwoMembersCalledInOneStepRunAtOnce) {
    script_captain(*captain, {{"c1", "analyst", R"({"task": "count the rows"})"},
                              {"c2", "writer", R"({"task": "write a line"})"}});
    // A barrier: neither member's generation finishes before both have started. Run one after
    // the other, the first would wait out its time budget and fail.
    std::vector<std::shared_ptr<pushed_stream>> waiting;
    std::vector<std::string>                    tasks;
    auto                                        barrier = std::make_shared<std::mutex>();
    members->on_submit = [&](const std::shared_ptr<pushed_stream> &s, const backend_request &req) {
        std::lock_guard lock(*barrier);
        waiting.push_back(s);
        tasks.push_back(req.req.messages.back().content);
        if (waiting.size() == 2) {
            for (size_t i = 0; i < 2; ++i) {
                waiting[i]->push(answer_step("done: " + tasks[i]));
            }
        }
    };
    team_member_budget budget;
    budget.max_time = std::chrono::milliseconds(5000);
    auto s          = start_captain({member("analyst", "small", budget), member("writer", "small", budget)});
    auto evs        = drain(*s);
    ASSERT_FALSE(evs.empty());
    EXPECT_EQ(evs.back().finish, finish_reason::stop);
    EXPECT_EQ(evs.back().message->content, "composed");

    // The members' results reach the captain in the step's order, whichever finished first.
    ASSERT_EQ(captain->prepared.size(), 2u);
    const auto &msgs = captain->prepared[1].messages;
    ASSERT_EQ(msgs.size(), 4u);
    EXPECT_EQ(msgs[2].tool_call_id, "c1");
    EXPECT_EQ(msgs[2].content, "done: count the rows");
    EXPECT_EQ(msgs[3].tool_call_id, "c2");
    EXPECT_EQ(msgs[3].content, "done: write a line");

    // Each member ran with its instructions as the system message and the task as the user's.
    ASSERT_EQ(members->prepared.size(), 2u);
    for (const auto &req : members->prepared) {
        ASSERT_EQ(req.messages.size(), 2u);
        EXPECT_EQ(req.messages[0].role, "system");
        EXPECT_EQ(req.model, "small");
        EXPECT_EQ(req.max_tokens, 512);
    }

    // The trace: each member call started, then finished with its output, tokens and where it ran.
    const auto calls = server_calls(evs);
    ASSERT_EQ(calls.size(), 4u);
    int started = 0, finished = 0;
    for (const auto &c : calls) {
        auto ev = read_team_event(c);
        ASSERT_TRUE(ev) << c.server;
        if (ev->what == team_trace_event::kind::started) {
            ++started;
            EXPECT_EQ(ev->item["status"], "in_progress");
        } else {
            ++finished;
            EXPECT_EQ(ev->item["status"], "completed") << ev->item.dump();
            EXPECT_EQ(ev->item["backend"], "local");
            EXPECT_EQ(ev->item["usage"]["output_tokens"], 3);
            EXPECT_EQ(ev->item["team"], "crew");
        }
    }
    EXPECT_EQ(started, 2);
    EXPECT_EQ(finished, 2);
    // The tree has each member call once, where it started (either may have started first).
    const auto tree = trace_tree(calls);
    ASSERT_EQ(tree.size(), 2u);
    const auto &analyst = tree[0]["member"] == "analyst" ? tree[0] : tree[1];
    EXPECT_EQ(analyst["task"], "count the rows");
    EXPECT_EQ(analyst["output"], "done: count the rows");
    EXPECT_EQ((tree[0]["member"] == "analyst" ? tree[1] : tree[0])["member"], "writer");
    join_all();
    std::sort(outcomes.begin(), outcomes.end());
    EXPECT_EQ(outcomes, (std::vector<std::string>{"analyst:ok", "writer:ok"}));
}

TEST_F(team_fixture, AMemberFailureIsAToolErrorTheCaptainReads) {
    script_captain(*captain, {{"c1", "lost", R"({"task": "x"})"},
                              {"c2", "broken", R"({"task": "y"})"},
                              {"c3", "broken", R"({"no task": 1})"}});
    members->on_submit = [](const std::shared_ptr<pushed_stream> &s, const backend_request & /*req*/) {
        backend_event err;
        err.err = error{error_kind::unavailable, "the engine stopped", "", ""};
        s->push({err});
    };
    auto s   = start_captain({member("lost", "gone"), member("broken")});
    auto evs = drain(*s);
    EXPECT_EQ(evs.back().finish, finish_reason::stop);
    ASSERT_EQ(captain->prepared.size(), 2u);
    const auto &msgs = captain->prepared[1].messages;
    ASSERT_EQ(msgs.size(), 5u);
    EXPECT_NE(msgs[2].content.find("error: the model 'gone' cannot run this member"), std::string::npos)
        << msgs[2].content;
    EXPECT_EQ(msgs[3].content, "error: the engine stopped");
    EXPECT_NE(msgs[4].content.find("error: the arguments must be a JSON object"), std::string::npos);
    const auto tree = trace_tree(server_calls(evs));
    ASSERT_EQ(tree.size(), 3u);
    for (const auto &item : tree) {
        EXPECT_EQ(item["status"], "failed") << item.dump();
        EXPECT_TRUE(item["error"].is_string());
    }
}

TEST_F(team_fixture, BudgetsEndAMemberAndTheCaptainIsTold) {
    script_captain(*captain, {{"c1", "looper", R"({"task": "loop"})"}, {"c2", "sleeper", R"({"task": "sleep"})"}});
    members->on_submit = [](const std::shared_ptr<pushed_stream> &s, const backend_request &req) {
        if (req.req.messages.front().content == "You are looper.") {
            s->push(calls_step({{"e" + std::to_string(req.req.messages.size()), "echo", R"({"text":"hi"})"}}));
        } // the sleeper never answers
    };
    team_member_budget loops;
    loops.max_tool_calls = 1;
    team_member_budget sleeps;
    sleeps.max_time = std::chrono::milliseconds(100);
    builtin_toolbox echo;
    echo.tools.push_back(std::make_shared<echo_tool>());
    auto s   = start_captain({member("looper", "small", loops, echo), member("sleeper", "small", sleeps)});
    auto evs = drain(*s);
    ASSERT_EQ(captain->prepared.size(), 2u);
    const auto &msgs = captain->prepared[1].messages;
    EXPECT_NE(msgs[2].content.find("stopped at its budget (max_tool_calls)"), std::string::npos) << msgs[2].content;
    EXPECT_NE(msgs[3].content.find("ran past its time budget (100 ms)"), std::string::npos) << msgs[3].content;
    // The looper's own call is in the trace, nested under it, named with the member.
    const auto tree = trace_tree(server_calls(evs));
    ASSERT_EQ(tree.size(), 2u);
    const bool  first   = tree[0]["member"] == "looper"; // either may have started first
    const auto &looper  = tree[first ? 0 : 1];
    const auto &sleeper = tree[first ? 1 : 0];
    EXPECT_EQ(looper["status"], "incomplete");
    EXPECT_EQ(looper["incomplete_reason"], "max_tool_calls");
    ASSERT_EQ(looper["calls"].size(), 1u);
    EXPECT_EQ(looper["calls"][0]["type"], "mcp_call");
    EXPECT_EQ(looper["calls"][0]["member"], "looper");
    EXPECT_EQ(looper["calls"][0]["output"], R"(Echo: {"text":"hi"})");
    EXPECT_EQ(sleeper["status"], "failed");
    join_all();
    std::sort(outcomes.begin(), outcomes.end());
    EXPECT_EQ(outcomes, (std::vector<std::string>{"looper:budget", "sleeper:timeout"}));
    // The sleeper's generation was cancelled when its time ran out.
    bool cancelled = false;
    for (const auto &st : members->streams) {
        cancelled = cancelled || st->cancelled() > 0;
    }
    EXPECT_TRUE(cancelled);
}

// A member's own tool that always fails.
class failing_tool final : public builtin_tool {
  public:
    tool_function function() const override {
        return {"lookup", "Looks up", R"({"type":"object","properties":{"key":{"type":"string"}}})"};
    }
    std::string  kind() const override { return "mcp"; }
    std::string  server() const override { return "everything"; }
    std::string  item_type() const override { return "mcp_call"; }
    tool_outcome run(const std::string & /*arguments_json*/) const override { return {"", "no such key"}; }
};

TEST_F(team_fixture, AMembersCorrectionBudgetEndsItsRunAndTheCaptainIsTold) {
    script_captain(*captain, {{"c1", "seeker", R"({"task": "look it up"})"}});
    members->on_submit = [](const std::shared_ptr<pushed_stream> &s, const backend_request &req) {
        s->push(calls_step({{"k" + std::to_string(req.req.messages.size()), "lookup", R"({"key":"x"})"}}));
    };
    team_member_budget budget;
    budget.max_corrections = 1; // member.seeker.max-corrections=1
    builtin_toolbox tools;
    tools.tools.push_back(std::make_shared<failing_tool>());
    auto s   = start_captain({member("seeker", "small", budget, tools)});
    auto evs = drain(*s);
    EXPECT_EQ(evs.back().finish, finish_reason::stop); // the captain goes on
    // The member's first call failed, its one correction failed: its run ended there.
    ASSERT_EQ(members->prepared.size(), 2u);
    EXPECT_EQ(members->prepared[0].max_tool_corrections, 1);
    EXPECT_EQ(members->prepared[1].messages.back().content, "error: no such key");
    ASSERT_EQ(captain->prepared.size(), 2u);
    EXPECT_NE(captain->prepared[1].messages[2].content.find("stopped at its budget (max_tool_corrections)"),
              std::string::npos)
        << captain->prepared[1].messages[2].content;
    const auto tree = trace_tree(server_calls(evs));
    ASSERT_EQ(tree.size(), 1u);
    EXPECT_EQ(tree[0]["status"], "incomplete");
    EXPECT_EQ(tree[0]["incomplete_reason"], "max_tool_corrections");
    EXPECT_EQ(tree[0]["calls"].size(), 2u);
    join_all();
    EXPECT_EQ(outcomes, std::vector<std::string>{"seeker:budget"});
}

TEST_F(team_fixture, CancellingTheCaptainCancelsTheMembersGenerations) {
    script_captain(*captain, {{"c1", "a", R"({"task": "x"})"}, {"c2", "b", R"({"task": "y"})"}});
    std::mutex              m;
    std::condition_variable started;
    int                     n = 0;
    members->on_submit        = [&](const std::shared_ptr<pushed_stream>        &/*s*/, const backend_request        &/*req*/) {
        std::lock_guard lock(m);
        ++n;
        started.notify_all(); // and never answers
    };
    team_member_budget budget;
    budget.max_time = std::chrono::milliseconds(60'000);
    auto s          = start_captain({member("a", "small", budget), member("b", "small", budget)});
    // The captain's stream is read (as the job reads it) until both members are running.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
        s->take();
        std::unique_lock lock(m);
        if (started.wait_for(lock, std::chrono::milliseconds(10), [&] { return n == 2; })) {
            break;
        }
        ASSERT_LT(std::chrono::steady_clock::now(), until) << "the members did not start";
    }
    s->cancel(); // the client went away
    join_all();  // the members return at once: no time budget runs out
    ASSERT_EQ(members->streams.size(), 2u);
    EXPECT_EQ(members->streams[0]->cancelled(), 1);
    EXPECT_EQ(members->streams[1]->cancelled(), 1);
    std::sort(outcomes.begin(), outcomes.end());
    EXPECT_EQ(outcomes, (std::vector<std::string>{"a:cancelled", "b:cancelled"}));
    EXPECT_EQ(captain->prepared.size(), 1u); // no next step
}

TEST_F(team_fixture, AForcedMemberIsTheOnlyToolOfTheFirstStep) {
    script_captain(*captain, {{"c1", "b", R"({"task": "y"})"}});
    members->on_submit = [](const std::shared_ptr<pushed_stream> &s, const backend_request & /*req*/) {
        s->push(answer_step("ok"));
    };
    auto s = start_captain({member("a"), member("b")}, "team:crew:b");
    drain(*s);
    ASSERT_GE(captain->prepared.size(), 1u);
    const auto &first = captain->prepared[0];
    ASSERT_EQ(first.tools.size(), 1u);
    EXPECT_EQ(first.tools[0].name, "b");
    EXPECT_EQ(first.choice, tool_choice::required);
    EXPECT_EQ(json::parse(first.tools[0].parameters)["required"], json::array({"task"}));
    EXPECT_EQ(captain->prepared[1].tools.size(), 2u); // later steps offer the whole team
}

} // namespace
} // namespace inferbox

#include "agent/team.h"

#include "common/waker.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <map>
#include <utility>

namespace inferbox {

using json = nlohmann::json;

namespace {

bool plain_name(const std::string &s) {
    return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
    });
}

// Splits on ';' that is not escaped, undoing `\;` and `\\`.
result<std::vector<std::string>> split_entries(const std::string &text) {
    std::vector<std::string> out(1);
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '\\') {
            if (i + 1 < text.size() && (text[i + 1] == ';' || text[i + 1] == '\\')) {
                out.back() += text[++i];
                continue;
            }
            return error::invalid("a '\\' is followed by neither ';' nor '\\' (write \\; for ';', \\\\ for '\\')");
        }
        if (c == ';') {
            out.emplace_back();
            continue;
        }
        out.back() += c;
    }
    return out;
}

std::string escaped(const std::string &s) {
    std::string out;
    for (char c : s) {
        if (c == ';' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    return out;
}

result<int64_t> number(const std::string &key, const std::string &v, int64_t lo, int64_t hi) {
    int64_t    n  = 0;
    const auto rc = std::from_chars(v.data(), v.data() + v.size(), n);
    if (rc.ec != std::errc() || rc.ptr != v.data() + v.size() || n < lo || n > hi) {
        return error::invalid(key + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi) +
                              ", got '" + v.substr(0, 32) + "'");
    }
    return n;
}

// One member.M.KEY=VALUE setting.
std::optional<error> set_member_key(team_member_spec &m, const std::string &key, const std::string &full,
                                    const std::string &v) {
    if (key == "instructions") {
        m.instructions = v;
    } else if (key == "tools") {
        m.tools.clear();
        size_t at = 0;
        while (at <= v.size() && !v.empty()) {
            const auto comma = v.find(',', at);
            const auto tool  = v.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
            const auto colon = tool.find(':');
            const auto kind  = tool.substr(0, colon);
            if (colon == std::string::npos || (kind != "sql" && kind != "mcp") || !plain_name(tool.substr(colon + 1))) {
                return error::invalid(full + ": '" + tool.substr(0, 64) +
                                      "' is not a tool (sql:DATABASE or mcp:LABEL)");
            }
            if (std::find(m.tools.begin(), m.tools.end(), tool) != m.tools.end()) {
                return error::invalid(full + ": '" + tool + "' is given twice");
            }
            m.tools.push_back(tool);
            if (comma == std::string::npos) {
                break;
            }
            at = comma + 1;
        }
    } else if (key == "temperature") {
        float      t  = -1;
        const auto rc = std::from_chars(v.data(), v.data() + v.size(), t);
        if (rc.ec != std::errc() || rc.ptr != v.data() + v.size() || t < 0 || t > 2) {
            return error::invalid(full + " must be a number from 0 to 2, got '" + v.substr(0, 32) + "'");
        }
        m.temperature = t;
    } else if (key == "schema") {
        // Held to a request's response_format bounds here; check_serve_options compiles its grammar once
        // at start (this layer does not link the converter), and each call compiles it again.
        auto schema = json_schema_text(json(v), full, api_limits{});
        if (!schema) {
            return schema.err();
        }
        m.schema = std::move(*schema);
    } else if (key == "tool-choice") {
        if (v != "auto" && v != "required" && v != "none") {
            return error::invalid(full + " must be auto, required or none, got '" + v.substr(0, 32) + "'");
        }
        m.tool_choice = v;
    } else if (key == "max-tool-calls" || key == "max-steps" || key == "max-tokens" || key == "max-time-ms" ||
               key == "max-corrections") {
        const int64_t lo = key == "max-tool-calls" || key == "max-corrections" ? 0 : key == "max-time-ms" ? 100 : 1;
        const int64_t hi = key == "max-tool-calls"    ? 32
                           : key == "max-steps"       ? 33
                           : key == "max-tokens"      ? 65536
                           : key == "max-corrections" ? max_tool_corrections_limit
                                                      : 3'600'000;
        auto          n  = number(full, v, lo, hi);
        if (!n) {
            return n.err();
        }
        if (key == "max-tool-calls") {
            m.budget.max_tool_calls = static_cast<int32_t>(*n);
        } else if (key == "max-steps") {
            m.budget.max_steps = static_cast<int32_t>(*n);
        } else if (key == "max-tokens") {
            m.budget.max_tokens = static_cast<int32_t>(*n);
        } else if (key == "max-corrections") {
            m.budget.max_corrections = static_cast<int32_t>(*n);
        } else {
            m.budget.max_time = std::chrono::milliseconds(*n);
        }
    } else {
        return error::invalid(full + ": unknown key (a member has instructions, tools, max-tool-calls, max-steps, "
                                     "max-tokens, max-time-ms, max-corrections)");
    }
    return std::nullopt;
}

// One KEY=VALUE entry after the first.
std::optional<error> set_team_key(team_spec &t, const std::string &key, const std::string &v) {
    if (key == "instructions") {
        t.captain_instructions = v;
        return std::nullopt;
    }
    if (key.rfind("member.", 0) != 0) {
        return error::invalid("unknown key '" + key.substr(0, 64) +
                              "' (a team has instructions and member.NAME, member.NAME.KEY entries)");
    }
    const std::string rest = key.substr(7);
    const auto        dot  = rest.find('.');
    const std::string name = rest.substr(0, dot);
    if (!plain_name(name)) {
        return error::invalid("'" + key.substr(0, 80) +
                              "': a member's name is letters, digits, '_' and '-' (at most 64)");
    }
    auto it = std::find_if(t.members.begin(), t.members.end(), [&](const auto &m) { return m.name == name; });
    if (dot == std::string::npos) {
        if (it != t.members.end()) {
            return error::invalid("the member '" + name + "' is given twice");
        }
        if (v.empty()) {
            return error::invalid(key + " needs the member's model (member." + name + "=MODEL)");
        }
        team_member_spec m;
        m.name  = name;
        m.model = v;
        t.members.push_back(std::move(m));
        return std::nullopt;
    }
    if (it == t.members.end()) {
        return error::invalid(key + " names no member: declare it first with member." + name + "=MODEL");
    }
    return set_member_key(*it, rest.substr(dot + 1), key, v);
}

} // namespace

result<team_spec> parse_team_spec(const std::string &text) {
    const auto eq = text.find('=');
    team_spec  t;
    t.name = text.substr(0, eq);
    if (eq == std::string::npos || !plain_name(t.name)) {
        return error::invalid("'" + text.substr(0, 80) +
                              "' is not NAME=CAPTAIN_MODEL;member.M=MODEL;... (NAME: letters, digits, '_' and '-')");
    }
    auto entries = split_entries(text.substr(eq + 1));
    if (!entries) {
        return error::invalid("team '" + t.name + "': " + entries.err().message);
    }
    t.captain_model = entries->front();
    if (t.captain_model.empty()) {
        return error::invalid("team '" + t.name + "': the captain's model is missing (NAME=MODEL;...)");
    }
    for (size_t i = 1; i < entries->size(); ++i) {
        const auto &e = (*entries)[i];
        if (e.empty()) {
            continue;
        }
        const auto k = e.find('=');
        if (k == std::string::npos) {
            return error::invalid("team '" + t.name + "': '" + e.substr(0, 64) + "' is not KEY=VALUE");
        }
        if (auto err = set_team_key(t, e.substr(0, k), e.substr(k + 1))) {
            return error::invalid("team '" + t.name + "': " + err->message);
        }
    }
    if (t.members.empty()) {
        return error::invalid("team '" + t.name + "' has no members (member.NAME=MODEL)");
    }
    for (const auto &m : t.members) {
        if (m.tool_choice == "required" && m.tools.empty()) {
            return error::invalid("team '" + t.name + "': member." + m.name +
                                  ".tool-choice=required needs tools (member." + m.name + ".tools=...)");
        }
    }
    return t;
}

std::string format_team_spec(const team_spec &s) {
    std::string out = s.name + "=" + escaped(s.captain_model);
    if (!s.captain_instructions.empty()) {
        out += ";instructions=" + escaped(s.captain_instructions);
    }
    for (const auto &m : s.members) {
        const std::string k = ";member." + m.name;
        out += k + "=" + escaped(m.model);
        if (!m.instructions.empty()) {
            out += k + ".instructions=" + escaped(m.instructions);
        }
        if (!m.tools.empty()) {
            std::string joined;
            for (const auto &t : m.tools) {
                joined += (joined.empty() ? "" : ",") + t;
            }
            out += k + ".tools=" + joined;
        }
        if (m.tool_choice != "auto") {
            out += k + ".tool-choice=" + m.tool_choice;
        }
        if (m.temperature != 1.0f) {
            std::array<char, 32> buf{};
            const auto           rc = std::to_chars(buf.data(), buf.data() + buf.size(), m.temperature);
            out += k + ".temperature=" + std::string(buf.data(), rc.ptr);
        }
        if (!m.schema.empty()) {
            out += k + ".schema=" + escaped(m.schema);
        }
        out += k + ".max-tool-calls=" + std::to_string(m.budget.max_tool_calls);
        if (m.budget.max_steps) {
            out += k + ".max-steps=" + std::to_string(*m.budget.max_steps);
        }
        out += k + ".max-tokens=" + std::to_string(m.budget.max_tokens);
        out += k + ".max-time-ms=" + std::to_string(m.budget.max_time.count());
        out += k + ".max-corrections=" + std::to_string(m.budget.max_corrections);
    }
    return out;
}

std::optional<error> check_team_tools(const team_spec &team, const std::vector<std::string> &sql_databases,
                                      const std::vector<std::string> &mcp_servers) {
    const auto list = [](const std::vector<std::string> &names, const char *flag) {
        std::string s;
        for (const auto &n : names) {
            s += (s.empty() ? "" : ", ") + n;
        }
        return s.empty() ? std::string("none: ") + flag : s;
    };
    for (const auto &m : team.members) {
        for (const auto &t : m.tools) {
            const auto  colon = t.find(':');
            const auto  kind  = t.substr(0, colon);
            const auto  name  = t.substr(colon + 1);
            const auto &known = kind == "sql" ? sql_databases : mcp_servers;
            if (std::find(known.begin(), known.end(), name) == known.end()) {
                return error::invalid("team '" + team.name + "', member '" + m.name + "': the tool '" + t +
                                      "' names no " + (kind == "sql" ? "SQL database" : "MCP server") +
                                      " of this server (it has " +
                                      list(known, kind == "sql" ? "--sql-database" : "--mcp-server") + ")");
            }
        }
    }
    return std::nullopt;
}

std::optional<error> check_team_models(const team_spec &team, const std::function<bool(const std::string &)> &serves,
                                       const std::string &served) {
    const auto check = [&](const std::string &model, const std::string &who) -> std::optional<error> {
        if (model.rfind("team/", 0) == 0) {
            return error::invalid("team '" + team.name + "', " + who + ": the model '" + model +
                                  "' is a team (a team's models are served models, never teams)");
        }
        if (!serves(model)) {
            return error::invalid("team '" + team.name + "', " + who + ": unknown model '" + model +
                                  "' (this server serves: " + served + ")");
        }
        return std::nullopt;
    };
    if (auto err = check(team.captain_model, "the captain")) {
        return err;
    }
    for (const auto &m : team.members) {
        if (auto err = check(m.model, "member '" + m.name + "'")) {
            return err;
        }
    }
    return std::nullopt;
}

namespace {

// What a member's run came to.
struct member_run {
    std::string output, error, outcome = "ok", incomplete_reason;
    int32_t     n_prompt = 0, n_generated = 0;
    route_info  route;
};

class team_member_tool final : public supervised_tool {
  public:
    team_member_tool(std::string team, team_member_spec spec, builtin_toolbox tools, team_runtime rt)
        : team_(std::move(team)), spec_(std::move(spec)), tools_(std::move(tools)), rt_(std::move(rt)) {}

    tool_function function() const override {
        std::string about = spec_.instructions.substr(0, 300);
        if (spec_.schema.empty()) {
            return {
                spec_.name,
                "A member of the team: " + spec_.name + (about.empty() ? std::string() : " (" + about + ")") +
                    ". Give it one task in plain words; it works on it with its own tools and answers with text.",
                R"({"type":"object","properties":{"task":{"type":"string","maxLength":1000}},"required":["task"]})"};
        }
        // An extraction member: its answer is JSON; it may read the caller's files.
        json props = {{"task", {{"type", "string"}, {"maxLength", 1000}}}};
        if (rt_.files) {
            props["file_ids"] = {{"type", "array"},
                                 {"items", {{"type", "string"}, {"pattern", "^file-[0-9a-f]{24}$"}}},
                                 {"maxItems", max_extract_files}};
        }
        return {spec_.name,
                "A member of the team: " + spec_.name + (about.empty() ? std::string() : " (" + about + ")") +
                    ". Give it one task in plain words" + (rt_.files ? " and the ids of files to read" : "") +
                    "; it answers with JSON under its schema.",
                json{{"type", "object"}, {"properties", std::move(props)}, {"required", {"task"}}}.dump()};
    }
    std::string kind() const override { return "team"; }
    std::string server() const override { return team_; }
    std::string item_type() const override { return "team_member_call"; }

    outcome run_supervised(const std::string &arguments_json, const tool_call_context &ctx) const override {
        const auto t0   = std::chrono::steady_clock::now();
        const auto task = read_task(arguments_json);
        member_run run;
        if (!task) {
            run.error   = task.err().message;
            run.outcome = "error";
        } else {
            send(ctx, started_record(ctx.call_id, *task));
            run = run_member(*task, arguments_json, ctx, t0);
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (rt_.on_member_call) {
            rt_.on_member_call(spec_.name, run.outcome, seconds);
        }
        json rec = {{"event", "finished"},
                    {"team", team_},
                    {"member", spec_.name},
                    {"model", spec_.model},
                    {"task", task ? *task : std::string()},
                    {"backend", run.route.backend},
                    {"route", run.route.reason},
                    {"usage", {{"input_tokens", run.n_prompt}, {"output_tokens", run.n_generated}}},
                    {"duration_ms", static_cast<int64_t>(seconds * 1000.0)}};
        if (!run.incomplete_reason.empty()) {
            rec["incomplete_reason"] = run.incomplete_reason;
        }
        return {{std::move(run.output), std::move(run.error)},
                rec.dump(-1, ' ', false, json::error_handler_t::replace)};
    }

  private:
    static result<std::string> read_task(const std::string &arguments_json) {
        const json args = json::parse(arguments_json, nullptr, false);
        if (!args.is_object() || !args.contains("task") || !args["task"].is_string()) {
            return error::invalid("the arguments must be a JSON object with a string \"task\"");
        }
        return args["task"].get<std::string>();
    }

    void send(const tool_call_context &ctx, const json &rec, const std::string &id = "") const {
        server_tool_call ev;
        ev.id     = id.empty() ? ctx.call_id : id;
        ev.type   = item_type();
        ev.name   = spec_.name;
        ev.server = rec.dump(-1, ' ', false, json::error_handler_t::replace);
        if (ctx.emit) {
            ctx.emit(std::move(ev));
        }
    }

    json started_record(const std::string &id, const std::string &task) const {
        return {{"event", "started"},   {"team", team_}, {"member", spec_.name},
                {"model", spec_.model}, {"task", task},  {"id", id}};
    }

    // The member's user message: the task, and with a schema the text of the files the call names.
    result<std::string> member_input(const std::string &task, const std::string &arguments_json) const {
        const json args = json::parse(arguments_json, nullptr, false);
        const auto it   = args.is_object() ? args.find("file_ids") : args.end();
        if (spec_.schema.empty() || it == args.end() || it->is_null()) {
            return task;
        }
        if (!it->is_array()) {
            return error::invalid("file_ids must be an array of file ids", "file_ids");
        }
        std::vector<std::string> ids;
        for (const auto &id : *it) {
            if (!id.is_string()) {
                return error::invalid("file_ids must be an array of file ids", "file_ids");
            }
            ids.push_back(id.get<std::string>());
        }
        return extraction_input(task, ids, rt_.files);
    }

    api_request member_request(const std::string &task) const {
        api_request req;
        req.kind   = api_kind::chat;
        req.model  = spec_.model;
        req.stream = true;
        if (!spec_.instructions.empty()) {
            req.messages.push_back({"system", spec_.instructions, {}, ""});
        }
        req.messages.push_back({"user", task, {}, ""});
        req.sampling.temperature = spec_.temperature;
        req.max_tokens           = spec_.budget.max_tokens;
        req.max_tool_calls       = spec_.budget.max_tool_calls;
        req.max_tool_corrections = spec_.budget.max_corrections;
        req.builtin_choice       = spec_.tool_choice;
        if (!spec_.schema.empty() && tools_.tools.empty()) {
            // Its one step is its answer: generated under the schema. (With tools, the steps call
            // them, and structure_answer shapes the final text afterwards.)
            req.constraint = {constraint_kind::json_schema, "member." + spec_.name + ".schema", spec_.schema, ""};
        }
        // One call per step, then its result: a second call cut off by the token budget would take
        // the whole step (and the complete first call) with it.
        req.parallel_tool_calls = false;
        return req;
    }

    // Runs the member on its model to the end (or its budget, its time, a cancellation).
    member_run run_member(const std::string &task, const std::string &arguments_json, const tool_call_context &ctx,
                          std::chrono::steady_clock::time_point t0) const {
        member_run run;
        const auto fail = [&run](std::string why, const char *outcome) {
            run.error   = std::move(why);
            run.outcome = outcome;
            return run;
        };
        if (ctx.cancel->cancelled()) {
            return fail("the request was cancelled", "cancelled");
        }
        auto be = rt_.resolve ? rt_.resolve(spec_.model) : result<member_backend>(error::invalid("no backends"));
        if (!be) {
            return fail("the model '" + spec_.model + "' cannot run this member: " + be.err().message, "error");
        }
        run.route = {be->where, be->where};
        tool_loop_limits limits;
        limits.max_time  = spec_.budget.max_time;
        limits.max_steps = spec_.budget.max_steps;
        limits.on_call   = rt_.on_tool_call;
        auto loop        = std::make_shared<tool_loop_backend>(be->backend, tools_, rt_.post, limits);
        auto waiter      = std::make_shared<waker>();
        std::shared_ptr<generation_stream> stream;
        try {
            auto input = member_input(task, arguments_json);
            if (!input) {
                return fail(input.err().message, "error");
            }
            auto prepared = loop->prepare(member_request(*input));
            if (!prepared) {
                return fail(prepared.err().message, "error");
            }
            auto s = loop->submit(std::make_shared<const backend_request>(std::move(*prepared)),
                                  [waiter] { waiter->notify(); });
            if (!s) {
                return fail(s.err().message, "error");
            }
            stream = std::move(*s);
        } catch (const std::exception &e) {
            return fail(std::string("the member failed: ") + e.what(), "error");
        }
        const auto hook = ctx.cancel->subscribe([stream, waiter] {
            stream->cancel();
            waiter->notify();
        });
        follow(*stream, *waiter, ctx, t0 + spec_.budget.max_time, run);
        ctx.cancel->unsubscribe(hook);
        if (!spec_.schema.empty() && run.error.empty()) {
            structure_answer(*be->backend, task, ctx, t0, run);
        }
        return run;
    }

    // A member with a schema: its answer must be JSON. Without tools its one step was generated
    // under the schema; with tools one more generation on its model writes the answer it reached
    // as JSON under the schema, within what is left of its token and time budgets.
    void structure_answer(generation_backend &be, const std::string &task, const tool_call_context &ctx,
                          std::chrono::steady_clock::time_point t0, member_run &run) const {
        if (!tools_.tools.empty()) {
            const int32_t left = spec_.budget.max_tokens - run.n_generated;
            if (left <= 0) {
                run.error = "the member '" + spec_.name +
                            "' stopped at its budget (max_output_tokens) before it wrote its answer as JSON";
                run.incomplete_reason = "max_output_tokens";
                run.outcome           = "budget";
                return;
            }
            auto req = structured_request(spec_.model, spec_.instructions, task, spec_.schema,
                                          "member." + spec_.name + ".schema", left, spec_.temperature);
            req.messages.push_back({"assistant", run.output, {}, ""});
            req.messages.push_back({"user", "Write that answer as JSON under the schema, and nothing else.", {}, ""});
            auto g = run_generation(be, std::move(req), *ctx.cancel, t0 + spec_.budget.max_time);
            run.n_prompt += g.n_prompt;
            run.n_generated += g.n_generated;
            if (!g.error.empty()) {
                run.error = "the member '" + spec_.name + "' could not write its answer as JSON: " + g.error;
                run.incomplete_reason = g.incomplete_reason;
                run.outcome           = g.outcome;
                return;
            }
            run.output = std::move(g.text);
        }
        if (auto bad = check_json_answer(run.output)) {
            run.error   = "the member '" + spec_.name + "': " + bad->message;
            run.outcome = "error";
        }
    }

    // Reads the member's events until its last one; fills `run`.
    void follow(generation_stream &stream, waker &waiter, const tool_call_context &ctx,
                std::chrono::steady_clock::time_point deadline, member_run &run) const {
        std::string text;
        size_t      nested = 0;
        for (;;) {
            for (auto &ev : stream.take()) {
                for (auto &c : ev.server_calls) {
                    json rec = {{"event", "tool_call"},
                                {"team", team_},
                                {"member", spec_.name},
                                {"parent_id", ctx.call_id},
                                {"call", builtin_call_item(c)}};
                    send(ctx, rec, ctx.call_id + "_" + std::to_string(nested++));
                }
                if (ev.err) {
                    run.error   = ev.err->message;
                    run.outcome = "error";
                    return;
                }
                text += ev.content;
                if (ev.finish == finish_reason::none) {
                    continue;
                }
                if (auto r = stream.route(); !r.backend.empty()) {
                    run.route = r;
                }
                run.output      = ev.message ? ev.message->content : text;
                run.n_prompt    = ev.n_prompt;
                run.n_generated = ev.n_generated;
                if (ev.finish == finish_reason::length) {
                    run.incomplete_reason = ev.incomplete_reason.empty() ? "max_output_tokens" : ev.incomplete_reason;
                    run.error = "the member '" + spec_.name + "' stopped at its budget (" + run.incomplete_reason +
                                ") before it finished" +
                                (run.output.empty() ? std::string() : "; what it had so far: " + run.output);
                    run.outcome = "budget";
                }
                return;
            }
            if (ctx.cancel->cancelled()) {
                run.error   = "the request was cancelled";
                run.outcome = "cancelled";
                return;
            }
            if (!waiter.wait(deadline) && std::chrono::steady_clock::now() >= deadline) {
                stream.cancel();
                run.error = "the member '" + spec_.name + "' ran past its time budget (" +
                            std::to_string(spec_.budget.max_time.count()) + " ms)";
                run.outcome = "timeout";
                return;
            }
        }
    }

    std::string      team_;
    team_member_spec spec_;
    builtin_toolbox  tools_;
    team_runtime     rt_;
};

} // namespace

std::shared_ptr<builtin_tool> make_team_member_tool(std::string team, team_member_spec member, builtin_toolbox tools,
                                                    team_runtime rt) {
    return std::make_shared<team_member_tool>(std::move(team), std::move(member), std::move(tools), std::move(rt));
}

json builtin_call_item(const server_tool_call &c) {
    if (c.type == "extract_call") {
        return extract_call_item(c);
    }
    return {{"type", c.type},
            {"id", c.id},
            {"status", c.error.empty() ? "completed" : "failed"},
            {"name", c.name},
            {c.type == "mcp_call" ? "server_label" : "database", c.server},
            {"arguments", c.arguments},
            {"output", c.error.empty() ? json(c.output) : json(nullptr)},
            {"error", c.error.empty() ? json(nullptr) : json(c.error)}};
}

std::optional<team_trace_event> read_team_event(const server_tool_call &c) {
    if (c.type != "team_member_call") {
        return std::nullopt;
    }
    const json rec = json::parse(c.server, nullptr, false);
    if (!rec.is_object() || !rec.contains("event") || !rec["event"].is_string()) {
        return std::nullopt;
    }
    const auto       event = rec["event"].get<std::string>();
    team_trace_event out;
    const auto       str = [&rec](const char *k) { return rec.value(k, std::string()); };
    if (event == "tool_call") {
        out.what              = team_trace_event::kind::tool_call;
        out.member_call_id    = str("parent_id");
        out.item              = rec.value("call", json::object());
        out.item["team"]      = str("team");
        out.item["member"]    = str("member");
        out.item["parent_id"] = out.member_call_id;
        return out;
    }
    out.member_call_id = c.id;
    out.item           = {{"type", "team_member_call"},
                          {"id", c.id},
                          {"status", "in_progress"},
                          {"team", str("team")},
                          {"member", str("member")},
                          {"name", c.name},
                          {"task", str("task")},
                          {"arguments", c.arguments.empty() ? json({{"task", str("task")}}).dump() : c.arguments},
                          {"model", str("model")},
                          {"backend", nullptr},
                          {"route", nullptr},
                          {"output", nullptr},
                          {"error", nullptr},
                          {"usage", nullptr},
                          {"duration_ms", nullptr}};
    if (event == "started") {
        out.what = team_trace_event::kind::started;
        return out;
    }
    out.what            = team_trace_event::kind::finished;
    out.item["status"]  = c.error.empty() ? "completed" : rec.contains("incomplete_reason") ? "incomplete" : "failed";
    out.item["backend"] = str("backend");
    out.item["route"]   = str("route");
    out.item["output"]  = c.error.empty() ? json(c.output) : json(nullptr);
    out.item["error"]   = c.error.empty() ? json(nullptr) : json(c.error);
    out.item["usage"]   = rec.value("usage", json(nullptr));
    out.item["duration_ms"] = rec.value("duration_ms", json(nullptr));
    if (rec.contains("incomplete_reason")) {
        out.item["incomplete_reason"] = rec["incomplete_reason"];
    }
    return out;
}

json trace_tree(const std::vector<server_tool_call> &calls) {
    json                          tree = json::array();
    std::map<std::string, size_t> at; // a member call's place in the tree
    for (const auto &c : calls) {
        auto ev = read_team_event(c);
        if (!ev) {
            tree.push_back(builtin_call_item(c));
            continue;
        }
        auto it = at.find(ev->member_call_id);
        if (ev->what == team_trace_event::kind::tool_call) {
            if (it != at.end()) {
                ev->item.erase("team");
                ev->item.erase("parent_id");
                tree[it->second]["calls"].push_back(std::move(ev->item));
            }
            continue;
        }
        if (it == at.end()) {
            ev->item["calls"]      = json::array();
            at[ev->member_call_id] = tree.size();
            tree.push_back(std::move(ev->item));
            continue;
        }
        auto kept         = std::move(tree[it->second]["calls"]);
        ev->item["calls"] = std::move(kept);
        tree[it->second]  = std::move(ev->item);
    }
    return tree;
}

} // namespace inferbox

#include "cli/team_command.h"

#include "cli/output.h"
#include "tools/curl_http.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <set>
#include <string>

namespace inferbox {

namespace {

using json = nlohmann::json;

constexpr size_t max_task_bytes   = size_t{256} << 10;
constexpr size_t max_event_bytes  = size_t{8} << 20;   // one event of the stream
constexpr size_t max_stream_bytes = size_t{256} << 20; // the whole stream
constexpr size_t max_error_bytes  = size_t{64} << 10;  // an error's body
constexpr size_t shown_chars      = 240;               // of a task, arguments, an output, on one line

struct team_run_options {
    std::string name, task;
    std::string url = "http://127.0.0.1:8000";
    std::string api_key;
    std::string member;                 // non-empty: the captain's first step calls this member
    int32_t     max_output_tokens = 0;  // 0: the server's default
    double      temperature       = -1; // < 0: the server's default
    int32_t     timeout_s         = 600;
};

// Text from the server on the terminal: its lines kept, every other control character (C0, DEL,
// C1) shown as '?', so a model's output cannot drive the terminal.
std::string terminal_text(const std::string &s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
            static_cast<unsigned char>(s[i + 1]) <= 0x9f) {
            out += '?'; // a C1 control character (U+0080..U+009F)
            ++i;
        } else if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) {
            out += '?';
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

std::string str(const json &j, const char *key) {
    return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

int64_t num(const json &j, const char *key) {
    return j.is_object() && j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
}

// The error message of a JSON error body ({"error": {"message"}}), or the body's start.
std::string server_message(const std::string &body) {
    const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("error") && j["error"].is_object()) {
        std::string m = str(j["error"], "message");
        if (!m.empty()) {
            return m;
        }
    }
    return body.empty() ? std::string("(no message)") : display_text(body, shown_chars);
}

std::vector<std::pair<std::string, std::string>> auth_headers(const team_run_options &o) {
    std::vector<std::pair<std::string, std::string>> h;
    if (!o.api_key.empty()) {
        h.emplace_back("Authorization", "Bearer " + o.api_key);
    }
    return h;
}

// Prints a team run's stream of Responses events as a trace; remembers how it ended.
class trace_printer {
  public:
    // One event of the stream; false once the run ended (completed, incomplete or failed).
    bool on_event(const json &ev) {
        const std::string type = str(ev, "type");
        if (type == "response.output_item.added") {
            item_added(ev.value("item", json::object()));
        } else if (type == "response.output_item.done") {
            item_done(ev.value("item", json::object()));
        } else if (type == "response.output_text.delta") {
            const std::string delta = str(ev, "delta");
            out(terminal_text(delta));
        } else if (type == "response.completed" || type == "response.incomplete") {
            end_text();
            final_ = ev.value("response", json::object());
            return false;
        } else if (type == "response.failed" || type == "error") {
            end_text();
            const json &r = ev.contains("response") ? ev["response"] : ev;
            failure_ = r.contains("error") && r["error"].is_object() ? str(r["error"], "message") : str(r, "message");
            if (failure_->empty()) {
                failure_ = "the run failed (no message)";
            }
            return false;
        }
        return true;
    }

    const std::optional<json>        &final_response() const { return final_; }
    const std::optional<std::string> &failure() const { return failure_; }

    // The answer and the run's status and usage, once it completed.
    void summary(double seconds) const {
        const json &r      = *final_;
        std::string answer = last_message_text(r);
        std::string status = str(r, "status");
        if (status == "incomplete" && r.contains("incomplete_details") && r["incomplete_details"].is_object()) {
            status += " (" + str(r["incomplete_details"], "reason") + ")";
        }
        const json usage = r.value("usage", json::object());
        out("answer: " +
            (answer.empty() ? std::string("(none: the run ended before the captain answered)")
                            : terminal_text(answer)) +
            "\n");
        char line[512];
        std::snprintf(
            line, sizeof line, "%s: response %s, captain %lld in + %lld out tokens, %d member call%s, %.1f s\n",
            status.c_str(), display_text(str(r, "id"), 128).c_str(), static_cast<long long>(num(usage, "input_tokens")),
            static_cast<long long>(num(usage, "output_tokens")), member_calls_, member_calls_ == 1 ? "" : "s", seconds);
        out(line);
    }

  private:
    static void out(const std::string &s) {
        std::fputs(s.c_str(), stdout);
        std::fflush(stdout);
    }

    static std::string last_message_text(const json &r) {
        std::string text;
        for (const auto &item : r.value("output", json::array())) {
            if (str(item, "type") != "message") {
                continue;
            }
            text.clear();
            for (const auto &part : item.value("content", json::array())) {
                text += str(part, "text");
            }
        }
        return text;
    }

    void end_text() {
        if (in_text_) {
            out("\n");
            in_text_ = false;
        }
    }

    void item_added(const json &item) {
        const std::string type = str(item, "type");
        if (type == "message") {
            end_text();
            out("captain: ");
            in_text_ = true;
        } else if (type == "team_member_call") {
            end_text();
            if (open_members_.empty()) {
                out("captain, step " + std::to_string(++step_) + ":\n");
            }
            open_members_.insert(str(item, "id"));
            ++member_calls_;
            out("  -> " + display_text(str(item, "member"), 64) + ": " + display_text(str(item, "task"), shown_chars) +
                "\n");
        }
    }

    void item_done(const json &item) {
        const std::string type = str(item, "type");
        if (type == "message") {
            end_text();
        } else if (type == "team_member_call") {
            member_done(item);
        } else if (type == "sql_call" || type == "mcp_call") {
            tool_done(item);
        }
    }

    void member_done(const json &item) {
        open_members_.erase(str(item, "id"));
        const std::string member = display_text(str(item, "member"), 64);
        std::string       status = str(item, "status");
        if (!str(item, "incomplete_reason").empty()) {
            status += " (" + str(item, "incomplete_reason") + ")";
        }
        const std::string backend = str(item, "backend"), route = str(item, "route");
        const json        usage = item.value("usage", json::object());
        std::string       where = backend.empty() ? std::string("?") : display_text(backend, 64);
        if (!route.empty() && route != backend) {
            where += " (route " + display_text(route, 64) + ")";
        }
        out("  <- " + member + " " + status + ": model " + display_text(str(item, "model"), 64) + " on " + where +
            ", " + std::to_string(num(usage, "input_tokens")) + " in + " + std::to_string(num(usage, "output_tokens")) +
            " out tokens, " + std::to_string(num(item, "duration_ms")) + " ms\n");
        if (!str(item, "error").empty()) {
            out("     error: " + display_text(str(item, "error"), shown_chars) + "\n");
        } else {
            out("     output: " + display_text(str(item, "output"), shown_chars) + "\n");
        }
    }

    void tool_done(const json &item) {
        const std::string type = str(item, "type");
        const std::string who  = str(item, "member").empty() ? std::string("captain") : str(item, "member");
        const std::string what = type == "sql_call" ? "sql (" + str(item, "database") + ")"
                                                    : "mcp " + str(item, "server_label") + "/" + str(item, "name");
        std::string       line = "     " + display_text(who, 64) + " used " + display_text(what, 128) + " " +
                           display_text(str(item, "arguments"), shown_chars);
        if (!str(item, "error").empty()) {
            line += " => failed: " + display_text(str(item, "error"), shown_chars);
        } else {
            line += " => " + display_text(str(item, "output"), shown_chars);
        }
        out(line + "\n");
    }

    int                        step_ = 0, member_calls_ = 0;
    std::set<std::string>      open_members_;
    bool                       in_text_ = false;
    std::optional<json>        final_;
    std::optional<std::string> failure_;
};

// The team's line of GET /v1/models, printed as the trace's head; nothing when the server does not
// list it (the run's own error then names the problem).
std::optional<int> print_team_head(curl_http_client &http, const team_run_options &o, const std::string &base) {
    curl_http_request req;
    req.method         = "GET";
    req.url            = base + "/v1/models";
    req.headers        = auth_headers(o);
    req.timeout        = std::chrono::seconds(std::min(o.timeout_s, 30));
    req.max_body_bytes = size_t{16} << 20;
    auto r             = http.perform(req);
    if (!r) {
        return cli_fail("team", r.err().message);
    }
    if (r->status != 200) {
        return cli_fail("team", "the server answered GET /v1/models with HTTP " + std::to_string(r->status) + ": " +
                                    server_message(r->body));
    }
    const json models = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    for (const auto &m : models.is_object() ? models.value("data", json::array()) : json::array()) {
        if (str(m, "id") != "team/" + o.name || !m.contains("team") || !m["team"].is_object()) {
            continue;
        }
        const json &t = m["team"];
        std::printf("team/%s at %s\n  captain: %s\n", o.name.c_str(), base.c_str(),
                    display_text(t.contains("captain") ? str(t["captain"], "model") : std::string(), 64).c_str());
        std::string members;
        for (const auto &member : t.value("members", json::array())) {
            std::string tools;
            for (const auto &tool : member.value("tools", json::array())) {
                tools += (tools.empty() ? "; tools " : ", ") + (tool.is_string() ? tool.get<std::string>() : "");
            }
            members += (members.empty() ? "" : ", ") + display_text(str(member, "name"), 64) + " (" +
                       display_text(str(member, "model") + tools, 128) + ")";
        }
        std::printf("  members: %s\n", members.c_str());
    }
    return std::nullopt;
}

json request_body(const team_run_options &o) {
    json body = {{"model", "team/" + o.name}, {"input", o.task}, {"stream", true}};
    if (!o.member.empty()) {
        body["tool_choice"] = {{"type", "function"}, {"name", o.member}};
    }
    if (o.max_output_tokens > 0) {
        body["max_output_tokens"] = o.max_output_tokens;
    }
    if (o.temperature >= 0) {
        body["temperature"] = o.temperature;
    }
    return body;
}

int run_team(const team_run_options &o) {
    const bool good_name =
        !o.name.empty() && o.name.size() <= 64 && std::all_of(o.name.begin(), o.name.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
        });
    if (!good_name) {
        return cli_fail("team", "'" + display_text(o.name, 64) +
                                    "' is not a team name (letters, digits, '_' and '-', at most 64)");
    }
    if (o.task.empty() || o.task.size() > max_task_bytes) {
        return cli_fail("team", "the task must be 1 to " + std::to_string(max_task_bytes) + " bytes");
    }
    if (o.url.rfind("http://", 0) != 0 && o.url.rfind("https://", 0) != 0) {
        return cli_fail("team", "--url '" + display_text(o.url, 128) + "' is not an http:// or https:// URL");
    }
    if (std::any_of(o.api_key.begin(), o.api_key.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
        return cli_fail("team", "the API key holds a control character");
    }
    std::string base = o.url;
    while (!base.empty() && base.back() == '/') {
        base.pop_back();
    }
    curl_http_client http;
    if (auto failed = print_team_head(http, o, base)) {
        return *failed;
    }
    std::printf("task: %s\n", display_text(o.task, shown_chars).c_str());
    std::fflush(stdout);

    const auto        started = std::chrono::steady_clock::now();
    trace_printer     trace;
    sse_parser        sse(max_event_bytes);
    std::string       error_body;
    bool              ended = false;
    curl_http_request req;
    req.method  = "POST";
    req.url     = base + "/v1/responses";
    req.headers = auth_headers(o);
    req.headers.emplace_back("Content-Type", "application/json");
    req.headers.emplace_back("Accept", "text/event-stream");
    req.body           = request_body(o).dump(-1, ' ', false, json::error_handler_t::replace);
    req.timeout        = std::chrono::seconds(o.timeout_s);
    req.max_body_bytes = max_stream_bytes;
    req.on_body        = [&](const curl_http_response &head, std::string_view chunk) {
        if (head.status != 200) {
            error_body.append(chunk.substr(0, max_error_bytes - std::min(max_error_bytes, error_body.size())));
            return true;
        }
        return sse.feed(chunk, [&](const std::string &, const std::string &data) {
            const json ev = json::parse(data, nullptr, /*allow_exceptions=*/false);
            ended         = ev.is_object() && !trace.on_event(ev);
            return !ended;
        });
    };
    auto r = http.perform(req);
    if (!r) {
        return cli_fail("team", r.err().message);
    }
    if (r->status != 200) {
        return cli_fail("team",
                        "the server answered HTTP " + std::to_string(r->status) + ": " + server_message(error_body));
    }
    if (sse.too_long()) {
        return cli_fail("team", "the server sent an event over " + std::to_string(max_event_bytes) + " bytes");
    }
    if (trace.failure()) {
        return cli_fail("team", "the run failed: " + *trace.failure());
    }
    if (!ended || !trace.final_response()) {
        return cli_fail("team", "the server closed the stream before the run ended");
    }
    trace.summary(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    return 0;
}

} // namespace

void add_team_commands(CLI::App &app, std::function<int()> &action) {
    auto  o    = std::make_shared<team_run_options>();
    auto *team = app.add_subcommand("team", "work with the teams of a running inferbox (serve --team)");
    team->require_subcommand(1);
    auto *run = team->add_subcommand("run", "run team/NAME on a task and print its trace live: captain steps, member "
                                            "calls and their tools, then the answer");
    run->add_option("name", o->name, "the team's name (served as the model team/NAME)")->required();
    run->add_option("task", o->task, "the task, as the user's message")->required();
    run->add_option("--url", o->url, "base URL of the inferbox server")->capture_default_str();
    run->add_option("--api-key", o->api_key, "API key (default: INFERBOX_API_KEY)")->envname("INFERBOX_API_KEY");
    run->add_option("--member", o->member, "the captain's first step calls this member (tool_choice)");
    run->add_option("--max-output-tokens", o->max_output_tokens, "tokens the captain generates over all its steps")
        ->check(CLI::Range(1, 1 << 20));
    run->add_option("--temperature", o->temperature, "the captain's sampling temperature")->check(CLI::Range(0.0, 2.0));
    run->add_option("--timeout", o->timeout_s, "seconds the whole run may take")
        ->capture_default_str()
        ->check(CLI::Range(1, 86400));
    run->callback([&action, o] { action = [o] { return run_team(*o); }; });
}

} // namespace inferbox

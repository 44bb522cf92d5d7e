#include "api/openai.h"

#include "agent/team.h"
#include "api/errors.h"
#include "api/routes.h"
#include "common/utf8.h"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <random>

namespace inferbox {

using json = nlohmann::json;

std::string dump_json(const json &j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string random_id(const char *prefix) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    char                                buf[17];
    snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
    return std::string(prefix) + buf;
}

namespace {

const char *finish_str(finish_reason f) {
    switch (f) {
    case finish_reason::stop:
        return "stop";
    case finish_reason::length:
        return "length";
    case finish_reason::none:
        break;
    }
    return nullptr;
}

json bytes_of(const std::string &s) {
    json arr = json::array();
    for (unsigned char c : s) {
        arr.push_back(static_cast<int>(c));
    }
    return arr;
}

} // namespace

usage_counts job_state::usage() const {
    usage_counts u;
    const auto   n = static_cast<size_t>(std::max(1, req().n));
    for (size_t c = 0; c < choices.size(); ++c) {
        if (c % n == 0) {
            u.prompt += choices[c].n_prompt;
            u.cached += choices[c].n_cached;
        }
        u.generated += choices[c].n_generated;
    }
    return u;
}

const char *job_state::finish_of(const choice_state &c) const {
    if (c.finish == finish_reason::stop && !c.tool_calls.empty()) {
        return "tool_calls";
    }
    return finish_str(c.finish);
}

namespace {

// OpenAI's Chat Completions (chat.completion, chat.completion.chunk) and Completions
// (text_completion) shapes.
class openai_writer final : public answer_writer {
  public:
    explicit openai_writer(bool chat) : chat_(chat) {}

    std::string new_id() const override { return random_id(chat_ ? "chatcmpl-" : "cmpl-"); }

    void opened(http_exchange &ex, const job_state &s) override {
        for (size_t c = 0; c < s.choices.size(); ++c) {
            json        delta = chat_ ? json{{"role", "assistant"}, {"content", ""}} : json();
            std::string text  = (!chat_ && s.req().echo) ? s.echo_text(c) : std::string();
            if (chat_ || !text.empty()) {
                send_chunk(ex, s, c, delta, text, json(nullptr), nullptr);
            }
        }
    }

    void text(http_exchange &ex, const job_state &s, size_t choice, const std::string &delta,
              const json &logprobs) override {
        if (!delta.empty() || !logprobs.is_null()) {
            send_chunk(ex, s, choice, json(), delta, logprobs, nullptr);
        }
    }

    void tool_call(http_exchange &ex, const job_state &s, size_t choice, size_t call, bool first,
                   const std::string &args_delta) override {
        // OpenAI's shape: the call's first chunk has its index, id, type and name (and no
        // arguments yet); later chunks only the index and an arguments fragment.
        const auto &tc = s.choices[choice].tool_calls[call];
        json        d  = {{"index", call}, {"function", {{"arguments", args_delta}}}};
        if (first) {
            d["id"]               = tc.id;
            d["type"]             = "function";
            d["function"]["name"] = tc.name;
        }
        send_chunk(ex, s, choice, json{{"tool_calls", json::array({d})}}, "", json(nullptr), nullptr);
    }

    void choice_done(http_exchange &ex, const job_state &s, size_t choice) override {
        send_chunk(ex, s, choice, json::object(), "", json(nullptr), s.finish_of(s.choices[choice]));
    }

    // A call the server ran (a team member's start or end, a member's own tool call), live: a chunk
    // without choices whose nvext.trace_event is the call's item (the whole tree comes at the end).
    void server_call(http_exchange &ex, const job_state &s, size_t choice) override {
        if (!chat_) {
            return;
        }
        const auto &call  = s.choices[choice].server_calls.back();
        auto        team  = read_team_event(call);
        json        item  = team ? std::move(team->item) : builtin_call_item(call);
        json        chunk = {
                   {"id", s.id},          {"object", "chat.completion.chunk"}, {"created", s.created},
                   {"model", s.model_id}, {"choices", json::array()},          {"nvext", {{"trace_event", std::move(item)}}}};
        ex.send("data: " + dump_json(chunk) + "\n\n");
    }

    void completed(http_exchange &ex, const job_state &s) override {
        if (s.req().stream) {
            if (s.req().include_usage) {
                json chunk = {{"id", s.id},
                              {"object", chat_ ? "chat.completion.chunk" : "text_completion"},
                              {"created", s.created},
                              {"model", s.model_id},
                              {"choices", json::array()},
                              {"usage", usage_json(s)}};
                ex.send("data: " + dump_json(chunk) + "\n\n");
            }
            ex.send("data: [DONE]\n\n");
            ex.end_stream();
            return;
        }
        json choices = json::array();
        for (size_t i = 0; i < s.choices.size(); ++i) {
            const auto &c = s.choices[i];
            json        ch;
            if (chat_) {
                json message = {{"role", "assistant"}, {"content", c.text}};
                if (!c.tool_calls.empty()) {
                    message["tool_calls"] = tool_calls_json(c.tool_calls);
                    if (c.text.empty()) {
                        message["content"] = nullptr;
                    }
                }
                ch = {{"index", i},
                      {"message", std::move(message)},
                      {"logprobs", logprobs_json(s, c)},
                      {"finish_reason", s.finish_of(c)}};
            } else {
                const std::string echo = s.req().echo ? s.echo_text(i) : "";
                ch                     = {{"index", i},
                                          {"text", echo + c.text},
                                          {"logprobs", logprobs_json(s, c)},
                                          {"finish_reason", finish_str(c.finish)}};
            }
            choices.push_back(std::move(ch));
        }
        json body = {{"id", s.id},           {"object", chat_ ? "chat.completion" : "text_completion"},
                     {"created", s.created}, {"model", s.model_id},
                     {"choices", choices},   {"usage", usage_json(s)}};
        if (chat_) {
            body["system_fingerprint"] = nullptr;
        }
        if (!s.route.backend.empty()) {
            body["nvext"] = route_json(s);
        }
        if (chat_ && !s.choices.empty() && !s.choices.front().server_calls.empty()) {
            // The server's own calls (a team's members and their tools): agent/team.h.
            body["nvext"]["trace"] = trace_tree(s.choices.front().server_calls);
        }
        ex.respond(http::status::ok, dump_json(body), "application/json");
    }

    void stream_error(http_exchange &ex, const job_state & /*s*/, const error &err) override {
        ex.send("data: " + error_body(err) + "\n\n");
        ex.send("data: [DONE]\n\n");
        ex.end_stream();
    }

  private:
    static json route_json(const job_state &s) { return {{"backend", s.route.backend}, {"route", s.route.reason}}; }

    static json usage_json(const job_state &s) {
        const auto u = s.usage();
        return {{"prompt_tokens", u.prompt},
                {"completion_tokens", u.generated},
                {"total_tokens", u.prompt + u.generated},
                {"prompt_tokens_details", {{"cached_tokens", u.cached}}}};
    }

    static json tool_calls_json(const std::vector<chat_tool_call> &calls) {
        json arr = json::array();
        for (const auto &tc : calls) {
            arr.push_back(
                {{"id", tc.id}, {"type", "function"}, {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
        }
        return arr;
    }

    json logprobs_json(const job_state &s, const choice_state &c) const {
        if (s.req().sampling.top_logprobs < 0) {
            return nullptr;
        }
        if (chat_) {
            return json{{"content", c.logprobs_content}};
        }
        return json{{"tokens", c.lp_tokens},
                    {"token_logprobs", c.lp_values},
                    {"top_logprobs", c.lp_top},
                    {"text_offset", c.lp_offsets}};
    }

    void send_chunk(http_exchange &ex, const job_state &s, size_t index, const json &delta, const std::string &text,
                    const json &logprobs, const char *finish) const {
        json choice;
        if (chat_) {
            json d = delta.is_null() ? json::object() : delta;
            if (!text.empty()) {
                d["content"] = text;
            }
            choice = {{"index", index}, {"delta", d}, {"logprobs", logprobs}};
        } else {
            choice = {{"index", index}, {"text", text}, {"logprobs", logprobs}};
        }
        choice["finish_reason"] = finish == nullptr ? json(nullptr) : json(finish);
        json chunk              = {{"id", s.id},
                                   {"object", chat_ ? "chat.completion.chunk" : "text_completion"},
                                   {"created", s.created},
                                   {"model", s.model_id},
                                   {"choices", json::array({choice})}};
        if (s.req().include_usage) {
            chunk["usage"] = nullptr;
        }
        if (finish != nullptr && !s.route.backend.empty()) {
            chunk["nvext"] = route_json(s); // on each choice's last chunk: where it ran
        }
        if (finish != nullptr && chat_ && !s.choices[index].server_calls.empty()) {
            chunk["nvext"]["trace"] = trace_tree(s.choices[index].server_calls); // the whole trace, at the end
        }
        ex.send("data: " + dump_json(chunk) + "\n\n");
    }

    bool chat_;
};

// One request in flight: submits it to the backend, collects the backend's events into job_state
// and has the writer answer. Backend-agnostic: tool calls arrive already read out of the text.
class completion_job : public std::enable_shared_from_this<completion_job> {
  public:
    completion_job(std::shared_ptr<http_exchange> ex, std::shared_ptr<generation_backend> backend,
                   std::shared_ptr<const backend_request> req, std::string model_id, job_context ctx,
                   std::shared_ptr<answer_writer> writer)
        : ex_(std::move(ex)), backend_(std::move(backend)), ctx_(std::move(ctx)), writer_(std::move(writer)) {
        s_.run      = std::move(req);
        s_.model_id = std::move(model_id);
        s_.tools    = s_.run->tools;
        s_.id       = writer_->new_id();
        s_.created =
            std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        s_.choices.resize(s_.run->n_choices());
        if (s_.req().kind == api_kind::completion && s_.req().echo) {
            // text_offset indexes the choice's whole text, which begins with the echoed prompt.
            for (size_t c = 0; c < s_.choices.size(); ++c) {
                s_.choices[c].text_offset = s_.echo_text(c).size();
            }
        }
    }

    void start() {
        self_ = shared_from_this(); // the job keeps itself alive until it answered or the client left
        std::weak_ptr<completion_job> weak = self_;
        if (ctx_.metrics) {
            ctx_.metrics->requests_started.inc();
        }
        if (ctx_.limiter != nullptr) {
            int64_t n_prompt = 0;
            for (const auto &p : s_.run->prompts) {
                n_prompt += static_cast<int64_t>(p.tokens.size());
            }
            ctx_.limiter->charge_tokens(ctx_.key_index, n_prompt);
        }
        ex_->on_disconnect([weak] {
            if (auto self = weak.lock()) {
                self->cancel();
                if (!self->finished_ && self->ctx_.metrics) {
                    self->ctx_.metrics->requests_cancelled.inc();
                }
                self->charge_generated();
                self->finished_ = true;
                self->self_.reset();
            }
        });
        if (ctx_.on_submit) {
            ctx_.on_submit(std::chrono::duration<double>(std::chrono::steady_clock::now() - ex_->received()).count());
        }
        auto stream = backend_->submit(s_.run, [weak, exec = ex_->executor()] {
            boost::asio::post(exec, [weak] {
                if (auto self = weak.lock()) {
                    self->drain();
                }
            });
        });
        if (!stream) {
            fail(stream.err());
            return;
        }
        stream_ = std::move(*stream);
        if (!stream_->open_at_first_event()) {
            open_stream();
        }
        arm_deadline();
    }

  private:
    // The request's deadline (api_request::deadline): when it passes first, the generation is
    // cancelled and the answer is a 504 (an error event once streaming).
    void arm_deadline() {
        const auto deadline = s_.req().deadline;
        if (deadline == std::chrono::steady_clock::time_point{}) {
            return;
        }
        deadline_ = std::make_unique<boost::asio::steady_timer>(ex_->executor(), deadline);
        deadline_->async_wait([weak = weak_from_this()](const boost::system::error_code &ec) {
            auto self = weak.lock();
            if (ec || !self || self->finished_) {
                return;
            }
            const auto ms = self->s_.req().timeout ? self->s_.req().timeout->count() : 0;
            self->cancel();
            self->fail(error{error_kind::timeout,
                             "the request did not finish within its deadline of " + std::to_string(ms) + " ms", "",
                             "deadline_exceeded"});
        });
    }

    // Streaming only: the answer's head and the writer's opening; from here on errors are
    // in-stream, never a second response.
    void open_stream() {
        if (!s_.req().stream || stream_open_) {
            return;
        }
        note_route();
        ex_->start_stream({});
        stream_open_ = true;
        writer_->opened(*ex_, s_);
    }

    // A stream that moved after the answer started (mid-stream failover): the rest of the answer
    // (nvext), the access log and the routing counters say where it finished.
    void follow_route() {
        if (!route_noted_ || s_.route.backend.empty()) {
            return;
        }
        auto r = stream_->route();
        if (r.backend == s_.route.backend && r.reason == s_.route.reason) {
            return;
        }
        ex_->log_field("finished_on", r.backend);
        if (ctx_.on_route) {
            ctx_.on_route(r);
        }
        s_.route = std::move(r);
    }

    // Where the request ran and why, once the answer is about to start: headers, the access log
    // and (for the writer's nvext) the job state. Nothing when no routing took place.
    void note_route() {
        if (!stream_ || route_noted_) {
            return;
        }
        route_noted_ = true;
        auto r       = stream_->route();
        if (r.backend.empty()) {
            return;
        }
        ex_->add_response_header("X-Inferbox-Backend", r.backend);
        ex_->add_response_header("X-Inferbox-Route", r.reason);
        ex_->log_field("backend", r.backend);
        ex_->log_field("route", r.reason);
        if (ctx_.on_route) {
            ctx_.on_route(r);
        }
        s_.route = std::move(r);
    }

    void cancel() {
        if (stream_) {
            stream_->cancel();
        }
    }

    // Completion tokens produced so far count against the key's token rate, whatever the outcome.
    void charge_generated() {
        if (ctx_.limiter == nullptr || charged_) {
            return;
        }
        charged_      = true;
        int64_t n_gen = 0;
        for (const auto &c : s_.choices) {
            n_gen += c.n_generated > 0 ? c.n_generated : c.n_seen;
        }
        ctx_.limiter->charge_tokens(ctx_.key_index, n_gen);
    }

    static failure_reason reason_of(error_kind k) {
        switch (k) {
        case error_kind::overloaded:
            return failure_reason::overloaded;
        case error_kind::unavailable:
            return failure_reason::unavailable;
        case error_kind::invalid_request:
            return failure_reason::invalid;
        default:
            return failure_reason::engine_error;
        }
    }

    void fail(const error &err) {
        if (finished_) {
            return;
        }
        finished_ = true;
        if (deadline_) {
            deadline_->cancel();
        }
        if (ctx_.metrics) {
            ctx_.metrics->failure(reason_of(err.kind)).inc();
        }
        charge_generated();
        ex_->log_field("error", err.code.empty() ? std::string(map_error(err.kind).type) : err.code);
        auto keep = std::exchange(self_, nullptr);
        if (stream_open_) {
            writer_->stream_error(*ex_, s_, err);
            return;
        }
        note_route();
        respond_error(*ex_, err);
    }

    void add_logprobs(choice_state &c, const std::vector<token_logprob> &lps, json *chunk_lp) {
        const bool chat       = s_.req().kind == api_kind::chat;
        json       chunk_chat = json::array();
        json       ct = json::array(), cv = json::array(), ctop = json::array(), coff = json::array();
        for (const auto &lp : lps) {
            const std::string tok = utf8_sanitize(lp.token);
            if (chat) {
                json top = json::array();
                for (const auto &[t, v] : lp.top) {
                    top.push_back({{"token", utf8_sanitize(t)}, {"logprob", v}, {"bytes", bytes_of(t)}});
                }
                json e = {
                    {"token", tok}, {"logprob", lp.logprob}, {"bytes", bytes_of(lp.token)}, {"top_logprobs", top}};
                c.logprobs_content.push_back(e);
                chunk_chat.push_back(e);
            } else {
                json top = json::object();
                for (const auto &[t, v] : lp.top) {
                    top[utf8_sanitize(t)] = v;
                }
                c.lp_tokens.push_back(tok);
                c.lp_values.push_back(lp.logprob);
                c.lp_top.push_back(top);
                c.lp_offsets.push_back(c.text_offset);
                ct.push_back(tok);
                cv.push_back(lp.logprob);
                ctop.push_back(top);
                coff.push_back(c.text_offset);
                c.text_offset += lp.token.size();
            }
        }
        if (chunk_lp != nullptr && !lps.empty()) {
            *chunk_lp =
                chat ? json{{"content", chunk_chat}}
                     : json{{"tokens", ct}, {"token_logprobs", cv}, {"top_logprobs", ctop}, {"text_offset", coff}};
        }
    }

    // Folds tool-call fragments into the choice's calls (the writer reads id and name there).
    static void add_calls(choice_state &c, const std::vector<tool_call_delta> &calls) {
        for (const auto &d : calls) {
            if (d.first && d.call == c.tool_calls.size()) {
                c.tool_calls.push_back({d.id, d.name, ""});
            }
            if (d.call < c.tool_calls.size()) {
                c.tool_calls[d.call].arguments += d.arguments;
            }
        }
    }

    void note_first_token() {
        if (first_token_seen_) {
            return;
        }
        first_token_seen_ = true;
        ttft_             = std::chrono::steady_clock::now() - ex_->received();
        if (ctx_.metrics) {
            ctx_.metrics->time_to_first_token.observe(ttft_.count());
        }
    }

    void drain() {
        if (finished_ || !stream_) {
            return;
        }
        for (auto &ev : stream_->take()) {
            if (ev.err) {
                cancel();
                fail(*ev.err);
                return;
            }
            if (ev.choice >= s_.choices.size()) {
                cancel();
                fail(error{error_kind::internal,
                           "the backend sent choice " + std::to_string(ev.choice) + " of a request with " +
                               std::to_string(s_.choices.size()),
                           "", "internal_error"});
                return;
            }
            choice_state &c = s_.choices[ev.choice];
            if (c.done) {
                continue; // a backend's stray event after the choice finished
            }
            open_stream();
            for (auto &call : ev.server_calls) {
                c.server_calls.push_back(std::move(call));
                if (s_.req().stream) {
                    writer_->server_call(*ex_, s_, ev.choice);
                }
            }
            if (ev.content.empty() && ev.calls.empty() && ev.logprobs.empty() && ev.finish == finish_reason::none) {
                continue; // only the server's own tool calls
            }
            ++c.n_seen;
            note_first_token();
            json chunk_lp(nullptr);
            add_logprobs(c, ev.logprobs, s_.req().stream && !s_.tools ? &chunk_lp : nullptr);
            c.text += ev.content;
            add_calls(c, ev.calls);
            if (ev.finish != finish_reason::none) {
                c.finish            = ev.finish;
                c.done              = true;
                c.n_prompt          = ev.n_prompt;
                c.n_cached          = ev.n_cached;
                c.n_generated       = ev.n_generated;
                c.incomplete_reason = std::move(ev.incomplete_reason);
                if (ev.message) {
                    c.text       = std::move(ev.message->content);
                    c.tool_calls = std::move(ev.message->tool_calls);
                }
                ++n_done_;
            }
            if (c.done) {
                follow_route();
            }
            if (s_.req().stream) {
                if (!s_.tools || !ev.content.empty()) {
                    writer_->text(*ex_, s_, ev.choice, ev.content, chunk_lp);
                }
                for (const auto &d : ev.calls) {
                    writer_->tool_call(*ex_, s_, ev.choice, d.call, d.first, d.arguments);
                }
                if (c.done) {
                    writer_->choice_done(*ex_, s_, ev.choice);
                }
            }
        }
        if (n_done_ == s_.choices.size()) {
            complete();
        }
    }

    void complete() {
        finished_ = true;
        if (deadline_) {
            deadline_->cancel();
        }
        auto keep = std::exchange(self_, nullptr);
        note_route();
        record_success();
        writer_->completed(*ex_, s_);
    }

    void record_success() {
        const auto u      = s_.usage();
        bool       length = false;
        for (const auto &c : s_.choices) {
            length = length || c.finish == finish_reason::length;
        }
        charge_generated();
        if (ctx_.on_success && !s_.route.backend.empty()) {
            ctx_.on_success(s_.route, ttft_.count(),
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - ex_->received()).count());
        }
        ex_->log_field("prompt_tokens", static_cast<int64_t>(u.prompt));
        ex_->log_field("completion_tokens", static_cast<int64_t>(u.generated));
        ex_->log_field("ttft_ms", static_cast<int64_t>(ttft_.count() * 1000.0));
        ex_->log_field("finish_reason", std::string(length ? "length" : "stop"));
        if (!ctx_.metrics) {
            return;
        }
        auto &m = *ctx_.metrics;
        (length ? m.success_length : m.success_stop).inc();
        m.e2e_latency.observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - ex_->received()).count());
        m.prompt_len.observe(static_cast<double>(u.prompt));
        m.generation_len.observe(static_cast<double>(u.generated));
    }

    std::shared_ptr<completion_job>            self_;
    std::shared_ptr<http_exchange>             ex_;
    std::shared_ptr<generation_backend>        backend_;
    job_context                                ctx_;
    std::shared_ptr<answer_writer>             writer_;
    job_state                                  s_;
    std::shared_ptr<generation_stream>         stream_;
    std::unique_ptr<boost::asio::steady_timer> deadline_;
    size_t                                     n_done_           = 0;
    bool                                       finished_         = false;
    bool                                       stream_open_      = false;
    bool                                       first_token_seen_ = false;
    bool                                       charged_          = false;
    bool                                       route_noted_      = false;
    std::chrono::duration<double>              ttft_{0};
};

} // namespace

void run_completion(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<generation_backend> backend,
                    backend_request req, std::string model_id, job_context ctx, std::shared_ptr<answer_writer> writer) {
    if (!writer) {
        writer = std::make_shared<openai_writer>(req.req.kind == api_kind::chat);
    }
    auto job = std::make_shared<completion_job>(ex, std::move(backend),
                                                std::make_shared<const backend_request>(std::move(req)),
                                                std::move(model_id), std::move(ctx), std::move(writer));
    job->start();
}

} // namespace inferbox

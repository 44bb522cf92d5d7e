#include "api/openai.h"

#include "api/errors.h"
#include "api/routes.h"
#include "common/utf8.h"

#include <boost/asio/post.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <random>

namespace inferbox {

using json = nlohmann::json;

namespace {

std::string dump(const json &j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string random_id(const char *prefix) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    char                                buf[17];
    snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
    return std::string(prefix) + buf;
}

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

class completion_job : public std::enable_shared_from_this<completion_job> {
  public:
    completion_job(std::shared_ptr<http_exchange> ex, std::shared_ptr<engine> eng, api_request req,
                   std::vector<prepared_prompt> prompts, int32_t max_tokens, std::string model_id, job_context ctx,
                   std::shared_ptr<const chat_render> tools)
        : ex_(std::move(ex)), eng_(std::move(eng)), req_(std::move(req)), prompts_(std::move(prompts)),
          max_tokens_(max_tokens), model_id_(std::move(model_id)), ctx_(std::move(ctx)), tools_(std::move(tools)) {
        chat_    = req_.kind == api_kind::chat;
        id_      = random_id(chat_ ? "chatcmpl-" : "cmpl-");
        created_ = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                       .count();
        choices_.resize(prompts_.size() * static_cast<size_t>(req_.n));
        if (!chat_ && req_.echo) {
            // text_offset indexes the choice's whole text, which begins with the echoed prompt.
            for (size_t c = 0; c < choices_.size(); ++c) {
                choices_[c].text_offset = prompts_[c / static_cast<size_t>(req_.n)].echo_text.size();
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
            for (const auto &p : prompts_) {
                n_prompt += static_cast<int64_t>(p.tokens.size());
            }
            ctx_.limiter->charge_tokens(ctx_.key, n_prompt);
        }
        ex_->on_disconnect([weak] {
            if (auto self = weak.lock()) {
                self->cancel_all();
                if (!self->finished_ && self->ctx_.metrics) {
                    self->ctx_.metrics->requests_cancelled.inc();
                }
                self->charge_generated();
                self->finished_ = true;
                self->self_.reset();
            }
        });
        for (size_t p = 0; p < prompts_.size(); ++p) {
            auto chan = std::make_shared<request_channel>();
            chan->set_notify([weak, exec = ex_->executor(), p] {
                boost::asio::post(exec, [weak, p] {
                    if (auto self = weak.lock()) {
                        self->drain(p);
                    }
                });
            });
            channels_.push_back(chan);
        }
        for (size_t p = 0; p < prompts_.size(); ++p) {
            generation_request g;
            g.prompt      = prompts_[p].tokens;
            g.max_tokens  = max_tokens_;
            g.n           = req_.n;
            g.sampling    = req_.sampling;
            g.stop        = req_.stop;
            g.lora        = req_.lora;
            g.speculative = req_.speculative;
            if (auto err = eng_->submit(std::move(g), channels_[p])) {
                cancel_all();
                fail(*err);
                return;
            }
        }
        if (req_.stream) {
            ex_->start_stream({});
            stream_open_ = true; // from here on, errors are SSE events, never a second response
            for (size_t c = 0; c < choices_.size(); ++c) {
                json        delta = chat_ ? json{{"role", "assistant"}, {"content", ""}} : json();
                std::string text  = (!chat_ && req_.echo) ? prompts_[c / static_cast<size_t>(req_.n)].echo_text : "";
                if (chat_ || !text.empty()) {
                    send_chunk(static_cast<int32_t>(c), delta, text, json(nullptr), nullptr);
                }
            }
        }
    }

  private:
    struct choice_state {
        std::string text;
        json        logprobs_content = json::array(); // chat form
        json        lp_tokens = json::array(), lp_values = json::array(), lp_top = json::array(),
             lp_offsets           = json::array(); // completions form
        size_t        text_offset = 0;
        finish_reason finish      = finish_reason::none;
        bool          done        = false;
        int32_t       n_prompt = 0, n_cached = 0, n_generated = 0;
        int32_t       n_seen = 0; // events seen (a lower bound of tokens) before the final one
        // With tools: the parsed message, filled when the choice finishes.
        std::string                 content;
        std::vector<chat_tool_call> tool_calls;
    };

    // "tool_calls" when a finished choice called tools, else the engine's reason.
    static const char *finish_of(const choice_state &c) {
        if (c.finish == finish_reason::stop && !c.tool_calls.empty()) {
            return "tool_calls";
        }
        return finish_str(c.finish);
    }

    // Reads the tool calls out of a finished choice (tools_ set). Calls without an id get one.
    void parse_tools(choice_state &c) {
        auto out     = eng_->get_model().parse_chat_output(c.text, *tools_);
        c.content    = std::move(out.content);
        c.tool_calls = std::move(out.tool_calls);
        for (auto &tc : c.tool_calls) {
            if (tc.id.empty()) {
                tc.id = random_id("call_");
            }
        }
    }

    static json tool_calls_json(const std::vector<chat_tool_call> &calls, bool with_index) {
        json arr = json::array();
        for (size_t i = 0; i < calls.size(); ++i) {
            json call = {{"id", calls[i].id},
                         {"type", "function"},
                         {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
            if (with_index) {
                call["index"] = i;
            }
            arr.push_back(std::move(call));
        }
        return arr;
    }

    void cancel_all() {
        for (auto &c : channels_) {
            eng_->cancel(c);
        }
    }

    // Completion tokens produced so far count against the key's token rate, whatever the outcome.
    void charge_generated() {
        if (ctx_.limiter == nullptr || charged_) {
            return;
        }
        charged_      = true;
        int64_t n_gen = 0;
        for (const auto &c : choices_) {
            n_gen += c.n_generated > 0 ? c.n_generated : c.n_seen;
        }
        ctx_.limiter->charge_tokens(ctx_.key, n_gen);
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
        if (ctx_.metrics) {
            ctx_.metrics->failure(reason_of(err.kind)).inc();
        }
        charge_generated();
        ex_->log_field("error", err.code.empty() ? std::string(map_error(err.kind).type) : err.code);
        auto keep = std::exchange(self_, nullptr);
        if (stream_open_) {
            ex_->send("data: " + error_body(err) + "\n\n");
            ex_->send("data: [DONE]\n\n");
            ex_->end_stream();
            return;
        }
        respond_error(*ex_, err);
    }

    json logprobs_json(const choice_state &c) const {
        if (req_.sampling.top_logprobs < 0) {
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

    void add_logprobs(choice_state &c, const std::vector<token_logprob> &lps, json *chunk_lp) {
        json chunk_chat = json::array();
        json ct = json::array(), cv = json::array(), ctop = json::array(), coff = json::array();
        for (const auto &lp : lps) {
            const std::string tok = utf8_sanitize(lp.token);
            if (chat_) {
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
                chat_ ? json{{"content", chunk_chat}}
                      : json{{"tokens", ct}, {"token_logprobs", cv}, {"top_logprobs", ctop}, {"text_offset", coff}};
        }
    }

    void send_chunk(int32_t index, const json &delta, const std::string &text, const json &logprobs,
                    const char *finish) {
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
        json chunk              = {{"id", id_},
                                   {"object", chat_ ? "chat.completion.chunk" : "text_completion"},
                                   {"created", created_},
                                   {"model", model_id_},
                                   {"choices", json::array({choice})}};
        if (req_.include_usage) {
            chunk["usage"] = nullptr;
        }
        ex_->send("data: " + dump(chunk) + "\n\n");
    }

    json usage_json() const {
        int32_t n_prompt = 0, n_cached = 0, n_generated = 0;
        for (size_t c = 0; c < choices_.size(); ++c) {
            if (c % static_cast<size_t>(req_.n) == 0) { // the prompt counts once, not once per choice
                n_prompt += choices_[c].n_prompt;
                n_cached += choices_[c].n_cached;
            }
            n_generated += choices_[c].n_generated;
        }
        return {{"prompt_tokens", n_prompt},
                {"completion_tokens", n_generated},
                {"total_tokens", n_prompt + n_generated},
                {"prompt_tokens_details", {{"cached_tokens", n_cached}}}};
    }

    void drain(size_t p) {
        if (finished_) {
            return;
        }
        for (auto &ev : channels_[p]->take()) {
            if (ev.err) {
                cancel_all();
                fail(*ev.err);
                return;
            }
            const size_t  ci = p * static_cast<size_t>(req_.n) + static_cast<size_t>(ev.index);
            choice_state &c  = choices_[ci];
            ++c.n_seen;
            if (!first_token_seen_) {
                first_token_seen_ = true;
                ttft_             = std::chrono::steady_clock::now() - ex_->received();
                if (ctx_.metrics) {
                    ctx_.metrics->time_to_first_token.observe(ttft_.count());
                }
            }
            json chunk_lp(nullptr);
            add_logprobs(c, ev.logprobs, req_.stream ? &chunk_lp : nullptr);
            c.text += ev.text;
            if (ev.finish != finish_reason::none) {
                c.finish      = ev.finish;
                c.done        = true;
                c.n_prompt    = ev.n_prompt;
                c.n_cached    = ev.n_cached;
                c.n_generated = ev.n_generated;
                ++n_done_;
                if (tools_) {
                    parse_tools(c);
                }
            }
            if (req_.stream) {
                // With tools the text is held back until the choice ends: then its content,
                // then its tool calls, each as one delta.
                const std::string &text = tools_ ? std::string() : ev.text;
                if (!text.empty() || !chunk_lp.is_null()) {
                    send_chunk(static_cast<int32_t>(ci), json(), text, chunk_lp, nullptr);
                }
                if (c.done && tools_) {
                    if (!c.content.empty()) {
                        send_chunk(static_cast<int32_t>(ci), json(), c.content, json(nullptr), nullptr);
                    }
                    if (!c.tool_calls.empty()) {
                        send_chunk(static_cast<int32_t>(ci), json{{"tool_calls", tool_calls_json(c.tool_calls, true)}},
                                   "", json(nullptr), nullptr);
                    }
                }
                if (c.done) {
                    send_chunk(static_cast<int32_t>(ci), json::object(), "", json(nullptr), finish_of(c));
                }
            }
        }
        if (n_done_ == choices_.size()) {
            complete();
        }
    }

    void complete() {
        finished_ = true;
        auto keep = std::exchange(self_, nullptr);
        record_success();
        if (req_.stream) {
            if (req_.include_usage) {
                json chunk = {{"id", id_},
                              {"object", chat_ ? "chat.completion.chunk" : "text_completion"},
                              {"created", created_},
                              {"model", model_id_},
                              {"choices", json::array()},
                              {"usage", usage_json()}};
                ex_->send("data: " + dump(chunk) + "\n\n");
            }
            ex_->send("data: [DONE]\n\n");
            ex_->end_stream();
            return;
        }
        json choices = json::array();
        for (size_t i = 0; i < choices_.size(); ++i) {
            const auto &c = choices_[i];
            json        ch;
            if (chat_) {
                json message = {{"role", "assistant"}, {"content", tools_ ? c.content : c.text}};
                if (!c.tool_calls.empty()) {
                    message["tool_calls"] = tool_calls_json(c.tool_calls, false);
                    if (c.content.empty()) {
                        message["content"] = nullptr;
                    }
                }
                ch = {{"index", i},
                      {"message", std::move(message)},
                      {"logprobs", logprobs_json(c)},
                      {"finish_reason", finish_of(c)}};
            } else {
                const std::string echo = req_.echo ? prompts_[i / static_cast<size_t>(req_.n)].echo_text : "";
                ch                     = {{"index", i},
                                          {"text", echo + c.text},
                                          {"logprobs", logprobs_json(c)},
                                          {"finish_reason", finish_str(c.finish)}};
            }
            choices.push_back(std::move(ch));
        }
        json body = {{"id", id_},           {"object", chat_ ? "chat.completion" : "text_completion"},
                     {"created", created_}, {"model", model_id_},
                     {"choices", choices},  {"usage", usage_json()}};
        if (chat_) {
            body["system_fingerprint"] = nullptr;
        }
        ex_->respond(http::status::ok, dump(body), "application/json");
    }

    void record_success() {
        int64_t n_prompt = 0, n_gen = 0;
        bool    length = false;
        for (size_t c = 0; c < choices_.size(); ++c) {
            if (c % static_cast<size_t>(req_.n) == 0) {
                n_prompt += choices_[c].n_prompt;
            }
            n_gen += choices_[c].n_generated;
            length = length || choices_[c].finish == finish_reason::length;
        }
        charge_generated();
        ex_->log_field("prompt_tokens", n_prompt);
        ex_->log_field("completion_tokens", n_gen);
        ex_->log_field("ttft_ms", static_cast<int64_t>(ttft_.count() * 1000.0));
        ex_->log_field("finish_reason", std::string(length ? "length" : "stop"));
        if (!ctx_.metrics) {
            return;
        }
        auto &m = *ctx_.metrics;
        (length ? m.success_length : m.success_stop).inc();
        m.e2e_latency.observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - ex_->received()).count());
        m.prompt_len.observe(static_cast<double>(n_prompt));
        m.generation_len.observe(static_cast<double>(n_gen));
    }

    std::shared_ptr<completion_job>               self_;
    std::shared_ptr<http_exchange>                ex_;
    std::shared_ptr<engine>                       eng_;
    api_request                                   req_;
    std::vector<prepared_prompt>                  prompts_;
    int32_t                                       max_tokens_;
    std::string                                   model_id_;
    bool                                          chat_ = false;
    std::string                                   id_;
    int64_t                                       created_ = 0;
    std::vector<std::shared_ptr<request_channel>> channels_;
    std::vector<choice_state>                     choices_;
    size_t                                        n_done_      = 0;
    bool                                          finished_    = false;
    bool                                          stream_open_ = false;
    job_context                                   ctx_;
    bool                                          first_token_seen_ = false;
    bool                                          charged_          = false;
    std::chrono::duration<double>                 ttft_{0};
    std::shared_ptr<const chat_render>            tools_; // null: no tool calls to parse
};

} // namespace

void run_completion(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<engine> eng, api_request req,
                    std::vector<prepared_prompt> prompts, int32_t max_tokens, std::string model_id, job_context ctx,
                    std::shared_ptr<const chat_render> tools) {
    auto job = std::make_shared<completion_job>(ex, std::move(eng), std::move(req), std::move(prompts), max_tokens,
                                                std::move(model_id), std::move(ctx), std::move(tools));
    job->start();
}

} // namespace inferbox

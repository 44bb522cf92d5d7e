#include "backend/local_backend.h"

#include "backend/message_stream.h"
#include "model/grammar.h"

#include <algorithm>
#include <mutex>

namespace inferbox {

namespace {

// Token ids a request names directly (token-id prompts, logit_bias) must be in the model's
// vocabulary; checked before anything is queued or tokenized.
std::optional<error> check_vocabulary(const model &m, const api_request &req) {
    for (const auto &p : req.prompts) {
        if (const auto *ids = std::get_if<std::vector<token_id>>(&p)) {
            for (const token_id t : *ids) {
                if (t >= m.n_vocab()) {
                    return error::invalid("prompt token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                                              std::to_string(m.n_vocab()) + ")",
                                          "prompt", "invalid_token");
                }
            }
        }
    }
    for (const auto &lb : req.sampling.logit_bias) {
        if (lb.first >= m.n_vocab()) {
            return error::invalid("logit_bias names token id " + std::to_string(lb.first) +
                                      ", outside the vocabulary [0, " + std::to_string(m.n_vocab()) + ")",
                                  "logit_bias");
        }
    }
    return std::nullopt;
}

// A prompt of `bytes` bytes tokenizes to at least bytes / max_token_bytes tokens (no token covers
// more bytes than its text has); refused before tokenizing when even that exceeds the context.
std::optional<error> check_prompt_bytes(const model &m, size_t bytes, int32_t n_ctx, const char *param) {
    const int64_t per_token = m.max_token_bytes();
    if (per_token <= 0) {
        return std::nullopt; // a vocabulary whose normalization may merge input bytes: no bound
    }
    const int64_t at_least = (static_cast<int64_t>(bytes) + per_token - 1) / per_token;
    if (at_least <= n_ctx) {
        return std::nullopt;
    }
    return error::invalid("the prompt is " + std::to_string(bytes) + " bytes, so at least " + std::to_string(at_least) +
                              " tokens (no token of this model covers more than " + std::to_string(per_token) +
                              " bytes): more than this model's context of " + std::to_string(n_ctx) +
                              " tokens per request; shorten the prompt",
                          param, "context_length_exceeded");
}

// Turns the request's output constraint into the GBNF the engine samples with and checks that it
// builds a grammar sampler on this model: the engine thread never compiles, and never receives a
// grammar that fails.
std::optional<error> compile_constraint(const model &m, const guided_limits &limits, api_request &req) {
    const auto &c = req.constraint;
    std::string gbnf;
    switch (c.kind) {
    case constraint_kind::none:
        return std::nullopt;
    case constraint_kind::json_object:
    case constraint_kind::json_schema: {
        auto g = c.kind == constraint_kind::json_object ? json_object_gbnf() : json_schema_to_gbnf(c.schema, c.param);
        if (!g) {
            return g.err();
        }
        gbnf = std::move(*g);
        // The converter's output is bounded by the schema's size and repetition bounds; this
        // holds it to the same shape limits as a grammar given by the client.
        if (auto problem = gbnf_shape_error(gbnf, limits); !problem.empty()) {
            return error::invalid(c.param + ": the grammar compiled from the schema is not usable: " + problem,
                                  c.param);
        }
        break;
    }
    case constraint_kind::regex:
    case constraint_kind::choice:
    case constraint_kind::grammar:
        gbnf = c.gbnf; // converted and shape-checked by parse_request
        break;
    }
    req.sampling.grammar = std::move(gbnf);
    return check_grammar(m, req.sampling, c.param);
}

// A chat request: the template renders the messages (and the tools' call format), then the
// prompt is tokenized. With tools, the render's grammar and stop strings join the request and
// the render itself is kept to read calls back from the text.
std::optional<error> prepare_chat(const model &m, int32_t n_ctx, backend_request &p) {
    auto &req = p.req;
    // The messages' text alone can be too long for the context: refused before the template
    // copies it (a 100 MB message would otherwise be rendered whole first).
    size_t content_bytes = 0;
    for (const auto &msg : req.messages) {
        content_bytes += msg.content.size();
    }
    if (auto err = check_prompt_bytes(m, content_bytes, n_ctx, "messages")) {
        return err;
    }
    chat_inputs ci;
    ci.messages            = req.messages;
    ci.tools               = req.tools;
    ci.choice              = req.choice;
    ci.parallel_tool_calls = req.parallel_tool_calls;
    // continue_final_message: the template renders the conversation before the final assistant
    // message, with the generation prompt, and that message's text follows as it is — what
    // llama.cpp's own continuation (common_chat_templates_apply, llama-server's assistant
    // prefill) renders. The model then sees the very text an earlier generation had after the
    // same generation prompt, whatever the template does to a finished assistant message (trims
    // it, closes the turn), which is what makes a mid-stream failover continue exactly.
    std::string prefix;
    if (req.continue_final_message) {
        if (ci.messages.empty() || ci.messages.back().role != "assistant" || !ci.messages.back().tool_calls.empty()) {
            return error::invalid("continue_final_message needs an assistant message without tool_calls last",
                                  "messages");
        }
        prefix = std::move(ci.messages.back().content);
        ci.messages.pop_back();
    }
    auto rendered = m.render_chat(ci);
    if (!rendered) {
        return rendered.err();
    }
    rendered->prompt += prefix;
    if (auto err = check_prompt_bytes(m, rendered->prompt.size(), n_ctx, "messages")) {
        return err;
    }
    p.prompts.push_back({m.tokenize(rendered->prompt, true), ""});
    if (!rendered->parse_tool_calls) {
        return std::nullopt;
    }
    auto &s = req.sampling;
    if (!rendered->grammar.empty()) {
        // The call syntax is enforced by the grammar common's chat machinery built: from the
        // first token under "required" or a named function, lazily from a trigger under "auto".
        s.grammar           = rendered->grammar;
        s.grammar_for_tools = true;
        s.grammar_lazy      = rendered->grammar_lazy;
        s.grammar_triggers  = rendered->grammar_triggers;
        s.generation_prompt = rendered->generation_prompt;
        s.preserved_tokens  = rendered->preserved_tokens;
        if (auto err = check_grammar(m, s, "tools")) {
            return err;
        }
    }
    for (const auto &stop : rendered->additional_stops) {
        if (!stop.empty() && std::find(req.stop.begin(), req.stop.end(), stop) == req.stop.end()) {
            req.stop.push_back(stop);
        }
    }
    p.tools  = true;
    p.detail = std::make_shared<const chat_render>(std::move(*rendered));
    return std::nullopt;
}

std::optional<error> prepare_completion(const model &m, int32_t n_ctx, backend_request &p) {
    for (auto &prompt : p.req.prompts) {
        prepared_prompt pp;
        if (const auto *s = std::get_if<std::string>(&prompt)) {
            if (auto err = check_prompt_bytes(m, s->size(), n_ctx, "prompt")) {
                return err;
            }
            pp.tokens    = m.tokenize(*s, true);
            pp.echo_text = *s;
        } else {
            pp.tokens    = std::get<std::vector<token_id>>(prompt); // ids checked by check_vocabulary
            pp.echo_text = m.detokenize(pp.tokens);
        }
        if (pp.tokens.empty()) {
            return error::invalid("the prompt is empty after tokenization", "prompt");
        }
        p.prompts.push_back(std::move(pp));
    }
    return std::nullopt;
}

// Prompt + max_tokens must fit one sequence's KV: never truncated silently. Without max_tokens,
// a completion gets 16 (OpenAI's default) and a chat what the context leaves.
std::optional<error> resolve_max_tokens(int32_t n_ctx, backend_request &p) {
    const auto &req       = p.req;
    size_t      n_longest = 0;
    for (const auto &pp : p.prompts) {
        n_longest = std::max(n_longest, pp.tokens.size());
    }
    const auto    n_prompt = static_cast<int64_t>(n_longest);
    const auto    kind     = req.kind;
    const int64_t max_tokens =
        req.max_tokens ? *req.max_tokens : (kind == api_kind::completion ? 16 : std::max<int64_t>(1, n_ctx - n_prompt));
    const std::string &mt_name = req.max_tokens_param;
    if (n_prompt + max_tokens > n_ctx) {
        return error::invalid(
            "this model's context is " + std::to_string(n_ctx) + " tokens per request, but the prompt has " +
                std::to_string(n_prompt) + " tokens and " + mt_name + " is " + std::to_string(max_tokens) + " (" +
                std::to_string(n_prompt + max_tokens) + " > " + std::to_string(n_ctx) +
                "); shorten the prompt or lower " + mt_name,
            req.max_tokens ? mt_name : (kind == api_kind::chat ? "messages" : "prompt"), "context_length_exceeded");
    }
    p.max_tokens = static_cast<int32_t>(max_tokens);
    return std::nullopt;
}

// One request's engine sequences (one channel per prompt) seen as one stream of backend events.
class local_stream final : public generation_stream {
  public:
    local_stream(std::shared_ptr<engine> eng, const backend_request &req)
        : eng_(std::move(eng)), n_(static_cast<size_t>(std::max(1, req.req.n))), streaming_(req.req.stream),
          render_(req.tools ? std::static_pointer_cast<const chat_render>(req.detail) : nullptr) {
        if (render_) {
            raw_.resize(req.n_choices());
            messages_.resize(req.n_choices());
        }
    }

    // Creates the channels first (all of them notify), then submits: a failure part-way cancels
    // what was queued.
    std::optional<error> start(const backend_request &req, const std::function<void()> &notify) {
        for (size_t p = 0; p < req.prompts.size(); ++p) {
            auto chan = std::make_shared<request_channel>();
            chan->set_notify(notify);
            channels_.push_back(std::move(chan));
        }
        for (size_t p = 0; p < req.prompts.size(); ++p) {
            generation_request g;
            g.prompt      = req.prompts[p].tokens;
            g.max_tokens  = req.max_tokens;
            g.n           = req.req.n;
            g.sampling    = req.req.sampling;
            g.stop        = req.req.stop;
            g.lora        = req.req.lora;
            g.speculative = req.req.speculative;
            if (auto err = eng_->submit(std::move(g), channels_[p])) {
                cancel();
                return err;
            }
        }
        return std::nullopt;
    }

    std::vector<backend_event> take() override {
        std::vector<backend_event> out;
        for (size_t p = 0; p < channels_.size(); ++p) {
            for (auto &ev : channels_[p]->take()) {
                out.push_back(convert(p, std::move(ev)));
                if (out.back().err) {
                    return out; // the request failed: nothing after it matters
                }
            }
        }
        return out;
    }

    void cancel() override {
        for (auto &c : channels_) {
            eng_->cancel(c);
        }
    }

  private:
    backend_event convert(size_t prompt, generation_event ev) {
        backend_event out;
        out.choice   = prompt * n_ + static_cast<size_t>(ev.index);
        out.logprobs = std::move(ev.logprobs);
        out.finish   = ev.finish;
        out.err      = std::move(ev.err);
        if (ev.finish != finish_reason::none) {
            out.n_prompt    = ev.n_prompt;
            out.n_cached    = ev.n_cached;
            out.n_generated = ev.n_generated;
        }
        if (!render_ || out.err) {
            out.content = std::move(ev.text);
            return out;
        }
        // With tools the text is an assistant message: read it again as it grows (only worth it
        // while streaming), and whole at the end.
        const bool done = ev.finish != finish_reason::none;
        auto      &raw  = raw_[out.choice];
        raw += ev.text;
        if (done || (streaming_ && !ev.text.empty())) {
            if (auto reading = eng_->get_model().parse_chat_output(raw, *render_, /*partial=*/!done)) {
                messages_[out.choice].update(std::move(*reading), out.content, out.calls);
            }
        }
        if (done) {
            out.message = messages_[out.choice].message();
        }
        return out;
    }

    std::shared_ptr<engine>                       eng_;
    size_t                                        n_;
    bool                                          streaming_;
    std::shared_ptr<const chat_render>            render_; // null: no tool calls to read
    std::vector<std::shared_ptr<request_channel>> channels_;
    std::vector<std::string>                      raw_;      // per choice, with tools: the text so far
    std::vector<message_stream>                   messages_; // per choice, with tools
};

} // namespace

local_backend::local_backend(std::shared_ptr<engine> eng, guided_limits limits)
    : eng_(std::move(eng)), limits_(limits) {}

std::optional<error> local_backend::check(const api_request &req) const {
    return check_vocabulary(eng_->get_model(), req);
}

std::optional<error> local_backend::over_capacity(int32_t n_sequences) const {
    return eng_->over_capacity(n_sequences);
}

result<backend_request> local_backend::prepare(api_request req) const {
    const model    &m     = eng_->get_model();
    const int32_t   n_ctx = eng_->n_ctx_slot();
    backend_request p;
    p.req    = std::move(req);
    auto err = p.req.kind == api_kind::chat ? prepare_chat(m, n_ctx, p) : prepare_completion(m, n_ctx, p);
    if (!err) {
        err = compile_constraint(m, limits_, p.req);
    }
    if (!err) {
        err = resolve_max_tokens(n_ctx, p);
    }
    if (err) {
        return *err;
    }
    return p;
}

result<std::shared_ptr<generation_stream>> local_backend::submit(std::shared_ptr<const backend_request> req,
                                                                 std::function<void()>                  notify) {
    auto stream = std::make_shared<local_stream>(eng_, *req);
    if (auto err = stream->start(*req, notify)) {
        return *err;
    }
    return std::shared_ptr<generation_stream>(std::move(stream));
}

bool local_backend::healthy() const {
    return eng_->healthy();
}

} // namespace inferbox

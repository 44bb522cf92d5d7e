#include "api/routes.h"

#include "api/errors.h"
#include "api/openai.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>

namespace inferbox {

using json = nlohmann::json;

void respond_error(http_exchange &ex, const error &err, header_list headers) {
    const auto info = map_error(err.kind);
    if (err.kind == error_kind::overloaded) {
        headers.emplace_back("Retry-After", "1");
    }
    ex.respond(static_cast<http::status>(info.status), error_body(err), "application/json", headers);
}

api_router::api_router(api_config cfg)
    : cfg_(std::move(cfg)),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                   .count()) {}

void api_router::attach(std::shared_ptr<engine> eng) {
    std::lock_guard lock(mu_);
    engine_ = std::move(eng);
}

void api_router::set_draining(bool draining) {
    std::lock_guard lock(mu_);
    draining_ = draining;
}

std::shared_ptr<engine> api_router::current_engine() const {
    std::lock_guard lock(mu_);
    return draining_ ? nullptr : engine_;
}

namespace {

void respond_json(http_exchange &ex, const json &j) {
    ex.respond(http::status::ok, j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

} // namespace

void api_router::handle(const std::shared_ptr<http_exchange> &ex) {
    const auto &req    = ex->request();
    std::string target = std::string(req.target());
    if (auto q = target.find('?'); q != std::string::npos) {
        target.resize(q);
    }
    const auto method = req.method();

    struct route {
        const char *path;
        http::verb  verb;
    };
    static const route routes[] = {
        {"/v1/completions", http::verb::post}, {"/v1/chat/completions", http::verb::post},
        {"/v1/models", http::verb::get},       {"/v1/health/live", http::verb::get},
        {"/v1/health/ready", http::verb::get}, {"/v1/version", http::verb::get},
        {"/health", http::verb::get},
    };
    bool path_known = false;
    for (const auto &r : routes) {
        if (target == r.path) {
            path_known = true;
            if (method == r.verb || (method == http::verb::head && r.verb == http::verb::get)) {
                break;
            }
        }
    }
    if (!path_known) {
        respond_error(*ex, error{error_kind::not_found,
                                 "no route for " + std::string(req.method_string()) + " " + target.substr(0, 200), "",
                                 "not_found"});
        return;
    }
    const bool is_get       = method == http::verb::get || method == http::verb::head;
    const bool is_inference = target == "/v1/completions" || target == "/v1/chat/completions";
    if ((is_inference && method != http::verb::post) || (!is_inference && !is_get)) {
        respond_error(*ex, error{error_kind::method_not_allowed,
                                 "method " + std::string(req.method_string()) + " is not allowed on " + target +
                                     " (use " + (is_inference ? "POST" : "GET") + ")",
                                 "", "method_not_allowed"});
        return;
    }

    if (target == "/v1/health/live") {
        respond_json(*ex, {{"object", "health.response"}, {"message", "live"}});
    } else if (target == "/v1/health/ready" || target == "/health") {
        auto eng = current_engine();
        if (eng && eng->healthy()) {
            respond_json(*ex, {{"object", "health.response"}, {"message", "ready"}});
        } else {
            const char *why =
                !eng ? "not ready: the model is loading or the server is draining" : "not ready: the engine failed";
            respond_error(*ex, error{error_kind::unavailable, why, "", "not_ready"});
        }
    } else if (target == "/v1/version") {
        respond_json(*ex, {{"version", cfg_.version}, {"release", cfg_.version}, {"api", "openai"}});
    } else if (target == "/v1/models") {
        handle_models(ex);
    } else {
        handle_inference(ex, target == "/v1/chat/completions" ? api_kind::chat : api_kind::completion);
    }
}

void api_router::handle_models(const std::shared_ptr<http_exchange> &ex) {
    auto eng   = current_engine();
    json model = {{"id", cfg_.model_id},   {"object", "model"}, {"created", created_},    {"owned_by", "inferbox"},
                  {"root", cfg_.model_id}, {"parent", nullptr}, {"ready", eng != nullptr}};
    if (eng) {
        model["max_model_len"] = eng->n_ctx_slot();
    }
    respond_json(*ex, {{"object", "list"}, {"data", json::array({model})}});
}

void api_router::handle_inference(const std::shared_ptr<http_exchange> &ex, api_kind kind) {
    auto body = parse_json_body(ex->request().body(), cfg_.limits.max_json_depth);
    if (!body) {
        respond_error(*ex, body.err());
        return;
    }
    auto req = parse_request(kind, *body, cfg_.limits);
    if (!req) {
        respond_error(*ex, req.err());
        return;
    }
    if (!req->model.empty() && req->model != cfg_.model_id) {
        respond_error(*ex, error{error_kind::not_found,
                                 "the model '" + req->model.substr(0, 200) + "' does not exist; this server serves '" +
                                     cfg_.model_id + "'",
                                 "model", "model_not_found"});
        return;
    }
    auto eng = current_engine();
    if (!eng) {
        respond_error(*ex, error{error_kind::unavailable, "the model is not ready (loading or draining); retry shortly",
                                 "", "not_ready"});
        return;
    }
    const model &m = eng->get_model();

    std::vector<prepared_prompt> prompts;
    if (kind == api_kind::chat) {
        auto text = m.apply_chat_template(req->messages);
        if (!text) {
            respond_error(*ex, text.err());
            return;
        }
        prompts.push_back({m.tokenize(*text, true), ""});
    } else {
        for (auto &p : req->prompts) {
            prepared_prompt pp;
            if (const auto *s = std::get_if<std::string>(&p)) {
                pp.tokens    = m.tokenize(*s, true);
                pp.echo_text = *s;
            } else {
                pp.tokens = std::get<std::vector<token_id>>(p);
                for (token_id t : pp.tokens) {
                    if (t >= m.n_vocab()) {
                        respond_error(*ex, error::invalid("prompt token id " + std::to_string(t) +
                                                              " is outside the vocabulary [0, " +
                                                              std::to_string(m.n_vocab()) + ")",
                                                          "prompt", "invalid_token"));
                        return;
                    }
                }
                pp.echo_text = m.detokenize(pp.tokens);
            }
            if (pp.tokens.empty()) {
                respond_error(*ex, error::invalid("the prompt is empty after tokenization", "prompt"));
                return;
            }
            prompts.push_back(std::move(pp));
        }
    }
    for (const auto &lb : req->sampling.logit_bias) {
        if (lb.first >= m.n_vocab()) {
            respond_error(*ex, error::invalid("logit_bias names token id " + std::to_string(lb.first) +
                                                  ", outside the vocabulary [0, " + std::to_string(m.n_vocab()) + ")",
                                              "logit_bias"));
            return;
        }
    }

    // Context: prompt + max_tokens must fit one sequence's KV. Never truncate silently.
    const int32_t n_ctx     = eng->n_ctx_slot();
    size_t        n_longest = 0;
    for (const auto &p : prompts) {
        n_longest = std::max(n_longest, p.tokens.size());
    }
    const auto    n_prompt   = static_cast<int64_t>(n_longest);
    const int64_t max_tokens = req->max_tokens
                                   ? *req->max_tokens
                                   : (kind == api_kind::completion ? 16 : std::max<int64_t>(1, n_ctx - n_prompt));
    const char   *mt_name    = kind == api_kind::chat ? "max_completion_tokens" : "max_tokens";
    if (n_prompt + max_tokens > n_ctx) {
        respond_error(*ex, error::invalid("this model's context is " + std::to_string(n_ctx) +
                                              " tokens per request, but the prompt has " + std::to_string(n_prompt) +
                                              " tokens and " + mt_name + " is " + std::to_string(max_tokens) + " (" +
                                              std::to_string(n_prompt + max_tokens) + " > " + std::to_string(n_ctx) +
                                              "); shorten the prompt or lower " + mt_name,
                                          req->max_tokens ? "max_tokens" : "messages", "context_length_exceeded"));
        return;
    }
    run_completion(ex, std::move(eng), std::move(*req), std::move(prompts), static_cast<int32_t>(max_tokens),
                   cfg_.model_id);
}

} // namespace inferbox

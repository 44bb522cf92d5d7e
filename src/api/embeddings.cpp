#include "api/embeddings.h"

#include "api/errors.h"
#include "api/routes.h"
#include "api/schema.h"

#include <boost/asio/post.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <numeric>

namespace inferbox {

using json = nlohmann::json;

namespace {

using outputs = embedding_task::outputs;

embedding_failure failure_of(error_kind k) {
    switch (k) {
    case error_kind::overloaded:
        return embedding_failure::overloaded;
    case error_kind::unavailable:
        return embedding_failure::unavailable;
    default:
        return embedding_failure::engine_error;
    }
}

// One request in the embedder: submits its task, answers when the task completes or fails, and
// cancels it when the client goes away. Lives on the exchange's strand.
class embedding_job : public std::enable_shared_from_this<embedding_job> {
  public:
    using body_fn = std::function<std::string(outputs &)>; // the 200 body from the vectors

    embedding_job(std::shared_ptr<http_exchange> ex, std::shared_ptr<embedder> emb,
                  std::shared_ptr<embedding_task> task, embedding_endpoint_metrics *metrics, body_fn body,
                  std::shared_ptr<void> hold)
        : ex_(std::move(ex)), emb_(std::move(emb)), task_(std::move(task)), metrics_(metrics), body_(std::move(body)),
          hold_(std::move(hold)) {}

    void start() {
        self_                             = shared_from_this(); // alive until answered or the client left
        std::weak_ptr<embedding_job> weak = self_;
        if (metrics_ != nullptr) {
            metrics_->started.inc();
        }
        ex_->on_disconnect([weak] {
            if (auto self = weak.lock()) {
                self->emb_->cancel(self->task_);
                if (!self->finished_ && self->metrics_ != nullptr) {
                    self->metrics_->cancelled.inc();
                }
                self->finished_ = true;
                self->self_.reset();
            }
        });
        // Runs on the embedder thread: hand the outcome to the connection's strand.
        task_->done = [weak, exec = ex_->executor()](result<outputs> r) {
            boost::asio::post(exec, [weak, r = std::move(r)]() mutable {
                if (auto self = weak.lock()) {
                    self->finish(std::move(r));
                }
            });
        };
        if (auto err = emb_->submit(task_)) {
            finish(*err);
        }
    }

  private:
    void finish(result<outputs> r) {
        if (finished_) {
            return;
        }
        finished_ = true;
        auto keep = std::exchange(self_, nullptr);
        if (!r) {
            if (metrics_ != nullptr) {
                metrics_->failure(failure_of(r.err().kind)).inc();
            }
            ex_->log_field("error", r.err().code.empty() ? std::string(map_error(r.err().kind).type) : r.err().code);
            respond_error(*ex_, r.err());
            return;
        }
        std::string body = body_(*r);
        if (metrics_ != nullptr) {
            metrics_->success.inc();
            metrics_->latency.observe(
                std::chrono::duration<double>(std::chrono::steady_clock::now() - ex_->received()).count());
        }
        ex_->respond(http::status::ok, std::move(body), "application/json");
    }

    std::shared_ptr<embedding_job>  self_;
    std::shared_ptr<http_exchange>  ex_;
    std::shared_ptr<embedder>       emb_;
    std::shared_ptr<embedding_task> task_;
    embedding_endpoint_metrics     *metrics_;
    body_fn                         body_;
    std::shared_ptr<void>           hold_;
    bool                            finished_ = false;
};

// The checks both endpoints share, in order: the body parses, the model is ours, the embedder is
// there and serves this kind of request. Answers and returns false when one fails.
bool check_model(http_exchange &ex, const std::string &requested, const embedding_route_context &ctx,
                 const std::shared_ptr<embedder> &emb, bool ranking) {
    if (!requested.empty() && requested != ctx.model_id) {
        respond_error(ex, error{error_kind::not_found,
                                "the model '" + requested.substr(0, 200) + "' does not exist; this server serves '" +
                                    ctx.model_id + "'",
                                "model", "model_not_found"});
        return false;
    }
    if (!emb) {
        respond_error(ex, error{error_kind::unavailable, "the model is not ready (loading or draining); retry shortly",
                                "", "not_ready"});
        return false;
    }
    if (!emb->enabled()) {
        respond_error(ex, error::invalid(emb->disabled_reason(), "model", "embeddings_disabled"));
        return false;
    }
    if (ranking && !emb->is_reranker()) {
        respond_error(ex, error::invalid("the model '" + ctx.model_id +
                                             "' is not a reranker: /v1/ranking needs a model whose GGUF metadata "
                                             "declares rank pooling (this one is served with " +
                                             pooling_name(emb->pooling()) + " pooling); use /v1/embeddings",
                                         "model", "model_not_reranker"));
        return false;
    }
    if (!ranking && emb->is_reranker()) {
        respond_error(ex, error::invalid("the model '" + ctx.model_id +
                                             "' is a reranker (rank pooling): use /v1/ranking, or serve it with "
                                             "--pooling mean|cls|last to embed with it",
                                         "model", "model_is_reranker"));
        return false;
    }
    return true;
}

void charge(const embedding_route_context &ctx, int64_t n_tokens) {
    if (ctx.limiter != nullptr) {
        ctx.limiter->charge_tokens(ctx.key_index, n_tokens);
    }
}

} // namespace

void handle_embeddings(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<embedder> emb,
                       const embedding_route_context &ctx, const nlohmann::json &body) {
    auto req = parse_embedding_request(body, ctx.limits);
    if (!req) {
        respond_error(*ex, req.err());
        return;
    }
    if (!check_model(*ex, req->model, ctx, emb, false)) {
        return;
    }
    if (req->dimensions && *req->dimensions > emb->n_embd()) {
        respond_error(*ex, error::invalid("dimensions is " + std::to_string(*req->dimensions) + ", but this model's " +
                                              "embeddings have " + std::to_string(emb->n_embd()) + " dimensions",
                                          "dimensions"));
        return;
    }

    auto          task     = std::make_shared<embedding_task>();
    const auto    n_max    = static_cast<size_t>(emb->n_input_max());
    const int32_t n_vocab  = emb->n_vocab();
    int64_t       n_tokens = 0, n_truncated = 0;
    task->inputs.reserve(req->inputs.size());
    for (size_t i = 0; i < req->inputs.size(); ++i) {
        const std::string where = req->inputs.size() == 1 ? std::string("input") : "input[" + std::to_string(i) + "]";
        std::vector<token_id> toks;
        token_framing         framing;
        if (const auto *text = std::get_if<std::string>(&req->inputs[i])) {
            auto t  = emb->tokenize(*text);
            toks    = std::move(t.tokens);
            framing = t.framing;
        } else {
            toks = std::get<std::vector<token_id>>(req->inputs[i]);
            for (token_id t : toks) {
                if (t >= n_vocab) {
                    respond_error(*ex,
                                  error::invalid(where + " holds token id " + std::to_string(t) +
                                                     ", outside the vocabulary [0, " + std::to_string(n_vocab) + ")",
                                                 "input", "invalid_token"));
                    return;
                }
            }
        }
        if (toks.empty()) {
            respond_error(*ex, error::invalid(where + " is empty after tokenization", "input"));
            return;
        }
        const size_t n_before = toks.size();
        if (!truncate_tokens(toks, n_max, req->truncate, framing)) {
            respond_error(
                *ex,
                error::invalid(where + " has " + std::to_string(n_before) + " tokens, but this model embeds at most " +
                                   std::to_string(n_max) + " tokens per input (" + std::to_string(n_before) + " > " +
                                   std::to_string(n_max) + "); shorten it, or set truncate to \"START\" or \"END\"",
                               "input", "context_length_exceeded"));
            return;
        }
        n_truncated += toks.size() < n_before ? 1 : 0;
        n_tokens += static_cast<int64_t>(toks.size());
        task->inputs.push_back(std::move(toks));
    }

    ex->log_field("model", ctx.model_id);
    ex->log_field("inputs", static_cast<int64_t>(task->inputs.size()));
    ex->log_field("prompt_tokens", n_tokens);
    if (n_truncated > 0) {
        ex->log_field("truncated_inputs", n_truncated);
    }
    if (!req->input_type.empty()) {
        ex->log_field("input_type", req->input_type);
    }
    charge(ctx, n_tokens);
    auto body_fn = [model_id = ctx.model_id, dims = req->dimensions, encoding = req->encoding,
                    n_tokens](outputs &vectors) {
        if (dims) {
            for (auto &v : vectors) {
                v = shorten_embedding(v, static_cast<size_t>(*dims));
            }
        }
        return embedding_response_body(model_id, vectors, encoding, n_tokens);
    };
    auto job =
        std::make_shared<embedding_job>(ex, std::move(emb), std::move(task),
                                        ctx.metrics ? &ctx.metrics->embeddings : nullptr, std::move(body_fn), ctx.hold);
    job->start();
}

void handle_ranking(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<embedder> emb,
                    const embedding_route_context &ctx, const nlohmann::json &body) {
    auto req = parse_ranking_request(body, ctx.limits);
    if (!req) {
        respond_error(*ex, req.err());
        return;
    }
    if (!check_model(*ex, req->model, ctx, emb, true)) {
        return;
    }
    auto         task     = std::make_shared<embedding_task>();
    const size_t n_max    = static_cast<size_t>(emb->n_input_max());
    int64_t      n_tokens = 0;
    for (size_t i = 0; i < req->passages.size(); ++i) {
        auto         pair    = emb->tokenize_rank(req->query, req->passages[i]);
        const size_t n_frame = pair.head.size() + pair.tail.size();
        const size_t n_all   = n_frame + pair.passage.size();
        if (n_all > n_max) {
            if (req->truncate == truncate_mode::none) {
                respond_error(*ex, error::invalid("the query and passages[" + std::to_string(i) + "] have " +
                                                      std::to_string(n_all) + " tokens together, but this model " +
                                                      "ranks at most " + std::to_string(n_max) + " tokens per pair (" +
                                                      std::to_string(n_all) + " > " + std::to_string(n_max) +
                                                      "); shorten them, or set truncate to \"END\"",
                                                  "passages", "context_length_exceeded"));
                return;
            }
            if (n_frame >= n_max) {
                respond_error(*ex, error::invalid("the query takes " + std::to_string(n_frame) +
                                                      " tokens with the model's ranking prompt, which leaves no room "
                                                      "for a passage within " +
                                                      std::to_string(n_max) + " tokens; shorten the query",
                                                  "query", "context_length_exceeded"));
                return;
            }
            truncate_tokens(pair.passage, n_max - n_frame, req->truncate);
        }
        std::vector<token_id> toks = std::move(pair.head);
        toks.insert(toks.end(), pair.passage.begin(), pair.passage.end());
        toks.insert(toks.end(), pair.tail.begin(), pair.tail.end());
        n_tokens += static_cast<int64_t>(toks.size());
        task->inputs.push_back(std::move(toks));
    }
    ex->log_field("model", ctx.model_id);
    ex->log_field("inputs", static_cast<int64_t>(task->inputs.size()));
    ex->log_field("prompt_tokens", n_tokens);
    charge(ctx, n_tokens);
    auto body_fn = [](outputs &scores) {
        std::vector<size_t> order(scores.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](size_t a, size_t b) { return scores[a].front() > scores[b].front(); });
        json rankings = json::array();
        for (size_t i : order) {
            rankings.push_back({{"index", i}, {"logit", scores[i].front()}});
        }
        return json{{"rankings", rankings}}.dump(-1, ' ', false, json::error_handler_t::replace);
    };
    auto job =
        std::make_shared<embedding_job>(ex, std::move(emb), std::move(task),
                                        ctx.metrics ? &ctx.metrics->ranking : nullptr, std::move(body_fn), ctx.hold);
    job->start();
}

} // namespace inferbox

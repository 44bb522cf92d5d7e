#include "engine/embedder.h"

#include "common.h"
#include "llama.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

namespace inferbox {

namespace {

// The string value of a GGUF metadata key, or nothing when the model lacks it.
std::optional<std::string> meta_string(const llama_model *m, const std::string &key) {
    char          buf[256];
    const int32_t n = llama_model_meta_val_str(m, key.c_str(), buf, sizeof(buf));
    if (n < 0) {
        return std::nullopt;
    }
    return std::string(buf, std::min<size_t>(static_cast<size_t>(n), sizeof(buf) - 1));
}

// `<arch>.pooling_type` as llama.cpp's loader reads it (an integer), when the model declares it.
std::optional<int64_t> metadata_pooling(const llama_model *m) {
    const auto arch = meta_string(m, "general.architecture");
    if (!arch) {
        return std::nullopt;
    }
    const auto v = meta_string(m, *arch + ".pooling_type");
    if (!v || v->empty()) {
        return std::nullopt;
    }
    char      *end = nullptr;
    const long n   = std::strtol(v->c_str(), &end, 10);
    if (end == nullptr || *end != '\0') {
        return std::nullopt;
    }
    return static_cast<int64_t>(n);
}

enum llama_pooling_type to_llama(pooling_kind p) {
    switch (p) {
    case pooling_kind::mean:
        return LLAMA_POOLING_TYPE_MEAN;
    case pooling_kind::cls:
        return LLAMA_POOLING_TYPE_CLS;
    case pooling_kind::last:
        return LLAMA_POOLING_TYPE_LAST;
    case pooling_kind::rank:
        return LLAMA_POOLING_TYPE_RANK;
    case pooling_kind::none:
        break;
    }
    return LLAMA_POOLING_TYPE_NONE;
}

bool all_finite(const std::vector<float> &v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

} // namespace

struct embedder::state {
    llama_context       *ctx = nullptr;
    llama_batch          batch{};
    std::optional<error> ctx_error; // why the context could not be created (then final)

    ~state() {
        if (ctx != nullptr) {
            llama_batch_free(batch);
            llama_free(ctx);
        }
    }
    state()                         = default;
    state(const state &)            = delete;
    state &operator=(const state &) = delete;
};

embedder::embedder(std::shared_ptr<const model> m, embedder_config cfg)
    : model_(std::move(m)), cfg_(std::move(cfg)), queue_(static_cast<size_t>(std::max(cfg_.max_queue_inputs, 1)),
                                                         [metrics = cfg_.metrics](size_t n) {
                                                             if (metrics) {
                                                                 metrics->queued_inputs.set(static_cast<double>(n));
                                                             }
                                                         }),
      st_(std::make_unique<state>()) {}

result<std::unique_ptr<embedder>> embedder::start(std::shared_ptr<const model> m, embedder_config cfg) {
    if (cfg.n_batch_tokens < 8 || cfg.n_batch_tokens > (1 << 20)) {
        return error::invalid("--embedding-batch-tokens must be between 8 and 1048576, got " +
                                  std::to_string(cfg.n_batch_tokens),
                              "embedding-batch-tokens");
    }
    if (cfg.n_batch_inputs < 1 || cfg.n_batch_inputs > 256) { // llama.cpp's LLAMA_MAX_SEQ
        return error::invalid("--embedding-batch-inputs must be between 1 and 256, got " +
                                  std::to_string(cfg.n_batch_inputs),
                              "embedding-batch-inputs");
    }
    if (cfg.max_queue_inputs < 1) {
        return error::invalid("--embedding-max-queue must be at least 1, got " + std::to_string(cfg.max_queue_inputs),
                              "embedding-max-queue");
    }
    if (cfg.n_threads <= 0) {
        cfg.n_threads = static_cast<int32_t>(std::max(1U, std::thread::hardware_concurrency()));
    }
    std::unique_ptr<embedder> e(new embedder(std::move(m), std::move(cfg)));
    const llama_model        *raw = e->model_->raw();
    e->pooling_                   = resolve_pooling(e->cfg_.pooling, metadata_pooling(raw));
    e->n_embd_                    = llama_model_n_embd_out(raw);
    e->n_out_                     = e->pooling_ == pooling_kind::rank
                                        ? static_cast<int32_t>(std::max<uint32_t>(1, llama_model_n_cls_out(raw)))
                                        : e->n_embd_;
    const int32_t n_ctx_train     = e->model_->n_ctx_train();
    e->n_input_max_ = n_ctx_train > 0 ? std::min(n_ctx_train, e->cfg_.n_batch_tokens) : e->cfg_.n_batch_tokens;
    e->use_encode_  = llama_model_has_encoder(raw);
    if (const char *t = llama_model_chat_template(raw, "rerank")) {
        e->rank_template_ = t;
    }
    if (e->pooling_ == pooling_kind::none) {
        e->disabled_reason_ = "embeddings are switched off on this server (--pooling none)";
    } else if (llama_model_has_encoder(raw) && llama_model_has_decoder(raw)) {
        e->disabled_reason_ = "this model is an encoder-decoder model, which the embedder does not serve";
    } else if (e->n_embd_ <= 0) {
        e->disabled_reason_ = "this model reports no embedding size";
    }
    if (!e->enabled()) {
        spdlog::info("embeddings off: {}", e->disabled_reason_);
        return e;
    }
    spdlog::info("embeddings: {} pooling, {} dimensions, up to {} tokens per input, batches of {} tokens / {} inputs, "
                 "queue {} inputs (context created on first use)",
                 pooling_name(e->pooling_), e->n_embd_, e->n_input_max_, e->cfg_.n_batch_tokens, e->cfg_.n_batch_inputs,
                 e->cfg_.max_queue_inputs);
    e->thread_ = std::thread([p = e.get()] { p->loop(); });
    return e;
}

embedder::~embedder() {
    stop();
    st_.reset();
}

void embedder::stop() {
    queue_.close();
    if (thread_.joinable()) {
        thread_.join();
    }
}

std::optional<error> embedder::submit(std::shared_ptr<embedding_task> task) {
    if (!enabled()) {
        return error{error_kind::unavailable, disabled_reason_, "", "embeddings_disabled"};
    }
    return queue_.push(std::move(task));
}

void embedder::cancel(const std::shared_ptr<embedding_task> &task) {
    task->cancel();
    queue_.notify();
}

embedding_tokens embedder::tokenize(const std::string &text) const {
    const llama_vocab *vocab = model_->vocab();
    embedding_tokens   out;
    out.tokens = common_tokenize(vocab, text, /*add_special=*/true, /*parse_special=*/false);
    // The frame is what add_special added around the plain tokens; found by comparing, since
    // tokenizers differ in what they add (SPM: BOS; WPM: CLS and SEP; some nothing).
    const auto plain = common_tokenize(vocab, text, /*add_special=*/false, /*parse_special=*/false);
    if (plain.size() <= out.tokens.size()) {
        const size_t n_extra = out.tokens.size() - plain.size();
        for (size_t lead = 0; lead <= n_extra; ++lead) {
            if (std::equal(plain.begin(), plain.end(), out.tokens.begin() + static_cast<std::ptrdiff_t>(lead))) {
                out.framing = {lead, n_extra - lead};
                break;
            }
        }
    }
    return out;
}

rank_tokens embedder::tokenize_rank(const std::string &query, const std::string &passage) const {
    const llama_vocab *vocab = model_->vocab();
    rank_tokens        out;
    const auto         append = [](std::vector<token_id> &dst, const std::vector<token_id> &src) {
        dst.insert(dst.end(), src.begin(), src.end());
    };
    out.passage   = common_tokenize(vocab, passage, false, false);
    const auto qp = rank_template_.find("{query}");
    const auto dp = rank_template_.find("{document}");
    if (qp != std::string::npos && dp != std::string::npos && qp < dp) {
        // The template's own text may hold control tokens; the query and passage never do.
        const std::string before = rank_template_.substr(0, qp);
        const std::string middle = rank_template_.substr(qp + 7, dp - qp - 7);
        const std::string after  = rank_template_.substr(dp + 10);
        append(out.head, common_tokenize(vocab, before, false, true));
        append(out.head, common_tokenize(vocab, query, false, false));
        append(out.head, common_tokenize(vocab, middle, false, true));
        out.tail = common_tokenize(vocab, after, false, true);
        return out;
    }
    token_id eos = llama_vocab_eos(vocab);
    if (eos == LLAMA_TOKEN_NULL) {
        eos = llama_vocab_sep(vocab);
    }
    if (llama_vocab_get_add_bos(vocab) && llama_vocab_bos(vocab) != LLAMA_TOKEN_NULL) {
        out.head.push_back(llama_vocab_bos(vocab));
    }
    append(out.head, common_tokenize(vocab, query, false, false));
    if (llama_vocab_get_add_eos(vocab) && eos != LLAMA_TOKEN_NULL) {
        out.head.push_back(eos);
    }
    if (llama_vocab_get_add_sep(vocab) && llama_vocab_sep(vocab) != LLAMA_TOKEN_NULL) {
        out.head.push_back(llama_vocab_sep(vocab));
    }
    if (llama_vocab_get_add_eos(vocab) && eos != LLAMA_TOKEN_NULL) {
        out.tail.push_back(eos);
    }
    return out;
}

void embedder::loop() {
    const embedding_batch_limits limits{static_cast<size_t>(cfg_.n_batch_tokens),
                                        static_cast<size_t>(cfg_.n_batch_inputs)};
    for (;;) {
        auto batch = queue_.wait_take(limits);
        if (!batch) {
            break; // closed
        }
        if (batch->empty()) {
            continue; // only cancelled work was queued
        }
        run_batch(*batch);
        queue_.batch_done();
    }
    // Shutdown: whatever is still queued gets a clean error, so no client waits for ever.
    const error err{error_kind::unavailable, "the server is shutting down", "", ""};
    for (auto &task : queue_.drain()) {
        if (!task->cancelled()) {
            fail(*task, err);
        }
    }
}

void embedder::fail(embedding_task &task, const error &err) {
    if (task.finished) {
        return;
    }
    task.finished = true;
    task.cancel(); // the queue drops the inputs not yet taken
    task.done(err);
}

std::optional<error> embedder::ensure_context() {
    if (st_->ctx != nullptr) {
        return std::nullopt;
    }
    if (st_->ctx_error) {
        return st_->ctx_error;
    }
    auto cp = llama_context_default_params();
    // One ubatch per batch: pooling runs per ubatch, so a sequence split across two would be
    // pooled from half its tokens. n_ctx = n_batch = n_ubatch, one KV buffer for all sequences
    // (kv_unified: any input may use the whole buffer), cleared after every batch.
    const auto n       = static_cast<uint32_t>(cfg_.n_batch_tokens);
    cp.n_ctx           = n;
    cp.n_batch         = n;
    cp.n_ubatch        = n;
    cp.n_seq_max       = static_cast<uint32_t>(cfg_.n_batch_inputs);
    cp.n_threads       = cfg_.n_threads;
    cp.n_threads_batch = cfg_.n_threads;
    cp.embeddings      = true;
    cp.pooling_type    = to_llama(pooling_);
    cp.kv_unified      = true;
    cp.no_perf         = true;
    const auto t0      = std::chrono::steady_clock::now();
    st_->ctx           = llama_init_from_model(model_->raw(), cp);
    if (st_->ctx == nullptr) {
        st_->ctx_error = error{error_kind::internal,
                               "the embedder could not create its llama.cpp context (" + std::to_string(n) +
                                   " tokens, " + std::to_string(cfg_.n_batch_inputs) +
                                   " sequences): lower --embedding-batch-tokens or --embedding-batch-inputs",
                               "", "embedder_unavailable"};
        spdlog::error("{}", st_->ctx_error->message);
        return st_->ctx_error;
    }
    // llama.cpp may round sizes; every batch must fit one ubatch (checked again per batch).
    const uint32_t n_fit = std::min({llama_n_batch(st_->ctx), llama_n_ubatch(st_->ctx), llama_n_ctx(st_->ctx)});
    if (n_fit < n || llama_n_seq_max(st_->ctx) < static_cast<uint32_t>(cfg_.n_batch_inputs)) {
        llama_free(st_->ctx);
        st_->ctx       = nullptr;
        st_->ctx_error = error{error_kind::internal,
                               "the embedder's llama.cpp context holds " + std::to_string(n_fit) +
                                   " tokens per batch, fewer than --embedding-batch-tokens " + std::to_string(n),
                               "", "embedder_unavailable"};
        spdlog::error("{}", st_->ctx_error->message);
        return st_->ctx_error;
    }
    st_->batch = llama_batch_init(cfg_.n_batch_tokens, 0, 1);
    spdlog::info("embedder context ready: {} pooling, {} tokens × {} sequences, in {:.0f} ms", pooling_name(pooling_),
                 n, cfg_.n_batch_inputs,
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    return std::nullopt;
}

void embedder::run_batch(const std::vector<embedding_batch_item> &batch) {
    const auto t0 = std::chrono::steady_clock::now();
    // Distinct tasks of this batch, in order, for failing them together.
    std::vector<embedding_task *> tasks;
    for (const auto &it : batch) {
        if (tasks.empty() || tasks.back() != it.task.get()) {
            tasks.push_back(it.task.get());
        }
    }
    const auto fail_all = [&](const error &err) {
        for (auto *t : tasks) {
            if (!t->cancelled()) {
                fail(*t, err);
            }
        }
    };
    if (auto err = ensure_context()) {
        fail_all(*err);
        return;
    }
    llama_context *ctx = st_->ctx;

    // Preconditions llama.cpp asserts on (an abort would take the server down): checked here.
    size_t n_tokens = 0;
    for (const auto &it : batch) {
        n_tokens += it.task->inputs[it.input].size();
    }
    if (n_tokens > static_cast<size_t>(cfg_.n_batch_tokens) ||
        batch.size() > static_cast<size_t>(cfg_.n_batch_inputs)) {
        fail_all(error{error_kind::internal,
                       "embedding batch of " + std::to_string(n_tokens) + " tokens exceeds the embedder's limits", "",
                       "embedder_error"});
        return;
    }

    auto &b = st_->batch;
    common_batch_clear(b);
    for (size_t s = 0; s < batch.size(); ++s) {
        const auto &toks = batch[s].task->inputs[batch[s].input];
        for (size_t j = 0; j < toks.size(); ++j) {
            // Every token is an output: llama.cpp pools over the outputs of each sequence.
            common_batch_add(b, toks[j], static_cast<llama_pos>(j), {static_cast<llama_seq_id>(s)}, true);
        }
    }
    const int32_t  rc  = use_encode_ ? llama_encode(ctx, b) : llama_decode(ctx, b);
    llama_memory_t mem = llama_get_memory(ctx);
    if (rc != 0) {
        if (mem != nullptr) {
            llama_memory_clear(mem, true);
        }
        spdlog::error("the embedder's llama.cpp call failed (code {}) for a batch of {} inputs / {} tokens", rc,
                      batch.size(), n_tokens);
        fail_all(error{error_kind::internal,
                       "the embedder failed to encode this request (llama.cpp returned " + std::to_string(rc) + ")", "",
                       "embedder_error"});
        return;
    }
    // Counted before any answer goes out, so a client that reads its answer and then scrapes
    // sees its tokens.
    if (cfg_.metrics) {
        auto &m = *cfg_.metrics;
        m.inputs.inc(batch.size());
        m.tokens.inc(n_tokens);
        m.batches.inc();
        m.batch_inputs.observe(static_cast<double>(batch.size()));
        m.batch_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::vector<embedding_task *> completed;
    for (size_t s = 0; s < batch.size(); ++s) {
        auto &task = *batch[s].task;
        if (task.finished || task.cancelled()) {
            continue;
        }
        const float *v = llama_get_embeddings_seq(ctx, static_cast<llama_seq_id>(s));
        if (v == nullptr) {
            fail(task, error{error_kind::internal, "the model produced no pooled output for this input", "",
                             "embedder_error"});
            continue;
        }
        std::vector<float> out(v, v + n_out_);
        if (!all_finite(out)) {
            fail(task, error{error_kind::internal, "the model produced a non-finite embedding for this input", "",
                             "embedder_error"});
            continue;
        }
        if (pooling_ != pooling_kind::rank) {
            l2_normalize(out);
        }
        if (task.results.size() != task.inputs.size()) {
            task.results.resize(task.inputs.size());
        }
        task.results[batch[s].input] = std::move(out);
        if (++task.n_done == task.inputs.size()) {
            completed.push_back(&task);
        }
    }
    // The pooled outputs are copied out: the KV is cleared for the next batch before answering.
    if (mem != nullptr) {
        llama_memory_clear(mem, true);
    }
    for (auto *task : completed) {
        if (!task->finished && !task->cancelled()) {
            task->finished = true;
            task->done(std::move(task->results));
        }
    }
}

} // namespace inferbox

#pragma once
// The embedder: embeddings and ranking scores for the served model, beside the generation
// engine. It owns a llama_context of its own (embeddings on, a pooling type, a single KV buffer
// of --embedding-batch-tokens cells) and one thread that takes batches from a bounded queue,
// encodes each batch in one llama_decode/llama_encode call with a sequence id per input, reads
// the pooled vectors and clears its KV for the next batch. The generation engine's context, KV
// cache and thread are never touched, so embedding traffic cannot corrupt or stall a stream
// beyond sharing the CPU/GPU.
//
// The context is created lazily by the embedder thread on the first batch (a server that never
// embeds pays no memory for it); if creation fails, every embedding request gets that error.

#include "common/status.h"
#include "engine/embedding.h"
#include "metrics/embedding_metrics.h"
#include "model/model.h"

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace inferbox {

struct embedder_config {
    pooling_choice pooling          = pooling_choice::model; // --pooling
    int32_t        n_batch_tokens   = 2048;                  // tokens per batch (also the KV size)
    int32_t        n_batch_inputs   = 64;                    // sequences per batch (llama.cpp allows 256)
    int32_t        max_queue_inputs = 1024;                  // queued inputs beyond which submit() refuses
    int32_t        n_threads        = 0;                     // 0 = all hardware threads
    // Where the embedder reports inputs, tokens and batches; may be null.
    std::shared_ptr<embedding_metrics> metrics;
};

// A text tokenized for embedding, with the special tokens the tokenizer framed it with.
struct embedding_tokens {
    std::vector<token_id> tokens;
    token_framing         framing;
};

// One (query, passage) pair of a ranking request, tokenized: the model sees head + passage +
// tail. Truncation shortens the passage only.
struct rank_tokens {
    std::vector<token_id> head;
    std::vector<token_id> passage;
    std::vector<token_id> tail;
};

class embedder {
  public:
    // Resolves the pooling from --pooling and the model's metadata and starts the thread (not
    // when embeddings are off). Fails on an invalid configuration.
    static result<std::unique_ptr<embedder>> start(std::shared_ptr<const model> m, embedder_config cfg);
    ~embedder(); // stop(), then frees the context
    embedder(const embedder &)            = delete;
    embedder &operator=(const embedder &) = delete;

    // Thread-safe, never blocks on the embedder. Queues the task (its inputs already validated:
    // non-empty, token ids in the vocabulary, at most n_input_max() tokens each) or returns
    // `overloaded` when the queue is full, `unavailable` when stopping or when embeddings are off.
    std::optional<error> submit(std::shared_ptr<embedding_task> task);
    // Thread-safe: the task's remaining inputs are dropped and its callback is never called.
    void cancel(const std::shared_ptr<embedding_task> &task);
    // Stops the thread after its current batch; queued tasks fail with `unavailable` (idempotent).
    void stop();

    // Immutable after start(); any thread.
    bool enabled() const { return disabled_reason_.empty(); }
    // Why embeddings are off (--pooling none, or a model the embedder cannot serve); empty when on.
    const std::string     &disabled_reason() const { return disabled_reason_; }
    pooling_kind           pooling() const { return pooling_; }
    bool                   is_reranker() const { return pooling_ == pooling_kind::rank; }
    int32_t                n_embd() const { return n_embd_; }           // components of an embedding
    int32_t                n_input_max() const { return n_input_max_; } // tokens in one input
    int32_t                n_vocab() const { return model_->n_vocab(); }
    const embedder_config &config() const { return cfg_; }

    // Thread-safe tokenization (read-only vocabulary). User text never becomes control tokens.
    embedding_tokens tokenize(const std::string &text) const;
    // The model's rerank prompt (its `rerank` chat template, or BOS query EOS SEP passage EOS).
    rank_tokens tokenize_rank(const std::string &query, const std::string &passage) const;

    bool   idle() const { return queue_.idle(); } // nothing queued, no batch running
    size_t n_queued() const { return queue_.n_queued(); }

  private:
    embedder(std::shared_ptr<const model> m, embedder_config cfg);
    void                 loop();
    std::optional<error> ensure_context();
    void                 run_batch(const std::vector<embedding_batch_item> &batch);
    static void          fail(embedding_task &task, const error &err);

    std::shared_ptr<const model> model_;
    embedder_config              cfg_;
    pooling_kind                 pooling_     = pooling_kind::none;
    int32_t                      n_embd_      = 0;
    int32_t                      n_out_       = 0; // floats per sequence: n_embd, or the classifier's outputs
    int32_t                      n_input_max_ = 0;
    bool                         use_encode_  = false; // encoder-only model: llama_encode
    std::string                  disabled_reason_;
    std::string                  rank_template_; // the model's `rerank` template, when it has one

    embedding_queue queue_;
    struct state; // embedder-thread-only: the llama_context and its batch
    std::unique_ptr<state> st_;
    std::thread            thread_;
    std::atomic<bool>      stopped_{false};
};

} // namespace inferbox

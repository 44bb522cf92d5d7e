#pragma once
// Embeddings and ranking: the typed boundary between the API layer and the embedder
// (embedding_task), and the model-free parts of the embedder: the pooling choice, truncation,
// normalisation and the batching queue. No llama.cpp, no JSON, no HTTP here, so all of it is
// unit-tested without a model.

#include "common/status.h"
#include "engine/types.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

namespace inferbox {

// How the embedder turns a sequence's token states into one vector (llama_pooling_type's values
// for mean, cls, last and rank). `none` means embeddings are switched off (--pooling none).
enum class pooling_kind { none, mean, cls, last, rank };
const char *pooling_name(pooling_kind p);

// --pooling: `model` (shown as "auto") follows the GGUF metadata, the others force a kind.
enum class pooling_choice { model, mean, cls, last, none };
std::optional<pooling_choice> parse_pooling_choice(std::string_view s); // "auto", "mean", ...

// The pooling the embedder uses. `metadata` is the model's `<arch>.pooling_type` value when the
// GGUF declares one. A generative model declares none (or NONE = 0), and is mean-pooled; an
// unknown value is mean-pooled too. A forced kind wins, except that nothing can force rank: a
// classification head only exists where the metadata declares it.
pooling_kind resolve_pooling(pooling_choice choice, std::optional<int64_t> metadata);

// NIM's `truncate`: what to do with an input longer than the embedder takes.
enum class truncate_mode { none, start, end };

// Special tokens the tokenizer put around a text (BOS/CLS first, EOS/SEP last). Truncation keeps
// them: CLS pooling reads the first token, and encoders expect the closing separator.
struct token_framing {
    size_t n_lead  = 0;
    size_t n_trail = 0;
};

// Shortens `tokens` to `limit` tokens: `start` drops tokens after the leading frame, `end` drops
// tokens before the trailing frame (when the frame leaves no room, the raw sequence is cut).
// Returns false, leaving `tokens` unchanged, when they are longer than `limit` and mode is none.
// Returns true when `tokens` now fits. Requires limit >= 1.
bool truncate_tokens(std::vector<token_id> &tokens, size_t limit, truncate_mode mode, token_framing framing = {});

// Scales `v` to unit L2 norm (computed in double); a zero vector stays zero.
void l2_normalize(std::vector<float> &v);

// OpenAI's `dimensions`: the first `dims` components, re-normalised to unit length.
// Requires 1 <= dims; dims >= v.size() returns v unchanged.
std::vector<float> shorten_embedding(const std::vector<float> &v, size_t dims);

// One request's inputs on their way through the embedder. Created by the API layer and handed to
// embedder::submit(); the embedder then owns every field below `done` (embedder thread only).
struct embedding_task {
    using outputs  = std::vector<std::vector<float>>;
    using callback = std::function<void(result<outputs>)>;

    std::vector<std::vector<token_id>> inputs; // each non-empty and within the embedder's limits
    // Called exactly once on the embedder thread, unless the task was cancelled first: with one
    // vector per input (in input order) or with the error that ended it. It must not block.
    callback done;

    // Any thread: the embedder drops the task's remaining inputs and never calls `done`.
    void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
    bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

    // Embedder-side state.
    outputs results;
    size_t  n_taken  = 0; // inputs handed out in batches so far
    size_t  n_done   = 0; // inputs whose vector is in `results`
    bool    finished = false;

  private:
    std::atomic<bool> cancelled_{false};
};

struct embedding_batch_limits {
    size_t n_tokens = 2048; // tokens in one batch (every input fits on its own)
    size_t n_inputs = 64;   // sequences in one batch
};

struct embedding_batch_item {
    std::shared_ptr<embedding_task> task;
    size_t                          input = 0; // index into task->inputs
};

// The embedder's bounded FIFO of inputs and its batching policy.
//
// Policy: a batch takes queued inputs in arrival order (across requests) while both limits hold,
// and stops at the first input that does not fit, so a long input is never overtaken for ever.
// The first input always fits: the API layer refuses or truncates inputs longer than
// limits.n_tokens. Cancelled tasks are dropped when the batch is formed.
//
// Thread-safety: every method may be called from any thread.
class embedding_queue {
  public:
    // `on_change`, when set, is called with the number of queued inputs every time it changes,
    // under the queue's lock (so a gauge it sets never goes back to a stale value); it must be
    // cheap and must not call back into the queue.
    explicit embedding_queue(size_t max_inputs, std::function<void(size_t)> on_change = {})
        : max_inputs_(max_inputs), on_change_(std::move(on_change)) {}

    // Queues all of the task's inputs or none: `overloaded` when that would put more than
    // max_inputs inputs in the queue, `unavailable` once closed. Never blocks.
    std::optional<error> push(std::shared_ptr<embedding_task> task);

    // The next batch, or an empty one when nothing is queued. Marks a batch in flight until
    // batch_done() when the result is non-empty.
    std::vector<embedding_batch_item> try_take(const embedding_batch_limits &limits);
    // Blocks until something is queued, then as try_take: the batch may be empty when everything
    // queued was cancelled (so the caller can publish the shrunken queue). Nothing once closed.
    std::optional<std::vector<embedding_batch_item>> wait_take(const embedding_batch_limits &limits);
    void                                             batch_done();

    // Wakes a waiting wait_take() so that it drops cancelled tasks.
    void notify() { cv_.notify_all(); }
    // Refuses further pushes and wakes wait_take(), which then returns nothing.
    void close();
    // After close(): the tasks that still have queued inputs, removed from the queue.
    std::vector<std::shared_ptr<embedding_task>> drain();

    size_t n_queued() const;
    bool   idle() const; // nothing queued and no batch in flight

  private:
    std::vector<embedding_batch_item> take_locked(const embedding_batch_limits &limits);
    void                              changed_locked() const;

    const size_t                                max_inputs_;
    const std::function<void(size_t)>           on_change_;
    mutable std::mutex                          mu_;
    std::condition_variable                     cv_;
    std::deque<std::shared_ptr<embedding_task>> tasks_; // each with inputs not yet taken
    size_t                                      n_queued_  = 0;
    bool                                        in_flight_ = false;
    bool                                        closed_    = false;
};

} // namespace inferbox

#pragma once
// The engine core's only view of the model runtime (the decoder seam). The engine thread
// (engine.cpp) decides what to compute, for whom and in what order; a decoder computes it: one
// batched forward pass, the logits it leaves, the KV cache's per-slot sequences, LoRA adapters,
// and a sampler per sequence. llama.cpp is one implementation (engine/llama_decoder.h); the unit
// tests drive the engine core through a scripted fake (tests/unit/fake_decoder.h), so admission,
// cancellation, decode failures, adapter switching and speculative acceptance are tested without
// a model and under ThreadSanitizer.
//
// Threads: the vocabulary queries may be called from any thread; everything else from the engine
// thread only.

#include "common/status.h"
#include "engine/types.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace inferbox {

// One token of a batch: its id, its position in its slot's sequence, the slot (KV sequence) it
// extends, and whether the decode keeps its logits (only positions that are sampled do).
struct batch_token {
    token_id token  = 0;
    int32_t  pos    = 0;
    int32_t  slot   = 0;
    bool     logits = false;
};

// What sampling one position gives.
struct sampled_token {
    token_id token = 0;
    // The sequence's grammar allows no token of the vocabulary here (every candidate was masked);
    // `token` is then meaningless and the sequence cannot go on.
    bool dead_end = false;
};

// One sequence's sampler chain (penalties, logit bias, grammar, temperature and the rest), with
// the state it keeps between tokens.
class sequence_sampler {
  public:
    virtual ~sequence_sampler() = default;
    // Samples from the logits the last decode left at `batch_index`.
    virtual sampled_token sample(int32_t batch_index) = 0;
    // Commits a sampled token to the chain's state (penalty history, grammar). Throws when the
    // grammar rejects it; the engine then fails the sequence.
    virtual void accept(token_id tok) = 0;
};

// The guesses of speculative decoding from a draft model (engine/draft_model.h).
struct draft_job {
    int32_t                   slot = 0;
    std::span<const token_id> history;        // every token of the sequence, the unverified next one last
    int32_t                   max_tokens = 0; // most tokens to guess
    std::vector<token_id>     out;            // the guesses
};

class token_drafter {
  public:
    virtual ~token_drafter() = default;
    // Fills each job's `out` (possibly with nothing: drafting is an optimisation).
    virtual void run(std::vector<draft_job> &jobs) = 0;
};

// A loaded LoRA adapter, as the decoder numbers them.
using adapter_handle = uint32_t;

class decoder {
  public:
    virtual ~decoder() = default;

    // What the runtime settled on: tokens per slot and the most tokens one decode() takes.
    virtual int32_t n_ctx_slot() const = 0;
    virtual int32_t max_batch() const  = 0;

    // The vocabulary (any thread).
    virtual int32_t     n_vocab() const                       = 0;
    virtual bool        is_eog(token_id t) const              = 0;
    virtual std::string piece(token_id t, bool special) const = 0; // the token's text

    // One decode that proves the runtime works, leaving the KV cache empty.
    virtual bool warm_up() = 0;
    // One forward pass over `batch` (at most max_batch() tokens); 0 on success, else the
    // runtime's failure code, and the KV of the batch's slots is then unknown.
    virtual int32_t decode(std::span<const batch_token> batch) = 0;
    // The logits (n_vocab() floats) the last decode kept at `batch_index`.
    virtual const float *logits(int32_t batch_index) = 0;

    // The KV cache: `dst` becomes a copy of `src`'s sequence; `slot` forgets every position from
    // `from_pos` on (0 forgets all).
    virtual void kv_copy(int32_t src_slot, int32_t dst_slot) = 0;
    virtual void kv_trim(int32_t slot, int32_t from_pos)     = 0;

    // A sampler for choice `choice` (0-based; it offsets a fixed seed so n choices differ) of a
    // request with these parameters. An error when the runtime cannot build it.
    virtual result<std::unique_ptr<sequence_sampler>> make_sampler(const sampling_params &p, int32_t choice) = 0;

    // LoRA adapters: loading (an error names why not), freeing, and which one (with its scale)
    // the next decodes run under; nullopt runs the base model.
    virtual result<adapter_handle> load_adapter(const std::string &path)                     = 0;
    virtual void                   free_adapter(adapter_handle h)                            = 0;
    virtual void                   use_adapter(std::optional<adapter_handle> h, float scale) = 0;

    // The draft model's guesser when speculative decoding has one; null otherwise.
    virtual token_drafter *drafter() = 0;
};

} // namespace inferbox

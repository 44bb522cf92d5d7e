#pragma once
// The drafter of speculative decoding with a small model: it guesses the next tokens of many
// sequences at once, greedily, and the engine verifies the guesses with the served model in one
// batched decode. It owns a llama_context with one sequence per engine slot and remembers, per
// slot, which tokens that context's KV holds, so each call computes only what changed since the
// previous one (new prompt tokens, accepted tokens), the way the slot table serves the target.
// Engine thread only.

#include "common/status.h"
#include "engine/decoder.h"
#include "engine/engine.h" // kv_cache_type, flash_attention
#include "kv/slot_table.h"
#include "model/model.h"

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "llama.h"

namespace inferbox {

struct draft_config {
    int32_t n_slots    = 1;
    int32_t n_ctx_slot = 0;   // must equal the target's, so a slot never outgrows its draft
    int32_t n_batch    = 512; // tokens per catch-up decode
    int32_t n_ubatch   = 512; // tokens per compute graph: the served model's micro-batch (at least n_slots)
    int32_t n_threads  = 1;
    float   p_min      = 0.5f; // a guess the draft model is less sure of than this ends the draft
    // The served model's attention settings (engine/context_params.h), as serve settled them
    // (q8_0 KV excepted: the engine passes f16 then).
    std::optional<kv_cache_type> kv_type;
    flash_attention              flash_attn = flash_attention::automatic;
};

class draft_model final : public token_drafter {
  public:
    // Fails when the vocabularies differ: drafts are token ids, so they must mean the same text.
    static result<std::unique_ptr<draft_model>> create(std::shared_ptr<const model> draft, const model &target,
                                                       draft_config cfg);
    ~draft_model() override;
    draft_model(const draft_model &)            = delete;
    draft_model &operator=(const draft_model &) = delete;

    using job = draft_job;
    // Fills each job's `out`. One decode catches every slot up with its history, then one decode
    // per drafted position serves all jobs still drafting. A failed decode leaves the jobs it
    // served without guesses (speculation is an optimisation: the target then decodes normally).
    void run(std::vector<job> &jobs) override;

    const model &get_model() const { return *model_; }

  private:
    draft_model(std::shared_ptr<const model> m, draft_config cfg);
    void forget(int32_t slot); // the slot's draft KV is unknown (after a failed decode)

    std::shared_ptr<const model>       model_;
    draft_config                       cfg_;
    llama_context                     *ctx_   = nullptr;
    llama_batch                        batch_ = {}; // n_batch tokens, reused by every run()
    std::vector<std::vector<token_id>> held_;       // per slot: the tokens whose KV ctx_ holds
};

} // namespace inferbox

#pragma once
// Continuous-batching policy: admission, slot assignment with prefix reuse, and the per-step
// plan (decode tokens of every running sequence plus prompt chunks under a token budget).
// Pure logic: no llama.cpp, no threads, no I/O, so it is unit-tested with a fake engine.
//
// Protocol (one engine thread calls everything):
//   submit()/cancel() as requests arrive or leave;
//   set_draft() for decoding sequences the engine speculates on (optional);
//   plan = schedule();  the engine runs plan.kv_ops, then one decode of plan.items;
//   for every item with `sample`, on_sampled(id, tokens, finished);  or fail_step(plan) when the
//   decode failed. schedule() records the planned tokens as computed, so the slot table always
//   describes the KV the engine holds after the step.
//
// KV keys (LoRA adapters): a sequence is submitted under a kv_key (0 = the base model). One decode
// runs under one key (llama.cpp applies adapters to the whole context), so each step's items all
// share plan.key; when sequences of several keys are running, steps take the keys in turn.
// Prefixes are only reused, shared or waited for between sequences of the same key.
//
// Speculative decoding: a decoding sequence's item may carry drafted tokens after its next token
// (plan_item::n_draft). All of them are computed and sampled; on_sampled() then gets the tokens
// the engine accepted (the matching drafts and one more) and forgets the KV of the rest.

#include "kv/slot_table.h"

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace inferbox {

// How long an idle engine waits for more requests before it starts on the `queued` it has, the
// first with a prompt of `first_prompt_tokens` tokens. Requests sent together reach the engine
// a fraction of a millisecond apart; starting a long prefill with the first alone makes the rest
// wait a whole step for it. The wait is 1% of the first prompt's expected prefill time (from the
// measured microseconds per prompt token; 0 = not measured yet), at most 2 ms, and none when it
// would be under 50 us, with one slot, or when the queued requests already fill the slots.
std::chrono::microseconds arrival_window(double prefill_us_per_token, int32_t first_prompt_tokens, int32_t queued,
                                         int32_t n_slots);

struct scheduler_config {
    int32_t n_slots              = 1;
    int32_t n_ctx_slot           = 512;  // KV capacity of one slot, in tokens
    int32_t max_waiting          = 64;   // waiting-queue bound; submit() refuses beyond it
    int32_t step_tokens          = 2048; // tokens per decode step (llama_decode batch)
    int32_t prefill_while_decode = 256;  // prompt tokens per step while sequences decode (see schedule())
    bool    prefix_reuse         = true;
    int32_t min_copy_gain        = 16; // tokens a cross-slot KV copy must save
    int32_t min_shared_wait      = 32; // shared prefix worth waiting for another prefill
    double  prefill_step_us      = 0;  // prompt work that ends a step's prompt list (see schedule()); 0 = off
    // Latency targets (serve's --slo-ttft-ms, --slo-itl-ms; 0 = none, and with neither the plan is
    // exactly what it is without these fields). With an inter-token target, a step that decodes
    // takes only the prompt tokens its measured costs say fit in the target beside the decode
    // (set_step_costs(); see schedule()). With a first-token target, waiting sequences are
    // admitted and prompts computed earliest deadline (arrival + target) first.
    double slo_ttft_us = 0;
    double slo_itl_us  = 0;
};

// The most prompt tokens a step that decodes may add and still end within an inter-token target
// of `itl_us`, given what its decode part costs (`decode_us`, measured) and what a prompt token
// costs beside it (`prompt_us_per_token`, measured). Only k_itl_headroom of the target is planned:
// the rest is for what the measurements miss (their spread, streaming the token, the next step's
// planning), since a request's inter-token p99 is close to its longest gap. At least
// `min_tokens`, so prompts still progress when the decode alone nearly fills the target; nullopt
// while the prompt cost is unknown (0) or there is no target.
std::optional<int32_t> itl_prompt_tokens(double itl_us, double decode_us, double prompt_us_per_token,
                                         int32_t min_tokens);
constexpr double       k_itl_headroom = 0.85;

// What the decode part of a step of `n` decoding sequences is expected to take, from measurements
// by sequence count (`by_seqs[m]`, microseconds, 0 = not measured): by_seqs[n] when measured; else
// the nearest measured smaller count scaled up in proportion (on a CPU, more streams cost nearly
// proportionally more: ~20 ms for one stream of the ~0.5B model, ~45 for two, ~85 for six), which
// errs long, as a new stream's first steps should; else the nearest measured larger count; else 0.
double expected_decode_us(std::span<const double> by_seqs, int32_t n);
// The fewest prompt tokens the scheduler lets a step beside decodes take under an inter-token
// target. A prompt batch has a fixed cost besides its tokens (on the 2-core test machine, ~25 ms
// beside ~4.5 ms a token for the ~0.5B model), so fewer tokens would barely shorten the stall
// while the prompt's first token waited many more steps. The engine measures the cost per token
// of prompt batches of at least this many tokens beside decodes, so the measurement that sizes the
// chunks follows them: a chunk's cost per token includes its share of the fixed cost, and the
// budget settles where fixed cost plus tokens fill the room.
constexpr int32_t k_itl_min_prompt_tokens = 8;

enum class seq_phase {
    waiting,        // in the queue, no slot
    waiting_prefix, // has a slot; waits for another sequence to compute a shared prefix
    prefilling,     // prompt being computed in chunks
    decoding,       // generating one token per step
};

// One KV-cache operation the engine performs before the step's decode.
struct kv_op {
    int32_t src_slot = -1; // >= 0: copy src's whole KV into dst first
    int32_t dst_slot = -1;
    int32_t keep     = 0; // then drop everything in dst from this position on
};

// What a plan item computes: a chunk of a sequence's prompt, or its next token (with drafts).
enum class plan_work { prompt, decode };

struct plan_item {
    uint64_t              id   = 0;
    int32_t               slot = -1;
    int32_t               pos  = 0;        // position of tokens[0]
    std::vector<token_id> tokens;          // a prompt chunk, or the one token to decode
    bool                  sample  = false; // logits of the last token are sampled
    int32_t               n_draft = 0;     // tokens[1..n_draft] are drafts: every token's logits are sampled
    plan_work             work    = plan_work::prompt;
};

struct step_plan {
    std::vector<kv_op>     kv_ops;
    std::vector<plan_item> items;
    kv_key                 key      = 0; // what every item is computed under
    int32_t                n_tokens = 0;
    std::vector<uint64_t>  admitted; // sequences that left the waiting queue this step
    bool                   empty() const { return items.empty() && kv_ops.empty(); }
};

struct seq_info {
    seq_phase phase       = seq_phase::waiting;
    int32_t   slot        = -1;
    int32_t   n_prompt    = 0;
    int32_t   n_cached    = 0; // prompt tokens reused from the cache, not computed
    int32_t   n_past      = 0; // tokens of this sequence whose KV is computed
    int32_t   n_generated = 0;
    int32_t   max_new     = 0; // most tokens it may generate: reaching it finishes it by length
};

class scheduler {
  public:
    explicit scheduler(scheduler_config cfg);

    // Queues a sequence. False when the waiting queue is at max_waiting (the caller answers
    // 429), or when prompt + max_new_tokens does not fit a slot (the API layer rejects that
    // earlier with a 400; this is the last line of defence). Ids must be unique.
    // The prompt is shared with the caller (the engine's request), never copied.
    // `arrival` (when the request reached the server) sets its first-token deadline under
    // slo_ttft_us; otherwise it is not read.
    bool submit_shared(uint64_t id, std::shared_ptr<const std::vector<token_id>> prompt, int32_t max_new_tokens,
                       kv_key key = 0, std::chrono::steady_clock::time_point arrival = {});
    bool submit(uint64_t id, std::vector<token_id> prompt, int32_t max_new_tokens, kv_key key = 0,
                std::chrono::steady_clock::time_point arrival = {}) {
        return submit_shared(id, std::make_shared<const std::vector<token_id>>(std::move(prompt)), max_new_tokens, key,
                             arrival);
    }

    // Removes a sequence at any stage and frees its slot; unknown ids are ignored. Its KV stays
    // in the slot as a reusable prefix.
    void cancel(uint64_t id);

    // Speculative decoding: tokens guessed to follow the next token of decoding sequence `id`, to
    // be verified in the next step. schedule() trims the draft to the step's token budget, the
    // slot's room and the tokens the sequence may still generate, and drops it after that step.
    // Ignored for sequences that are not decoding.
    void set_draft(uint64_t id, std::vector<token_id> draft);

    // Most draft tokens decoding sequence `id` can take (the slot's room and the tokens it may
    // still generate after the next one); 0 when it is not decoding. schedule() trims to this.
    int32_t draft_room(uint64_t id) const;

    step_plan schedule();

    // The measured cost of one prompt token (microseconds; 0 = unknown), for prefill_step_us.
    void set_prefill_cost(double us_per_token) { prefill_us_per_token_ = us_per_token; }

    // Measured costs for slo_itl_us (microseconds; 0 = unknown): decode_us_by_seqs[n], a step's
    // decode part (its decode batch and sampling) when n sequences decode (expected_decode_us()
    // fills the gaps), and a prompt token computed in a step beside decodes (that is, at the
    // chunk sizes the target leads to). Without the latter, the prefill cost stands in.
    void set_step_costs(std::vector<double> decode_us_by_seqs, double prompt_us_per_token) {
        decode_us_by_seqs_       = std::move(decode_us_by_seqs);
        itl_prompt_us_per_token_ = prompt_us_per_token;
    }
    // The prompt tokens a step beside `n_decoding` decoding sequences may take under slo_itl_us
    // (itl_prompt_tokens() with the measured costs); nullopt when no bound applies.
    std::optional<int32_t> itl_prompt_budget(int32_t n_decoding) const;
    // The engine sampled `tokens` for `id` from one item: one token, or for an item with drafts
    // the drafts it accepted and the token after them (1..n_draft+1 tokens). The KV of rejected
    // drafts is forgotten: the engine drops positions from item.pos + tokens.size() on. When
    // `finished` the sequence leaves and its slot is freed; otherwise the last token is decoded
    // in the next step.
    void on_sampled(uint64_t id, std::span<const token_id> tokens, bool finished);
    void on_sampled(uint64_t id, token_id token, bool finished) { on_sampled(id, std::span(&token, 1), finished); }

    // The decode of `plan` failed: every sequence in it is removed and the KV those slots
    // claimed is forgotten (the engine clears them). Returns the removed ids.
    std::vector<uint64_t> fail_step(const step_plan &plan);

    std::optional<seq_info> info(uint64_t id) const;
    // Every token of decoding sequence `id`: those in its KV, then the sampled one not yet
    // decoded (what prompt-lookup drafting reads). Empty when it is not decoding.
    std::vector<token_id>   history(uint64_t id) const;
    int32_t                 n_waiting() const { return static_cast<int32_t>(waiting_.size()); }
    int32_t                 n_running() const { return static_cast<int32_t>(seqs_.size()) - n_waiting(); }
    bool                    idle() const { return seqs_.empty(); }
    const slot_table       &slots() const { return slots_; }
    const scheduler_config &config() const { return cfg_; }

  private:
    struct seq {
        uint64_t                                     id = 0;
        std::shared_ptr<const std::vector<token_id>> prompt;
        seq_info                                     st;
        token_id                                     next_token = 0; // sampled, not yet in the KV
        uint64_t                                     leader     = 0; // waiting_prefix: whose prefill we wait for
        int32_t                                      wait_len   = 0;
        uint64_t                                     order      = 0; // admission order, for FIFO prefill
        uint64_t                                     submitted  = 0; // submission order (ties of deadlines)
        std::chrono::steady_clock::time_point        arrival{};      // for the first-token deadline
        kv_key                                       key = 0;
        std::vector<token_id>                        draft;               // set_draft(), for the next schedule()
        int32_t                                      n_draft_planned = 0; // drafts in the KV awaiting on_sampled()
    };

    void     admit(step_plan &plan);
    uint64_t pop_waiting();                                  // the next sequence to admit
    bool     prompt_first(const seq &a, const seq &b) const; // which prompt a step computes first
    int32_t  plan_decodes(step_plan &plan);                  // decode items; returns their tokens
    void     plan_prompts(step_plan &plan, int32_t n_decode);
    void     resolve_waiting_prefix(step_plan &plan);
    void     remove(uint64_t id);
    kv_key   pick_key(); // the key this step computes under
    int32_t  draft_room(const seq &s) const;

    scheduler_config        cfg_;
    slot_table              slots_;
    std::map<uint64_t, seq> seqs_;
    std::deque<uint64_t>    waiting_;
    uint64_t                order_                = 0;
    uint64_t                submitted_            = 0;
    kv_key                  last_key_             = 0;
    double                  prefill_us_per_token_ = 0;
    std::vector<double>     decode_us_by_seqs_; // set_step_costs()
    double                  itl_prompt_us_per_token_ = 0;
};

} // namespace inferbox

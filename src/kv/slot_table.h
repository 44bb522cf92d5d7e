#pragma once
// KV-cache slot bookkeeping, apart from scheduling policy. Each slot is one llama.cpp sequence
// (one KV stream). The table remembers which tokens each slot's KV holds, so a new request can
// reuse the longest cached prefix: from an idle slot in place, or copied from any slot (busy or
// idle) when that one holds a longer prefix. The table never touches llama.cpp: the scheduler
// turns its answers into kv operations that the engine executes.
//
// Every slot's KV is tagged with the key of what computed it (kv_key: 0 = the base model, another
// value = a LoRA adapter at one scale). KV computed under one key is never reused under another:
// prefix matching only ever looks at slots of the request's own key.
//
// Not thread-safe: owned by the scheduler, used by the engine thread only.

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace inferbox {

using token_id = int32_t;  // same representation as llama_token
using kv_key   = uint64_t; // what computed a slot's KV; 0 = the base model

struct slot_grant {
    int32_t slot      = -1;
    int32_t n_reused  = 0;  // leading prompt tokens whose KV is already there after the copy/trim
    int32_t copy_from = -1; // slot whose KV is copied into `slot` first; -1 = reuse in place
};

class slot_table {
  public:
    // `min_copy_gain`: a cross-slot copy moves a whole KV stream, so it is only worth it when it
    // saves at least this many tokens over the best in-place reuse.
    slot_table(int32_t n_slots, int32_t min_copy_gain);

    int32_t n_slots() const { return static_cast<int32_t>(slots_.size()); }
    int32_t n_idle() const;
    bool    busy(int32_t slot) const { return slots_[slot].busy; }

    // Picks an idle slot for `prompt` and marks it busy under `key`; nullopt when every slot is
    // busy. n_reused never exceeds prompt.size() - 1: the last prompt token is always computed
    // because its logits are needed. Only KV of the same key is reused.
    std::optional<slot_grant> acquire(std::span<const token_id> prompt, bool reuse, kv_key key = 0);

    void release(int32_t slot);

    // The tokens whose KV the slot holds, in position order. The scheduler appends as it plans
    // computation and truncates when it reuses a prefix.
    std::vector<token_id>       &tokens(int32_t slot) { return slots_[slot].tokens; }
    const std::vector<token_id> &tokens(int32_t slot) const { return slots_[slot].tokens; }

    kv_key key(int32_t slot) const { return slots_[slot].key; }

    // Longest common prefix of `prompt` with what `slot` holds; 0 when the slot's KV was
    // computed under another key.
    int32_t common_prefix(int32_t slot, std::span<const token_id> prompt, kv_key key = 0) const;

    // Longest cached prefix of `prompt` under `key` over all slots; {slot, length}, slot -1 when none.
    std::pair<int32_t, int32_t> best_prefix(std::span<const token_id> prompt, kv_key key = 0) const;

  private:
    struct slot {
        bool                  busy      = false;
        uint64_t              last_used = 0;
        kv_key                key       = 0;
        std::vector<token_id> tokens;
    };
    std::vector<slot> slots_;
    int32_t           min_copy_gain_;
    uint64_t          clock_ = 0;
};

int32_t common_prefix_len(std::span<const token_id> a, std::span<const token_id> b);

} // namespace inferbox

#include "kv/slot_table.h"

#include <algorithm>

namespace inferbox {

int32_t common_prefix_len(std::span<const token_id> a, std::span<const token_id> b) {
    const size_t n = std::min(a.size(), b.size());
    size_t       i = 0;
    while (i < n && a[i] == b[i]) {
        ++i;
    }
    return static_cast<int32_t>(i);
}

slot_table::slot_table(int32_t n_slots, int32_t min_copy_gain)
    : slots_(static_cast<size_t>(std::max(n_slots, 1))), min_copy_gain_(min_copy_gain) {}

int32_t slot_table::n_idle() const {
    return static_cast<int32_t>(std::count_if(slots_.begin(), slots_.end(), [](const slot &s) { return !s.busy; }));
}

int32_t slot_table::common_prefix(int32_t s, std::span<const token_id> prompt, kv_key key) const {
    return slots_[s].key == key ? common_prefix_len(slots_[s].tokens, prompt) : 0;
}

std::pair<int32_t, int32_t> slot_table::best_prefix(std::span<const token_id> prompt, kv_key key) const {
    std::pair<int32_t, int32_t> best{-1, 0};
    for (int32_t s = 0; s < n_slots(); ++s) {
        const int32_t len = common_prefix(s, prompt, key);
        if (len > best.second) {
            best = {s, len};
        }
    }
    return best;
}

std::optional<slot_grant> slot_table::acquire(std::span<const token_id> prompt, bool reuse, kv_key key) {
    const int32_t max_reuse = std::max<int32_t>(0, static_cast<int32_t>(prompt.size()) - 1);
    // Best idle slot: longest prefix; among equals, the least recently used (coldest cache).
    int32_t best_idle = -1;
    int32_t best_len  = -1;
    int32_t lru_idle  = -1;
    for (int32_t s = 0; s < n_slots(); ++s) {
        if (slots_[s].busy) {
            continue;
        }
        if (lru_idle < 0 || slots_[s].last_used < slots_[lru_idle].last_used) {
            lru_idle = s;
        }
        const int32_t len = reuse ? std::min(common_prefix(s, prompt, key), max_reuse) : 0;
        if (len > best_len || (len == best_len && slots_[s].last_used < slots_[best_idle].last_used)) {
            best_idle = s;
            best_len  = len;
        }
    }
    if (best_idle < 0) {
        return std::nullopt;
    }
    slot_grant g{best_idle, best_len, -1};
    if (reuse) {
        const auto [src, len_any] = best_prefix(prompt, key);
        const int32_t len         = std::min(len_any, max_reuse);
        if (src >= 0 && src != best_idle && len >= best_len + min_copy_gain_) {
            // Copy into the coldest idle slot rather than destroying a warm idle prefix.
            const int32_t dst = best_len > 0 ? lru_idle : best_idle;
            g                 = {dst == src ? best_idle : dst, len, src};
        }
    }
    auto &sl     = slots_[g.slot];
    sl.busy      = true;
    sl.last_used = ++clock_;
    sl.key       = key;
    if (g.copy_from >= 0) {
        sl.tokens.assign(slots_[g.copy_from].tokens.begin(), slots_[g.copy_from].tokens.begin() + g.n_reused);
    } else {
        sl.tokens.resize(static_cast<size_t>(g.n_reused));
    }
    return g;
}

void slot_table::release(int32_t s) {
    slots_[s].busy      = false;
    slots_[s].last_used = ++clock_;
}

} // namespace inferbox

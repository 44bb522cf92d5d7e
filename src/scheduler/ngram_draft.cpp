#include "scheduler/ngram_draft.h"

#include <algorithm>

namespace inferbox {

std::vector<token_id> ngram_draft(std::span<const token_id> history, int32_t max_tokens,
                                  const ngram_draft_config &cfg) {
    const auto n_hist = static_cast<int64_t>(history.size());
    if (max_tokens < 1 || cfg.min_ngram < 1) {
        return {};
    }
    for (int64_t n = std::min<int64_t>(cfg.max_ngram, n_hist - 1); n >= cfg.min_ngram; --n) {
        const auto suffix = history.subspan(static_cast<size_t>(n_hist - n));
        // The most recent earlier occurrence: scan starts that leave at least one token after the
        // match, latest first. An occurrence may overlap the suffix itself (a repeating pattern).
        for (int64_t start = n_hist - n - 1; start >= 0; --start) {
            if (!std::equal(suffix.begin(), suffix.end(), history.begin() + start)) {
                continue;
            }
            const int64_t from = start + n;
            const int64_t len  = std::min<int64_t>(max_tokens, n_hist - from);
            return {history.begin() + from, history.begin() + from + len};
        }
    }
    return {};
}

} // namespace inferbox

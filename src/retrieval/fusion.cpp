#include "retrieval/fusion.h"

#include <algorithm>
#include <limits>
#include <unordered_map>
#include <unordered_set>

namespace inferbox::retrieval {

std::vector<fused_item> reciprocal_rank_fusion(const std::vector<std::vector<int64_t>> &rankings, double k) {
    struct acc {
        double sum       = 0;
        size_t best_rank = std::numeric_limits<size_t>::max();
    };
    std::unordered_map<int64_t, acc> by_id;
    for (const auto &ranking : rankings) {
        std::unordered_set<int64_t> in_this;
        size_t                      rank = 0;
        for (const int64_t id : ranking) {
            if (!in_this.insert(id).second) {
                continue;
            }
            ++rank;
            auto &a = by_id[id];
            a.sum += 1.0 / (k + static_cast<double>(rank));
            a.best_rank = std::min(a.best_rank, rank);
        }
    }
    const double best_possible = rankings.empty() ? 1.0 : static_cast<double>(rankings.size()) / (k + 1.0);

    std::vector<std::pair<fused_item, size_t>> items;
    items.reserve(by_id.size());
    for (const auto &[id, a] : by_id) {
        items.emplace_back(fused_item{id, std::clamp(a.sum / best_possible, 0.0, 1.0)}, a.best_rank);
    }
    std::sort(items.begin(), items.end(), [](const auto &x, const auto &y) {
        if (x.first.score != y.first.score) {
            return x.first.score > y.first.score;
        }
        if (x.second != y.second) {
            return x.second < y.second;
        }
        return x.first.id < y.first.id;
    });
    std::vector<fused_item> out;
    out.reserve(items.size());
    for (const auto &item : items) {
        out.push_back(item.first);
    }
    return out;
}

} // namespace inferbox::retrieval

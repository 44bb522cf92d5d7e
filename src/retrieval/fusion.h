#pragma once
// Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): several rankings of the same
// items become one by summing 1 / (k + rank) over the rankings an item appears in (ranks from 1;
// k = 60 as in the paper and in Elasticsearch, OpenSearch and Azure AI Search). Only ranks count,
// so a cosine similarity and a BM25 score, which live on different scales, fuse without tuning.

#include <cstdint>
#include <vector>

namespace inferbox::retrieval {

struct fused_item {
    int64_t id = 0;
    // The fused score scaled to [0, 1]: the sum divided by its largest possible value (first in
    // every ranking, n / (k + 1)). 1 means first everywhere; an item in one ranking of two scores
    // at most 0.5.
    double score = 0;
};

// Fuses `rankings` (each a list of ids, best first; an id repeated within one ranking counts at
// its first rank). The answer is ordered by score, ties by the best single rank, then by id, so
// it is deterministic. `k` must be positive (the caller's constant; 60 by default).
std::vector<fused_item> reciprocal_rank_fusion(const std::vector<std::vector<int64_t>> &rankings, double k = 60);

} // namespace inferbox::retrieval

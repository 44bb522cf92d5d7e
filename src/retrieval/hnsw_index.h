#pragma once
// An approximate nearest-neighbour index over unit vectors (cosine similarity as an inner
// product), on hnswlib's HierarchicalNSW (Debian's libhnswlib-dev, header-only). This wrapper is
// the only place that includes hnswlib: its headers define non-inline functions, so a second
// translation unit including them would not link; the benchmark uses this class too.
//
// Files: save() writes hnswlib's format to a temporary file, checks it back, flushes it to disk
// and renames it over the target, returning the file's SHA-256. load() verifies a file before
// hnswlib reads it — the SHA-256 the caller recorded, then every header field, length and
// neighbour id against what this build would have written — because hnswlib's loadIndex trusts
// the file and reads out of bounds on garbage. A file that fails any check is an error, never
// a crash.
//
// Thread-safety: search, similarity, contains and the counters may run concurrently with each
// other and with save; add, mark_deleted and set_ef_search need the caller to exclude everything
// else (document_index holds a shared_mutex for that).

#include "common/status.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace inferbox::retrieval {

struct hnsw_params {
    size_t m               = 16;  // links per node (2m on the bottom layer)
    size_t ef_construction = 100; // candidate list while inserting
    size_t ef_search       = 64;  // candidate list while searching (at least k)
};

// Scales `v` to unit length in place. False when a component is not finite or the norm is 0.
bool normalize(std::vector<float> &v);
// The inner product of two float arrays of length n (eight running sums, which compilers
// vectorize without -ffast-math): exact search and the benchmark's ground truth.
float dot_product(const float *a, const float *b, size_t n);

class hnsw_index {
  public:
    // An empty index with room for `capacity` vectors (it grows as needed). Errors: parameters out
    // of range (dimension 1..65536, m 2..256, ef values 1..100000), memory.
    static result<std::unique_ptr<hnsw_index>> create(size_t dimension, const hnsw_params &params, size_t capacity);
    // Reads a file save() wrote, after checking that its SHA-256 is `expected_sha256`, that it was
    // written for this dimension and m, and that it holds `expected_elements` vectors (deleted
    // ones included). The error says which check failed.
    static result<std::unique_ptr<hnsw_index>> load(const std::filesystem::path &file, size_t dimension,
                                                    const hnsw_params &params, const std::string &expected_sha256,
                                                    size_t expected_elements);
    ~hnsw_index();
    hnsw_index(const hnsw_index &)            = delete;
    hnsw_index &operator=(const hnsw_index &) = delete;

    // Adds a unit vector of dimension() floats under `label` (labels are never reused: a label
    // already present is an error). Grows the index when full.
    std::optional<error> add(uint64_t label, const float *unit_vector);
    // Marks a vector deleted: searches skip it, it keeps its memory until the index is rebuilt.
    // False when the label is unknown or already deleted.
    bool mark_deleted(uint64_t label);
    void set_ef_search(size_t ef);

    // The `k` nearest live vectors to a unit query: (label, cosine similarity), most similar first.
    std::vector<std::pair<uint64_t, float>> search(const float *unit_query, size_t k) const;
    // The cosine similarity of one live vector to the query (exact), or nothing.
    std::optional<float> similarity(uint64_t label, const float *unit_query) const;
    bool                 contains(uint64_t label) const; // present and not deleted

    size_t dimension() const { return dimension_; }
    size_t elements() const; // including deleted ones
    size_t deleted() const;

    // Writes the index to `file` (via `file`.tmp, fsync and rename); returns the file's SHA-256 in
    // lower-case hex.
    result<std::string> save(const std::filesystem::path &file) const;

  private:
    struct impl;
    hnsw_index(size_t dimension, std::unique_ptr<impl> impl);
    size_t                dimension_;
    std::unique_ptr<impl> impl_;
};

// The SHA-256 of a file in lower-case hex.
result<std::string> sha256_file(const std::filesystem::path &file);

} // namespace inferbox::retrieval

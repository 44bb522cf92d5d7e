#pragma once
// One searchable collection of documents (what a vector store will be): each document's chunks
// with their embeddings, ranked by vector similarity (hnsw_index), by keywords (SQLite FTS5,
// BM25) or by both fused (reciprocal rank fusion), optionally reranked by a caller's function.
//
// On disk, under one folder: `index.sqlite` is the truth — documents, chunks (document id,
// position, byte offset, text in an FTS5 table, the unit vector as a BLOB of native floats) and
// the state of the index file — and `index.hnsw` is a cache of the graph, written by save(). At
// open the file is used only when the SQLite metadata says it is current and its SHA-256, header
// and element count match; otherwise (a crash after a write, a corrupt or truncated file, other
// hnsw parameters) the graph is rebuilt from the vectors in SQLite, saved, and stats() says why.
// Each write marks the file stale in the same transaction that changes the chunks, so a crash
// between a write and the next save() costs a rebuild, never a wrong answer.
//
// Thread-safety: every method may be called from any thread. Searches share a lock and run
// concurrently (their SQLite reads are serialized by the connection); add_document and
// remove_document take it exclusively; save() runs beside searches. Calls block for their own
// SQLite work; open() blocks for a rebuild (about as long as building the index did).

#include "common/status.h"
#include "retrieval/fts_query.h"
#include "retrieval/hnsw_index.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

struct sqlite3;

namespace inferbox::retrieval {

struct index_options {
    size_t           dimension = 0; // required when the folder is new; 0 on reopen takes the stored one
    hnsw_params      hnsw;
    size_t           max_chunks          = 1000000;  // in the whole index
    size_t           max_chunks_per_doc  = 20000;    // in one document
    size_t           max_chunk_bytes     = 64 << 10; // one chunk's text
    size_t           max_id_bytes        = 256;      // a document id
    size_t           max_name_bytes      = 1024;     // a document name
    size_t           max_filter_ids      = 1000;     // document ids in one search filter
    size_t           max_k               = 1000;     // results of one search
    size_t           exact_search_chunks = 4096;     // a filtered vector search over this few chunks is exact
    fts_query_limits query;
};

struct chunk_input {
    std::string        text;
    std::vector<float> embedding;  // any length > 0; normalized here
    int64_t            offset = 0; // byte offset of the text in its document
};

// Which documents a search may return; no ids means all of them.
struct search_filter {
    std::vector<std::string> document_ids;
};

struct search_hit {
    int64_t     chunk_id = 0;
    std::string document_id, document_name;
    int64_t     position = 0; // the chunk's index in its document
    int64_t     offset   = 0; // byte offset in the document's text
    std::string text;
    // vector_search: cosine similarity; keyword_search: -bm25 (higher is better); hybrid_search:
    // the fused score in [0, 1], or the reranker's score when one ran.
    double score = 0;
};

// Scores of `texts` against `query`, one each, higher more relevant, in [0, 1] (others are clamped;
// a non-finite one is an error). Called on the searching thread; errors pass to the caller.
using reranker =
    std::function<result<std::vector<double>>(const std::string &query, const std::vector<std::string> &texts)>;

struct hybrid_options {
    size_t   k          = 10;
    size_t   candidates = 50; // from each ranking before fusion (at least k)
    double   rrf_k      = 60;
    reranker rerank;               // optional
    size_t   rerank_top_n    = 20; // fused results the reranker sees (at least k)
    double   score_threshold = 0;  // results below it are dropped
};

struct index_stats {
    size_t      documents = 0, chunks = 0;
    size_t      graph_elements = 0, graph_deleted = 0; // the hnsw graph, deleted marks included
    bool        rebuilt_at_open = false;
    std::string rebuild_reason; // why, when rebuilt_at_open
    bool        dirty = false;  // changes since the last save()
};

class document_index {
  public:
    // Opens (creating) the index under `folder`. Errors: a new folder without a dimension, a
    // dimension other than the stored one, an unreadable database.
    static result<std::unique_ptr<document_index>> open(const std::filesystem::path &folder,
                                                        const index_options         &options);
    // Saves the graph when it changed since the last save (a failure is logged).
    ~document_index();
    document_index(const document_index &)            = delete;
    document_index &operator=(const document_index &) = delete;

    // Adds a document's chunks (in order: position i is chunks[i]), replacing a document of the
    // same id. Returns the number of chunks stored. Errors name the bound or the bad chunk: id or
    // name length, chunk count, chunk bytes, invalid UTF-8, an embedding of the wrong dimension,
    // zero or not finite.
    result<size_t> add_document(const std::string &id, const std::string &name, const std::vector<chunk_input> &chunks);
    // Removes a document; returns how many chunks it had (0: no such document).
    result<size_t> remove_document(const std::string &id);
    bool           has_document(const std::string &id) const;

    // The k chunks most similar to `query` (its dimension; normalized here).
    result<std::vector<search_hit>> vector_search(const std::vector<float> &query, size_t k,
                                                  const search_filter &filter = {}) const;
    // The k chunks ranked best by BM25 for the query's terms (fts_match_expression); none when the
    // query has no term.
    result<std::vector<search_hit>> keyword_search(const std::string &query, size_t k,
                                                   const search_filter &filter = {}) const;
    // Both rankings fused by reciprocal rank (k = options.rrf_k), then the reranker if any.
    result<std::vector<search_hit>> hybrid_search(const std::string &query, const std::vector<float> &query_vector,
                                                  const hybrid_options &options,
                                                  const search_filter  &filter = {}) const;

    // Writes the graph to index.hnsw and records its checksum; nothing to do when unchanged.
    std::optional<error> save();
    index_stats          stats() const;
    size_t               dimension() const { return dimension_; }

  private:
    // A document's chunk ids as runs of consecutive ids (one run unless the database was edited).
    struct doc_entry {
        std::vector<std::pair<int64_t, int64_t>> runs;
        size_t                                   n_chunks = 0;
    };

    document_index(const std::filesystem::path &folder, sqlite3 *db, const index_options &options, size_t dimension);
    std::optional<error>                             load_documents();
    std::optional<error>                             load_or_rebuild_graph();
    std::optional<error>                             rebuild_graph(const std::string &reason);
    std::optional<error>                             save_locked();
    std::optional<error>                             check_document(const std::string &id, const std::string &name,
                                                                    const std::vector<chunk_input>  &chunks,
                                                                    std::vector<std::vector<float>> &unit_vectors) const;
    result<std::vector<std::pair<int64_t, int64_t>>> allowed_runs(const search_filter &filter) const;
    std::vector<std::pair<int64_t, float>>           nearest(const std::vector<float> &unit_query, size_t k,
                                                             const std::vector<std::pair<int64_t, int64_t>> *runs) const;
    result<std::vector<std::pair<int64_t, double>>>  keyword_ranking(const std::string &query, size_t k,
                                                                     const search_filter &filter) const;
    result<std::vector<search_hit>> hits_for(const std::vector<std::pair<int64_t, double>> &ranked) const;
    result<std::vector<float>>      unit_query(const std::vector<float> &query) const;
    std::optional<error>            check_k(size_t k) const;

    std::filesystem::path folder_;
    sqlite3              *db_;
    index_options         options_;
    size_t                dimension_;

    // Readers pass through gate_ before taking mutex_ shared; a writer holds gate_ while it waits
    // for mutex_, so a steady stream of searches cannot starve writes (glibc's rwlock prefers
    // readers).
    std::shared_lock<std::shared_mutex> read_lock() const;
    std::unique_lock<std::shared_mutex> write_lock();

    mutable std::mutex                         gate_;
    mutable std::shared_mutex                  mutex_; // the graph and docs_: shared to search, unique to write
    std::mutex                                 save_mutex_;
    std::unique_ptr<hnsw_index>                graph_;
    std::unordered_map<std::string, doc_entry> docs_;
    size_t                                     n_chunks_ = 0;
    std::atomic<bool>                          dirty_{false}; // the graph changed since the last save
    bool                                       rebuilt_at_open_ = false;
    std::string                                rebuild_reason_;
};

} // namespace inferbox::retrieval

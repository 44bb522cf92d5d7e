#pragma once
// The vector stores of /v1/vector_stores: which stores exist, whose they are, their names,
// metadata and chunking strategy, and which files each holds with their ingestion status
// (in_progress, completed, failed and why). Each store's chunks live in a document_index of its
// own under <dir>/<store id>/ (a document per file, its id the file id); the catalogue itself is
// SQLite (<dir>/catalogue.sqlite3). Each store belongs to the API key that created it (its owner,
// the hash api/response_store.h's response_owner makes; "" when keys are off): one key never sees,
// searches or deletes another's. Bounded: stores per owner, files per store, name and metadata
// sizes; a call over a bound is refused with an error naming it.
//
// It knows neither HTTP nor models: the caller extracts, chunks and embeds (api/vector_stores.cpp)
// and hands the chunks to add_chunks.
//
// Opening marks every file still in_progress as failed (the server stopped while ingesting it).
// Thread-safe: the catalogue behind a mutex, each call one short transaction; a store's index is
// opened once and shared (document_index is thread-safe), and its heavy calls run outside the
// catalogue's lock.

#include "common/status.h"
#include "retrieval/document_index.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace inferbox::retrieval {

struct vector_store_limits {
    int64_t max_stores_per_owner = 100;  // --vector-stores-max-count
    int64_t max_files_per_store  = 1000; // files in one store
    size_t  max_chunks_per_file  = 4096; // chunks of one file
    size_t  max_name_bytes       = 256;  // a store's name
    size_t  max_metadata_bytes   = 4096; // its metadata, as the JSON text the API layer passes
    size_t  max_query_bytes      = 4096; // a search's query
};

// OpenAI's chunking strategies: auto is static with 800 tokens and an overlap of 400.
struct chunking_strategy {
    bool    is_static      = false; // false: "auto"
    int64_t max_tokens     = 800;   // 100..4096
    int64_t overlap_tokens = 400;   // 0..max_tokens / 2
};

// The strategy's bounds as OpenAI states them; an error names the field.
std::optional<error> check_chunking(const chunking_strategy &c);

enum class store_file_status { in_progress, completed, failed };
const char *status_name(store_file_status s);

struct vector_store_record {
    std::string id; // "vs_" and 24 hex digits
    std::string name;
    std::string metadata_json; // a JSON object's text, "{}" when none
    int64_t     created_at     = 0;
    int64_t     last_active_at = 0;
    // File counts by status, and the bytes of the files' chunk texts.
    int64_t n_in_progress = 0, n_completed = 0, n_failed = 0;
    int64_t usage_bytes = 0;
};

struct vector_store_file_record {
    std::string       file_id;
    std::string       store_id;
    int64_t           created_at = 0;
    store_file_status status     = store_file_status::in_progress;
    std::string       error_code, error_message; // when failed
    chunking_strategy chunking;
    int64_t           n_chunks = 0, usage_bytes = 0;
};

template <typename T> struct catalogue_page {
    std::vector<T> data;
    bool           has_more = false;
};

// One search result: which file, its chunk, the fused score in [0, 1].
struct store_hit {
    std::string store_id, file_id, filename, text;
    double      score = 0;
};

class vector_store_catalog {
  public:
    // Opens (creating) `dir` and its catalogue; files left in_progress become failed.
    static result<std::unique_ptr<vector_store_catalog>>
    open(const std::filesystem::path &dir, const vector_store_limits &limits, const index_options &index = {});
    ~vector_store_catalog();
    vector_store_catalog(const vector_store_catalog &)            = delete;
    vector_store_catalog &operator=(const vector_store_catalog &) = delete;

    // A new empty store (payload_too_large, too_many_vector_stores, past max_stores_per_owner;
    // invalid_request naming name or metadata over their bounds).
    result<vector_store_record>        create(const std::string &owner, const std::string &name,
                                              const std::string &metadata_json, const chunking_strategy &chunking);
    std::optional<vector_store_record> get(const std::string &owner, const std::string &id);
    // The owner's stores, newest first unless `ascending`, after store `after` (an id the owner
    // lacks: invalid_request), at most `limit` (1..100).
    result<catalogue_page<vector_store_record>> list(const std::string &owner, int32_t limit, bool ascending,
                                                     const std::string &after);
    // Sets the name and/or the metadata (nullopt: unchanged); not_found when the owner lacks it.
    result<vector_store_record> modify(const std::string &owner, const std::string &id,
                                       const std::optional<std::string> &name,
                                       const std::optional<std::string> &metadata_json);
    // Deletes the store, its file list and its index folder; whether the owner had it.
    bool remove(const std::string &owner, const std::string &id);

    // Records a file as in_progress in the store (chunking: the store's when nullopt). A file
    // already there is an error (invalid_request, file_already_in_store); past
    // max_files_per_store: payload_too_large, too_many_files.
    result<vector_store_file_record> add_file(const std::string &owner, const std::string &store_id,
                                              const std::string &file_id, const std::optional<chunking_strategy> &c);
    // Stores a file's chunks in the store's index (replacing any) and marks it completed. The
    // index's dimension is fixed by the first file; an embedding of another dimension is an error.
    // Fails when the store or the file entry is gone meanwhile (deleted while it was ingested).
    std::optional<error> add_chunks(const std::string &store_id, const std::string &file_id,
                                    const std::string &filename, const std::vector<chunk_input> &chunks);
    // Marks a file failed with the error's code (or "server_error") and message.
    void fail_file(const std::string &store_id, const std::string &file_id, const error &why);
    std::optional<vector_store_file_record> get_file(const std::string &owner, const std::string &store_id,
                                                     const std::string &file_id);
    // The store's files, newest first unless `ascending`, after file `after`, at most `limit`
    // (1..100), only those with `status` when given. not_found when the owner lacks the store.
    result<catalogue_page<vector_store_file_record>> list_files(const std::string &owner, const std::string &store_id,
                                                                int32_t limit, bool ascending, const std::string &after,
                                                                const std::optional<store_file_status> &status);
    // Removes a file from the store (its chunks from the index); whether it was there.
    result<bool> remove_file(const std::string &owner, const std::string &store_id, const std::string &file_id);

    // Hybrid search (document_index::hybrid_search) over the owner's stores `store_ids` (each must
    // be the owner's: not_found naming it), restricted to `file_ids` when not empty; the best
    // `k` (1..50) of all, by score. `query_vector` is the query's embedding (empty: keyword only).
    result<std::vector<store_hit>> search(const std::string &owner, const std::vector<std::string> &store_ids,
                                          const std::string &query, const std::vector<float> &query_vector, size_t k,
                                          const std::vector<std::string> &file_ids);

    const vector_store_limits &limits() const { return limits_; }

  private:
    vector_store_catalog(sqlite3 *db, std::filesystem::path dir, const vector_store_limits &limits,
                         const index_options &index)
        : db_(db), dir_(std::move(dir)), limits_(limits), index_options_(index) {}
    std::optional<vector_store_record> get_locked(const std::string &owner, const std::string &id);
    bool                               owns_locked(const std::string &owner, const std::string &store_id);
    // The store's index, opened on first use; `dimension` 0: open only if its folder exists
    // (nullptr when not).
    result<std::shared_ptr<document_index>> index_of(const std::string &store_id, size_t dimension);

    std::mutex                                             mu_;
    sqlite3                                               *db_;
    std::filesystem::path                                  dir_;
    vector_store_limits                                    limits_;
    index_options                                          index_options_;
    std::map<std::string, std::shared_ptr<document_index>> indexes_; // open indexes by store id (under mu_)
};

// The one answer for a store the caller does not have (missing, or another key's).
error vector_store_not_found(const std::string &id);

} // namespace inferbox::retrieval

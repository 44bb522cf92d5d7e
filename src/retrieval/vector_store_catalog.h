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
// Each file carries its attributes (retrieval/attribute_filter.h) as a JSON object's text the API
// layer made; a search's attribute filter picks the files first and the index searches only
// their chunks, so a filtered search still returns up to k results when that many match. SQLite
// reads the attributes' typed values (json_each), so no JSON library is needed here.
//
// Expiry (OpenAI's expires_after {anchor: last_active_at, days}): a store whose last activity
// (creation, a change, a file added, a search) lies `days` days back is expired. Every call first
// sweeps the stores that have expired since: their files and index go, the store stays, listed
// with status expired, until it is deleted; searching it or adding files to it is an error
// (not_found, code vector_store_expired).
//
// It knows neither HTTP nor models: the caller extracts, chunks and embeds (api/vector_stores.cpp)
// and hands the chunks to add_chunks.
//
// Opening marks every file still in_progress as failed (the server stopped while ingesting it).
// Thread-safe: the catalogue behind a mutex, each call one short transaction; a store's index is
// opened once and shared (document_index is thread-safe), and its heavy calls run outside the
// catalogue's lock.

#include "common/status.h"
#include "retrieval/attribute_filter.h"
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
    // The length of expires_after's day. Test builds (common/failpoint.h) shorten it to
    // INFERBOX_FAILPOINT_VECTOR_STORE_DAY_MS milliseconds (whole seconds, at least 1).
    int64_t seconds_per_day = 86400;
};

inline constexpr int64_t max_expiry_days = 365; // expires_after.days: 1..365

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
    int64_t usage_bytes  = 0;
    int64_t expires_days = 0; // expires_after.days; 0: never expires
    int64_t expires_at   = 0; // last_active_at + expires_days days; 0: never
    bool    expired      = false;
};

struct vector_store_file_record {
    std::string       file_id;
    std::string       store_id;
    int64_t           created_at = 0;
    store_file_status status     = store_file_status::in_progress;
    std::string       error_code, error_message; // when failed
    chunking_strategy chunking;
    int64_t           n_chunks = 0, usage_bytes = 0;
    std::string       attributes_json = "{}"; // a JSON object's text, as the API layer passed it
};

template <typename T> struct catalogue_page {
    std::vector<T> data;
    bool           has_more = false;
};

// One search result: which file, its chunk, the fused score in [0, 1], the file's attributes.
struct store_hit {
    std::string store_id, file_id, filename, text;
    double      score           = 0;
    std::string attributes_json = "{}";
};

// What narrows a search: the files whose attributes pass `filter` (none: all), and no result
// scoring below `score_threshold` (0..1).
struct store_search_options {
    std::optional<attribute_filter> filter;
    double                          score_threshold = 0;
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
    // invalid_request naming name or metadata over their bounds). `expires_days`: 0 (never) or
    // 1..max_expiry_days.
    result<vector_store_record>        create(const std::string &owner, const std::string &name,
                                              const std::string &metadata_json, const chunking_strategy &chunking,
                                              int64_t expires_days = 0);
    std::optional<vector_store_record> get(const std::string &owner, const std::string &id);
    // The owner's stores, newest first unless `ascending`, after store `after` (an id the owner
    // lacks: invalid_request), at most `limit` (1..100).
    result<catalogue_page<vector_store_record>> list(const std::string &owner, int32_t limit, bool ascending,
                                                     const std::string &after);
    // Sets the name, the metadata and/or the expiry days (0: never; nullopt: unchanged); not_found
    // when the owner lacks it, vector_store_expired when it has expired.
    result<vector_store_record> modify(const std::string &owner, const std::string &id,
                                       const std::optional<std::string> &name,
                                       const std::optional<std::string> &metadata_json,
                                       const std::optional<int64_t>     &expires_days = std::nullopt);
    // Deletes the store, its file list and its index folder; whether the owner had it.
    bool remove(const std::string &owner, const std::string &id);

    // Records a file as in_progress in the store (chunking: the store's when nullopt). A file
    // already there is an error (invalid_request, file_already_in_store); past
    // max_files_per_store: payload_too_large, too_many_files. An expired store: vector_store_expired.
    result<vector_store_file_record> add_file(const std::string &owner, const std::string &store_id,
                                              const std::string &file_id, const std::optional<chunking_strategy> &c,
                                              const std::string &attributes_json = "{}");
    // Replaces a file's attributes (a JSON object's text); not_found when the owner's store lacks it.
    result<vector_store_file_record> set_file_attributes(const std::string &owner, const std::string &store_id,
                                                         const std::string &file_id,
                                                         const std::string &attributes_json);
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
    // be the owner's: not_found naming it; and not expired), only over the files that pass the
    // options' filter; the best `k` (1..50) of all at or above the threshold, by score.
    // `query_vector` is the query's embedding (empty: keyword only). Counts as the stores' activity.
    result<std::vector<store_hit>> search(const std::string &owner, const std::vector<std::string> &store_ids,
                                          const std::string &query, const std::vector<float> &query_vector, size_t k,
                                          const store_search_options &options = {});

    const vector_store_limits &limits() const { return limits_; }

  private:
    vector_store_catalog(sqlite3 *db, std::filesystem::path dir, const vector_store_limits &limits,
                         const index_options &index)
        : db_(db), dir_(std::move(dir)), limits_(limits), index_options_(index) {}
    std::optional<vector_store_record> get_locked(const std::string &owner, const std::string &id);
    // Marks the stores past their expiry expired, drops their files and indexes, and removes their
    // folders (outside the lock). Takes mu_ itself; every public call runs it first.
    void sweep_expired();
    // The store's files: id, attributes' JSON text and (when `typed`) their values; under mu_.
    struct file_attributes {
        std::string   json;
        attribute_map values;
    };
    std::map<std::string, file_attributes> file_attributes_locked(const std::string &store_id, bool typed);
    bool                                   owns_locked(const std::string &owner, const std::string &store_id);
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
// The answer for using a store that has expired (not_found, code vector_store_expired).
error vector_store_expired(const vector_store_record &s);

} // namespace inferbox::retrieval

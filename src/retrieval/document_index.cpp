#include "retrieval/document_index.h"

#include "common/log.h"
#include "common/sqlite_statement.h"
#include "common/utf8.h"
#include "retrieval/fusion.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

namespace inferbox::retrieval {

namespace {

constexpr const char *graph_file_name = "index.hnsw";
constexpr size_t      min_compaction  = 1024; // deleted graph entries tolerated before a rebuild

// A prepared statement with the BLOB calls common/sqlite_statement.h does not have; finalized on
// scope exit. Each use prepares its own: statements are not shared between threads.
class query {
  public:
    query(sqlite3 *db, const std::string &sql) {
        ok_ = sqlite3_prepare_v2(db, sql.c_str(), -1, &st_, nullptr) == SQLITE_OK;
    }
    ~query() { sqlite3_finalize(st_); }
    query(const query &)            = delete;
    query &operator=(const query &) = delete;

    bool ok() const { return ok_; }
    void bind(int i, std::string_view s) {
        sqlite3_bind_text(st_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    }
    void bind(int i, int64_t v) { sqlite3_bind_int64(st_, i, v); }
    void bind_blob(int i, const void *p, size_t n) {
        sqlite3_bind_blob(st_, i, p, static_cast<int>(n), SQLITE_TRANSIENT);
    }
    int         step() { return sqlite3_step(st_); }
    void        reset() { sqlite3_reset(st_); }
    int64_t     integer(int col) const { return sqlite3_column_int64(st_, col); }
    double      real(int col) const { return sqlite3_column_double(st_, col); }
    std::string text(int col) const {
        const auto *p = sqlite3_column_text(st_, col);
        return p == nullptr ? std::string()
                            : std::string(reinterpret_cast<const char *>(p), sqlite3_column_bytes(st_, col));
    }
    // The column's bytes when it is a BLOB of exactly `n` bytes.
    bool blob(int col, void *out, size_t n) const {
        if (sqlite3_column_type(st_, col) != SQLITE_BLOB || static_cast<size_t>(sqlite3_column_bytes(st_, col)) != n) {
            return false;
        }
        std::memcpy(out, sqlite3_column_blob(st_, col), n);
        return true;
    }

  private:
    sqlite3_stmt *st_ = nullptr;
    bool          ok_ = false;
};

error db_error(sqlite3 *db, const std::string &what) {
    return error{error_kind::internal, "the retrieval index failed to " + what + ": " + sqlite3_errmsg(db), "", ""};
}

// Runs `body` in an IMMEDIATE transaction: committed when it returns nothing, rolled back on an
// error (its own or the commit's).
template <typename F> std::optional<error> in_transaction(sqlite3 *db, F &&body) {
    if (!sqlite::exec(db, "BEGIN IMMEDIATE")) {
        return db_error(db, "begin a transaction");
    }
    auto err = body();
    if (!err && !sqlite::exec(db, "COMMIT")) {
        err = db_error(db, "commit");
    }
    if (err) {
        sqlite::exec(db, "ROLLBACK");
    }
    return err;
}

std::optional<std::string> meta_get(sqlite3 *db, const char *key) {
    query q(db, "SELECT value FROM meta WHERE key = ?1");
    q.bind(1, std::string_view(key));
    if (!q.ok() || q.step() != SQLITE_ROW) {
        return std::nullopt;
    }
    return q.text(0);
}

bool meta_set(sqlite3 *db, const char *key, const std::string &value) {
    query q(db, "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value");
    q.bind(1, std::string_view(key));
    q.bind(2, value);
    return q.ok() && q.step() == SQLITE_DONE;
}

std::optional<size_t> parse_size(const std::string &s) {
    if (s.empty() || s.size() > 18 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return std::nullopt;
    }
    return static_cast<size_t>(std::stoull(s));
}

bool in_runs(const std::vector<std::pair<int64_t, int64_t>> &runs, int64_t id) {
    auto it = std::upper_bound(runs.begin(), runs.end(), id, [](int64_t v, const auto &r) { return v < r.first; });
    return it != runs.begin() && id <= std::prev(it)->second;
}

void append_id(std::vector<std::pair<int64_t, int64_t>> &runs, int64_t id) {
    if (!runs.empty() && runs.back().second + 1 == id) {
        runs.back().second = id;
    } else {
        runs.emplace_back(id, id);
    }
}

} // namespace

document_index::document_index(const std::filesystem::path &folder, sqlite3 *db, const index_options &options,
                               size_t dimension)
    : folder_(folder), db_(db), options_(options), dimension_(dimension) {}

document_index::~document_index() {
    try {
        if (dirty_) {
            if (auto err = save()) {
                log_event(spdlog::level::warn, "the retrieval index was not saved; it will be rebuilt at the next open",
                          {{"folder", folder_.string()}, {"error", err->message}});
            }
        }
    } catch (...) { // a destructor must not throw (memory for a message); the next open rebuilds
    }
    graph_.reset();
    sqlite3_close(db_);
}

result<std::unique_ptr<document_index>> document_index::open(const std::filesystem::path &folder,
                                                             const index_options         &options) {
    auto db = sqlite::open_store(
        folder / "index.sqlite", "the retrieval index",
        {"CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
         "CREATE TABLE IF NOT EXISTS documents (id TEXT PRIMARY KEY, name TEXT NOT NULL, n_chunks INTEGER NOT NULL, "
         "created INTEGER NOT NULL)",
         "CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, document_id TEXT NOT NULL, "
         "position INTEGER NOT NULL, byte_offset INTEGER NOT NULL, vector BLOB NOT NULL)",
         "CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id, id)",
         "CREATE VIRTUAL TABLE IF NOT EXISTS chunk_text USING fts5(text, tokenize = 'porter unicode61 "
         "remove_diacritics 2')"});
    if (!db) {
        return db.err();
    }
    size_t dimension = options.dimension;
    if (const auto stored = meta_get(*db, "dimension")) {
        const auto d = parse_size(*stored);
        if (!d) {
            sqlite3_close(*db);
            return error{error_kind::internal,
                         "the retrieval index at " + folder.string() + " records no valid dimension", "",
                         "index_corrupt"};
        }
        if (dimension != 0 && dimension != *d) {
            sqlite3_close(*db);
            return error::invalid("the retrieval index at " + folder.string() + " holds " + std::to_string(*d) +
                                  "-dimensional vectors; " + std::to_string(dimension) + " were asked for");
        }
        dimension = *d;
    } else if (dimension == 0) {
        sqlite3_close(*db);
        return error::invalid("a new retrieval index needs the embeddings' dimension");
    } else if (!meta_set(*db, "dimension", std::to_string(dimension))) {
        auto err = db_error(*db, "record its dimension");
        sqlite3_close(*db);
        return err;
    }
    std::unique_ptr<document_index> index(new document_index(folder, *db, options, dimension));
    if (auto err = index->load_documents()) {
        return *err;
    }
    if (auto err = index->load_or_rebuild_graph()) {
        return *err;
    }
    return index;
}

std::optional<error> document_index::load_documents() {
    docs_.clear();
    n_chunks_ = 0;
    query docs(db_, "SELECT id FROM documents");
    if (!docs.ok()) {
        return db_error(db_, "read its documents");
    }
    while (docs.step() == SQLITE_ROW) {
        docs_[docs.text(0)];
    }
    query chunks(db_, "SELECT document_id, id FROM chunks ORDER BY document_id, id");
    if (!chunks.ok()) {
        return db_error(db_, "read its chunks");
    }
    while (chunks.step() == SQLITE_ROW) {
        auto &doc = docs_[chunks.text(0)];
        append_id(doc.runs, chunks.integer(1));
        ++doc.n_chunks;
        ++n_chunks_;
    }
    return std::nullopt;
}

std::optional<error> document_index::load_or_rebuild_graph() {
    const auto  sha      = meta_get(db_, "graph_sha256").value_or("");
    const auto  elements = parse_size(meta_get(db_, "graph_elements").value_or(""));
    const auto  file     = folder_ / graph_file_name;
    std::string reason;
    if (sha.empty() || !elements) {
        if (n_chunks_ == 0) {
            auto fresh = hnsw_index::create(dimension_, options_.hnsw, 0);
            if (!fresh) {
                return fresh.err();
            }
            graph_ = std::move(*fresh);
            return std::nullopt;
        }
        reason = "the index file was not saved after the last change";
    } else if (auto loaded = hnsw_index::load(file, dimension_, options_.hnsw, sha, *elements); !loaded) {
        reason = loaded.err().message;
    } else {
        graph_           = std::move(*loaded);
        bool all_present = graph_->elements() - graph_->deleted() == n_chunks_;
        for (auto it = docs_.begin(); all_present && it != docs_.end(); ++it) {
            for (const auto &[first, last] : it->second.runs) {
                for (int64_t id = first; all_present && id <= last; ++id) {
                    all_present = graph_->contains(static_cast<uint64_t>(id));
                }
            }
        }
        if (all_present) {
            return std::nullopt;
        }
        reason = "the index file does not hold the chunks the database has";
    }
    log_event(spdlog::level::warn, "rebuilding the retrieval index from its database",
              {{"folder", folder_.string()}, {"reason", reason}, {"chunks", static_cast<int64_t>(n_chunks_)}});
    rebuilt_at_open_ = true;
    rebuild_reason_  = reason;
    if (auto err = rebuild_graph(reason)) {
        return err;
    }
    // The rebuilt graph serves from memory even when it cannot be written (a read-only or full
    // disk); the next open rebuilds again.
    if (auto err = save_locked()) {
        log_event(spdlog::level::warn, "the rebuilt retrieval index was not saved",
                  {{"folder", folder_.string()}, {"error", err->message}});
    }
    return std::nullopt;
}

// Builds a new graph from the vectors in SQLite. A chunk whose vector is unusable (wrong size, not
// finite, zero: the database was damaged) cannot be searched by vector: it is deleted, with its
// text, and the count logged.
std::optional<error> document_index::rebuild_graph(const std::string &reason) {
    auto fresh = hnsw_index::create(dimension_, options_.hnsw, n_chunks_ + n_chunks_ / 4);
    if (!fresh) {
        return fresh.err();
    }
    std::vector<int64_t> unusable;
    {
        query rows(db_, "SELECT id, vector FROM chunks ORDER BY id");
        if (!rows.ok()) {
            return db_error(db_, "read its vectors");
        }
        std::vector<float> v(dimension_);
        int                rc = 0;
        while ((rc = rows.step()) == SQLITE_ROW) {
            const int64_t id = rows.integer(0);
            if (!rows.blob(1, v.data(), v.size() * sizeof(float)) || !normalize(v)) {
                unusable.push_back(id);
                continue;
            }
            if (auto err = (*fresh)->add(static_cast<uint64_t>(id), v.data())) {
                return err;
            }
        }
        if (rc != SQLITE_DONE) {
            return db_error(db_, "read its vectors");
        }
    }
    if (!unusable.empty()) {
        log_event(spdlog::level::warn, "dropping retrieval chunks whose stored vectors are unusable",
                  {{"folder", folder_.string()}, {"chunks", static_cast<int64_t>(unusable.size())}, {"why", reason}});
        auto err = in_transaction(db_, [&]() -> std::optional<error> {
            query del_text(db_, "DELETE FROM chunk_text WHERE rowid = ?1");
            query del_chunk(db_, "DELETE FROM chunks WHERE id = ?1");
            for (const int64_t id : unusable) {
                del_text.bind(1, id);
                del_chunk.bind(1, id);
                if (del_text.step() != SQLITE_DONE || del_chunk.step() != SQLITE_DONE) {
                    return db_error(db_, "drop an unusable chunk");
                }
                del_text.reset();
                del_chunk.reset();
            }
            if (!sqlite::exec(db_, "UPDATE documents SET n_chunks = (SELECT COUNT(*) FROM chunks WHERE "
                                   "chunks.document_id = documents.id)")) {
                return db_error(db_, "recount chunks");
            }
            return std::nullopt;
        });
        if (err) {
            return err;
        }
        if (auto load_err = load_documents()) {
            return load_err;
        }
    }
    graph_ = std::move(*fresh);
    dirty_ = true;
    return std::nullopt;
}

std::optional<error> document_index::save() {
    std::lock_guard save_lock(save_mutex_);
    auto            lock = read_lock();
    if (!dirty_) {
        return std::nullopt;
    }
    return save_locked();
}

std::optional<error> document_index::save_locked() {
    dirty_           = false; // a write from now on sets it again (writers exclude this whole call)
    const auto saved = graph_->save(folder_ / graph_file_name);
    if (!saved) {
        dirty_ = true;
        return saved.err();
    }
    const auto elements = std::to_string(graph_->elements());
    auto       err      = in_transaction(db_, [&]() -> std::optional<error> {
        if (!meta_set(db_, "graph_sha256", *saved) || !meta_set(db_, "graph_elements", elements)) {
            return db_error(db_, "record the index file's checksum");
        }
        return std::nullopt;
    });
    if (err) {
        dirty_ = true;
    }
    return err;
}

std::optional<error> document_index::check_document(const std::string &id, const std::string &name,
                                                    const std::vector<chunk_input>  &chunks,
                                                    std::vector<std::vector<float>> &unit_vectors) const {
    if (id.empty() || id.size() > options_.max_id_bytes || !utf8_valid(id)) {
        return error::invalid("a document id must be 1 to " + std::to_string(options_.max_id_bytes) + " bytes of UTF-8",
                              "document_id");
    }
    if (name.size() > options_.max_name_bytes || !utf8_valid(name)) {
        return error::invalid(
            "a document name must be at most " + std::to_string(options_.max_name_bytes) + " bytes of UTF-8", "name");
    }
    if (chunks.size() > options_.max_chunks_per_doc) {
        return error{error_kind::payload_too_large,
                     "the document has " + std::to_string(chunks.size()) + " chunks; the limit is " +
                         std::to_string(options_.max_chunks_per_doc),
                     "chunks", "too_many_chunks"};
    }
    unit_vectors.clear();
    unit_vectors.reserve(chunks.size());
    for (size_t i = 0; i < chunks.size(); ++i) {
        const auto &c     = chunks[i];
        const auto  where = "chunks[" + std::to_string(i) + "]";
        if (c.text.size() > options_.max_chunk_bytes) {
            return error::invalid(where + ".text is " + std::to_string(c.text.size()) + " bytes; the limit is " +
                                      std::to_string(options_.max_chunk_bytes),
                                  where + ".text");
        }
        if (!utf8_valid(c.text)) {
            return error::invalid(where + ".text is not valid UTF-8", where + ".text");
        }
        if (c.offset < 0) {
            return error::invalid(where + ".offset is negative", where + ".offset");
        }
        if (c.embedding.size() != dimension_) {
            return error::invalid(where + ".embedding has " + std::to_string(c.embedding.size()) +
                                      " dimensions; the index holds " + std::to_string(dimension_) +
                                      "-dimensional vectors",
                                  where + ".embedding");
        }
        unit_vectors.push_back(c.embedding);
        if (!normalize(unit_vectors.back())) {
            return error::invalid(where + ".embedding is zero or not finite", where + ".embedding");
        }
    }
    return std::nullopt;
}

result<size_t> document_index::add_document(const std::string &id, const std::string &name,
                                            const std::vector<chunk_input> &chunks) {
    std::vector<std::vector<float>> units;
    if (auto err = check_document(id, name, chunks, units)) {
        return *err;
    }
    auto         lock     = write_lock();
    const auto   existing = docs_.find(id);
    const size_t replaced = existing == docs_.end() ? 0 : existing->second.n_chunks;
    if (n_chunks_ - replaced + chunks.size() > options_.max_chunks) {
        return error{error_kind::payload_too_large,
                     "the index holds " + std::to_string(n_chunks_) + " chunks; " + std::to_string(chunks.size()) +
                         " more would pass its limit of " + std::to_string(options_.max_chunks),
                     "chunks", "index_full"};
    }
    std::vector<int64_t> new_ids;
    auto                 err = in_transaction(db_, [&]() -> std::optional<error> {
        query del_text(db_, "DELETE FROM chunk_text WHERE rowid IN (SELECT id FROM chunks WHERE document_id = ?1)");
        query del_chunks(db_, "DELETE FROM chunks WHERE document_id = ?1");
        query del_doc(db_, "DELETE FROM documents WHERE id = ?1");
        query ins_doc(db_, "INSERT INTO documents (id, name, n_chunks, created) VALUES (?1, ?2, ?3, ?4)");
        query ins_chunk(db_, "INSERT INTO chunks (document_id, position, byte_offset, vector) VALUES (?1, ?2, ?3, ?4)");
        query ins_text(db_, "INSERT INTO chunk_text (rowid, text) VALUES (?1, ?2)");
        for (auto *q : {&del_text, &del_chunks, &del_doc}) {
            q->bind(1, id);
            if (!q->ok() || q->step() != SQLITE_DONE) {
                return db_error(db_, "replace document " + id);
            }
        }
        ins_doc.bind(1, id);
        ins_doc.bind(2, name);
        ins_doc.bind(3, static_cast<int64_t>(chunks.size()));
        ins_doc.bind(4, static_cast<int64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                                 std::chrono::system_clock::now().time_since_epoch())
                                                 .count()));
        if (!ins_doc.ok() || ins_doc.step() != SQLITE_DONE || !ins_chunk.ok() || !ins_text.ok()) {
            return db_error(db_, "add document " + id);
        }
        for (size_t i = 0; i < chunks.size(); ++i) {
            ins_chunk.bind(1, id);
            ins_chunk.bind(2, static_cast<int64_t>(i));
            ins_chunk.bind(3, chunks[i].offset);
            ins_chunk.bind_blob(4, units[i].data(), units[i].size() * sizeof(float));
            if (ins_chunk.step() != SQLITE_DONE) {
                return db_error(db_, "add a chunk of document " + id);
            }
            ins_chunk.reset();
            new_ids.push_back(sqlite3_last_insert_rowid(db_));
            ins_text.bind(1, new_ids.back());
            ins_text.bind(2, chunks[i].text);
            if (ins_text.step() != SQLITE_DONE) {
                return db_error(db_, "index a chunk's text of document " + id);
            }
            ins_text.reset();
        }
        if (!meta_set(db_, "graph_sha256", "")) {
            return db_error(db_, "mark the index file stale");
        }
        return std::nullopt;
    });
    if (err) {
        return *err;
    }
    dirty_ = true;
    if (existing != docs_.end()) {
        for (const auto &[first, last] : existing->second.runs) {
            for (int64_t c = first; c <= last; ++c) {
                graph_->mark_deleted(static_cast<uint64_t>(c));
            }
        }
    }
    doc_entry entry;
    entry.n_chunks = chunks.size();
    for (const int64_t c : new_ids) {
        append_id(entry.runs, c);
    }
    n_chunks_ = n_chunks_ - replaced + chunks.size();
    docs_[id] = std::move(entry);
    // The database holds the document now; a graph that cannot take it (memory) is rebuilt at the
    // next open, since the file was marked stale above.
    for (size_t i = 0; i < new_ids.size(); ++i) {
        if (auto add_err = graph_->add(static_cast<uint64_t>(new_ids[i]), units[i].data())) {
            return *add_err;
        }
    }
    if (graph_->deleted() > std::max(min_compaction, n_chunks_)) {
        if (auto rebuild_err = rebuild_graph("compaction")) {
            return *rebuild_err;
        }
    }
    return chunks.size();
}

result<size_t> document_index::remove_document(const std::string &id) {
    auto       lock = write_lock();
    const auto it   = docs_.find(id);
    if (it == docs_.end()) {
        return size_t{0};
    }
    auto err = in_transaction(db_, [&]() -> std::optional<error> {
        query del_text(db_, "DELETE FROM chunk_text WHERE rowid IN (SELECT id FROM chunks WHERE document_id = ?1)");
        query del_chunks(db_, "DELETE FROM chunks WHERE document_id = ?1");
        query del_doc(db_, "DELETE FROM documents WHERE id = ?1");
        for (auto *q : {&del_text, &del_chunks, &del_doc}) {
            q->bind(1, id);
            if (!q->ok() || q->step() != SQLITE_DONE) {
                return db_error(db_, "remove document " + id);
            }
        }
        if (!meta_set(db_, "graph_sha256", "")) {
            return db_error(db_, "mark the index file stale");
        }
        return std::nullopt;
    });
    if (err) {
        return *err;
    }
    dirty_ = true;
    for (const auto &[first, last] : it->second.runs) {
        for (int64_t c = first; c <= last; ++c) {
            graph_->mark_deleted(static_cast<uint64_t>(c));
        }
    }
    const size_t removed = it->second.n_chunks;
    n_chunks_ -= removed;
    docs_.erase(it);
    if (graph_->deleted() > std::max(min_compaction, n_chunks_)) {
        if (auto rebuild_err = rebuild_graph("compaction")) {
            return *rebuild_err;
        }
    }
    return removed;
}

std::shared_lock<std::shared_mutex> document_index::read_lock() const {
    std::lock_guard gate(gate_);
    return std::shared_lock(mutex_);
}

std::unique_lock<std::shared_mutex> document_index::write_lock() {
    std::lock_guard gate(gate_);
    return std::unique_lock(mutex_);
}

bool document_index::has_document(const std::string &id) const {
    auto lock = read_lock();
    return docs_.count(id) != 0;
}

std::optional<error> document_index::check_k(size_t k) const {
    if (k < 1 || k > options_.max_k) {
        return error::invalid("the number of results must be between 1 and " + std::to_string(options_.max_k) +
                                  "; it is " + std::to_string(k),
                              "max_num_results");
    }
    return std::nullopt;
}

result<std::vector<float>> document_index::unit_query(const std::vector<float> &v) const {
    if (v.size() != dimension_) {
        return error::invalid("the query vector has " + std::to_string(v.size()) + " dimensions; the index holds " +
                                  std::to_string(dimension_) + "-dimensional vectors",
                              "query");
    }
    auto unit = v;
    if (!normalize(unit)) {
        return error::invalid("the query vector is zero or not finite", "query");
    }
    return unit;
}

// The chunk id runs of the filter's documents, sorted (empty runs and no filter ids: see callers).
result<std::vector<std::pair<int64_t, int64_t>>> document_index::allowed_runs(const search_filter &filter) const {
    if (filter.document_ids.size() > options_.max_filter_ids) {
        return error::invalid("a search filter names at most " + std::to_string(options_.max_filter_ids) +
                                  " documents; this one names " + std::to_string(filter.document_ids.size()),
                              "filters");
    }
    std::vector<std::pair<int64_t, int64_t>> runs;
    for (const auto &id : filter.document_ids) {
        if (const auto it = docs_.find(id); it != docs_.end()) {
            runs.insert(runs.end(), it->second.runs.begin(), it->second.runs.end());
        }
    }
    std::sort(runs.begin(), runs.end());
    return runs;
}

// Under the shared lock. With `runs`, only those chunks: exactly when they are few, else by
// asking the graph for more neighbours than k until k of them pass (or the graph is exhausted).
std::vector<std::pair<int64_t, float>>
document_index::nearest(const std::vector<float> &unit, size_t k,
                        const std::vector<std::pair<int64_t, int64_t>> *runs) const {
    std::vector<std::pair<int64_t, float>> out;
    if (runs == nullptr) {
        for (const auto &[label, sim] : graph_->search(unit.data(), k)) {
            out.emplace_back(static_cast<int64_t>(label), sim);
        }
        return out;
    }
    size_t allowed = 0;
    for (const auto &[first, last] : *runs) {
        allowed += static_cast<size_t>(last - first + 1);
    }
    if (allowed <= options_.exact_search_chunks) {
        for (const auto &[first, last] : *runs) {
            for (int64_t id = first; id <= last; ++id) {
                if (const auto sim = graph_->similarity(static_cast<uint64_t>(id), unit.data())) {
                    out.emplace_back(id, *sim);
                }
            }
        }
        const auto n = static_cast<std::ptrdiff_t>(std::min(k, out.size()));
        std::partial_sort(out.begin(), out.begin() + n, out.end(), [](const auto &a, const auto &b) {
            return a.second > b.second || (a.second == b.second && a.first < b.first);
        });
        out.resize(static_cast<size_t>(n));
        return out;
    }
    const size_t live  = graph_->elements() - graph_->deleted();
    const double share = static_cast<double>(allowed) / static_cast<double>(std::max<size_t>(live, 1));
    size_t       ask   = std::min(live, std::max(2 * k, static_cast<size_t>(2.0 * static_cast<double>(k) / share)));
    while (true) {
        out.clear();
        for (const auto &[label, sim] : graph_->search(unit.data(), ask)) {
            if (in_runs(*runs, static_cast<int64_t>(label))) {
                out.emplace_back(static_cast<int64_t>(label), sim);
                if (out.size() == k) {
                    return out;
                }
            }
        }
        if (ask >= live) {
            return out;
        }
        ask = std::min(live, 4 * ask);
    }
}

result<std::vector<std::pair<int64_t, double>>> document_index::keyword_ranking(const std::string &query_text, size_t k,
                                                                                const search_filter &filter) const {
    auto expr = fts_match_expression(query_text, options_.query);
    if (!expr) {
        return expr.err();
    }
    std::vector<std::pair<int64_t, double>> out;
    if (expr->empty()) {
        return out;
    }
    std::string sql = "SELECT rowid, bm25(chunk_text) FROM chunk_text WHERE chunk_text MATCH ?1";
    if (!filter.document_ids.empty()) {
        sql += " AND rowid IN (SELECT id FROM chunks WHERE document_id IN (";
        for (size_t i = 0; i < filter.document_ids.size(); ++i) {
            sql += (i == 0 ? "?" : ", ?") + std::to_string(i + 3);
        }
        sql += "))";
    }
    sql += " ORDER BY bm25(chunk_text), rowid LIMIT ?2";
    query q(db_, sql);
    if (!q.ok()) {
        return db_error(db_, "prepare a keyword search");
    }
    q.bind(1, *expr);
    q.bind(2, static_cast<int64_t>(k));
    for (size_t i = 0; i < filter.document_ids.size(); ++i) {
        q.bind(static_cast<int>(i + 3), filter.document_ids[i]);
    }
    int rc = 0;
    while ((rc = q.step()) == SQLITE_ROW) {
        out.emplace_back(q.integer(0), -q.real(1));
    }
    if (rc != SQLITE_DONE) {
        return db_error(db_, "run a keyword search");
    }
    return out;
}

result<std::vector<search_hit>> document_index::hits_for(const std::vector<std::pair<int64_t, double>> &ranked) const {
    query q(db_, "SELECT c.document_id, d.name, c.position, c.byte_offset, t.text FROM chunks c "
                 "JOIN documents d ON d.id = c.document_id JOIN chunk_text t ON t.rowid = c.id WHERE c.id = ?1");
    if (!q.ok()) {
        return db_error(db_, "prepare a chunk lookup");
    }
    std::vector<search_hit> hits;
    for (const auto &[id, score] : ranked) {
        q.bind(1, id);
        if (q.step() == SQLITE_ROW) {
            hits.push_back(search_hit{id, q.text(0), q.text(1), q.integer(2), q.integer(3), q.text(4), score});
        }
        q.reset();
    }
    return hits;
}

result<std::vector<search_hit>> document_index::vector_search(const std::vector<float> &query_vector, size_t k,
                                                              const search_filter &filter) const {
    if (auto err = check_k(k)) {
        return *err;
    }
    auto unit = unit_query(query_vector);
    if (!unit) {
        return unit.err();
    }
    auto lock = read_lock();
    auto runs = allowed_runs(filter);
    if (!runs) {
        return runs.err();
    }
    if (!filter.document_ids.empty() && runs->empty()) {
        return std::vector<search_hit>{};
    }
    std::vector<std::pair<int64_t, double>> ranked;
    for (const auto &[id, sim] : nearest(*unit, k, filter.document_ids.empty() ? nullptr : &*runs)) {
        ranked.emplace_back(id, sim);
    }
    return hits_for(ranked);
}

result<std::vector<search_hit>> document_index::keyword_search(const std::string &query_text, size_t k,
                                                               const search_filter &filter) const {
    if (auto err = check_k(k)) {
        return *err;
    }
    auto lock = read_lock();
    if (auto runs = allowed_runs(filter); !runs) {
        return runs.err();
    }
    auto ranked = keyword_ranking(query_text, k, filter);
    if (!ranked) {
        return ranked.err();
    }
    return hits_for(*ranked);
}

result<std::vector<search_hit>> document_index::hybrid_search(const std::string        &query_text,
                                                              const std::vector<float> &query_vector,
                                                              const hybrid_options     &opts,
                                                              const search_filter      &filter) const {
    if (auto err = check_k(opts.k)) {
        return *err;
    }
    if (!(opts.rrf_k > 0) || !std::isfinite(opts.rrf_k)) {
        return error::invalid("the rank fusion constant must be positive", "ranking_options");
    }
    auto unit = unit_query(query_vector);
    if (!unit) {
        return unit.err();
    }
    const size_t                    candidates = std::clamp(opts.candidates, opts.k, options_.max_k);
    const size_t                    keep = opts.rerank ? std::clamp(opts.rerank_top_n, opts.k, options_.max_k) : opts.k;
    result<std::vector<search_hit>> hits = std::vector<search_hit>{};
    {
        auto lock = read_lock();
        auto runs = allowed_runs(filter);
        if (!runs) {
            return runs.err();
        }
        if (!filter.document_ids.empty() && runs->empty()) {
            return std::vector<search_hit>{};
        }
        auto keyword = keyword_ranking(query_text, candidates, filter);
        if (!keyword) {
            return keyword.err();
        }
        std::vector<std::vector<int64_t>> rankings(1);
        for (const auto &[id, sim] : nearest(*unit, candidates, filter.document_ids.empty() ? nullptr : &*runs)) {
            rankings[0].push_back(id);
        }
        if (!keyword->empty()) { // a query with no term (or no match) fuses the vector ranking alone
            rankings.emplace_back();
            for (const auto &[id, score] : *keyword) {
                rankings[1].push_back(id);
            }
        }
        std::vector<std::pair<int64_t, double>> fused;
        for (const auto &item : reciprocal_rank_fusion(rankings, opts.rrf_k)) {
            if (fused.size() == keep) {
                break;
            }
            fused.emplace_back(item.id, item.score);
        }
        hits = hits_for(fused);
    }
    if (!hits) {
        return hits;
    }
    // The reranker runs without the lock: it may be a model call, and writers must not wait on it.
    if (opts.rerank && !hits->empty()) {
        std::vector<std::string> texts;
        for (const auto &h : *hits) {
            texts.push_back(h.text);
        }
        auto scores = opts.rerank(query_text, texts);
        if (!scores) {
            return scores.err();
        }
        if (scores->size() != texts.size()) {
            return error{error_kind::internal,
                         "the reranker returned " + std::to_string(scores->size()) + " scores for " +
                             std::to_string(texts.size()) + " texts",
                         "", ""};
        }
        for (size_t i = 0; i < hits->size(); ++i) {
            if (!std::isfinite((*scores)[i])) {
                return error{error_kind::internal, "the reranker returned a score that is not finite", "", ""};
            }
            (*hits)[i].score = std::clamp((*scores)[i], 0.0, 1.0);
        }
        std::stable_sort(hits->begin(), hits->end(), [](const auto &a, const auto &b) { return a.score > b.score; });
    }
    auto &out = *hits;
    out.erase(std::remove_if(out.begin(), out.end(), [&](const auto &h) { return h.score < opts.score_threshold; }),
              out.end());
    if (out.size() > opts.k) {
        out.resize(opts.k);
    }
    return hits;
}

index_stats document_index::stats() const {
    auto        lock = read_lock();
    index_stats s;
    s.documents       = docs_.size();
    s.chunks          = n_chunks_;
    s.graph_elements  = graph_->elements();
    s.graph_deleted   = graph_->deleted();
    s.rebuilt_at_open = rebuilt_at_open_;
    s.rebuild_reason  = rebuild_reason_;
    s.dirty           = dirty_;
    return s;
}

} // namespace inferbox::retrieval

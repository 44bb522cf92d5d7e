#include "retrieval/vector_store_catalog.h"

#include "common/failpoint.h"
#include "common/random_id.h"
#include "common/sqlite_statement.h"
#include "common/unix_time.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <chrono>

namespace inferbox::retrieval {

using sqlite::exec;
using sqlite::statement;

namespace {

error internal(const std::string &what) {
    return error{error_kind::internal, "the vector store catalogue failed: " + what, "", ""};
}

// A store id as new_store_id makes them: only such ids name folders, so a client's id can never
// reach outside the catalogue's directory.
bool well_formed_id(const std::string &id) {
    if (id.size() != 27 || id.rfind("vs_", 0) != 0) {
        return false;
    }
    return std::all_of(id.begin() + 3, id.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

constexpr const char *store_columns = "s.id, s.name, s.metadata, s.created, s.last_active, "
                                      "(SELECT count(*) FROM files f WHERE f.store_id = s.id AND f.status = 0), "
                                      "(SELECT count(*) FROM files f WHERE f.store_id = s.id AND f.status = 1), "
                                      "(SELECT count(*) FROM files f WHERE f.store_id = s.id AND f.status = 2), "
                                      "(SELECT coalesce(sum(f.usage_bytes), 0) FROM files f WHERE f.store_id = s.id), "
                                      "s.expires_days, s.expired";

vector_store_record read_store(const statement &st, int64_t seconds_per_day) {
    vector_store_record r;
    r.id             = st.text(0);
    r.name           = st.text(1);
    r.metadata_json  = st.text(2);
    r.created_at     = st.integer(3);
    r.last_active_at = st.integer(4);
    r.n_in_progress  = st.integer(5);
    r.n_completed    = st.integer(6);
    r.n_failed       = st.integer(7);
    r.usage_bytes    = st.integer(8);
    r.expires_days   = st.integer(9);
    r.expires_at     = r.expires_days > 0 ? r.last_active_at + r.expires_days * seconds_per_day : 0;
    // The sweep marks it; between two sweeps the clock alone says so.
    r.expired = st.integer(10) != 0 || (r.expires_at > 0 && r.expires_at <= unix_seconds());
    return r;
}

constexpr const char *file_columns = "file_id, store_id, created, status, error_code, error_message, chunk_static, "
                                     "chunk_max, chunk_overlap, n_chunks, usage_bytes, attributes";

vector_store_file_record read_file(const statement &st) {
    vector_store_file_record r;
    r.file_id                 = st.text(0);
    r.store_id                = st.text(1);
    r.created_at              = st.integer(2);
    r.status                  = static_cast<store_file_status>(std::clamp<int64_t>(st.integer(3), 0, 2));
    r.error_code              = st.text(4);
    r.error_message           = st.text(5);
    r.chunking.is_static      = st.integer(6) != 0;
    r.chunking.max_tokens     = st.integer(7);
    r.chunking.overlap_tokens = st.integer(8);
    r.n_chunks                = st.integer(9);
    r.usage_bytes             = st.integer(10);
    r.attributes_json         = st.text(11);
    return r;
}

std::optional<error> check_limit_of(const std::string &s, size_t limit, const char *what) {
    if (s.size() > limit) {
        return error::invalid(std::string(what) + " has " + std::to_string(s.size()) + " bytes; at most " +
                                  std::to_string(limit) + " are allowed",
                              what);
    }
    return std::nullopt;
}

std::optional<error> check_expiry_days(int64_t days) {
    if (days < 0 || days > max_expiry_days) {
        return error::invalid("expires_after.days must be from 1 to " + std::to_string(max_expiry_days) + ", got " +
                                  std::to_string(days),
                              "expires_after.days");
    }
    return std::nullopt;
}

// Adds a column that catalogues made before it lack (CREATE TABLE IF NOT EXISTS leaves an
// existing table as it was).
bool add_column(sqlite3 *db, const char *table, const char *column, const char *declaration) {
    statement st(db, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2");
    st.bind(1, std::string_view(table));
    st.bind(2, std::string_view(column));
    if (!st.ok()) {
        return false;
    }
    const int rc = st.step();
    if (rc == SQLITE_ROW) {
        return true;
    }
    return rc == SQLITE_DONE &&
           exec(db, (std::string("ALTER TABLE ") + table + " ADD COLUMN " + column + " " + declaration).c_str());
}

} // namespace

std::optional<error> check_chunking(const chunking_strategy &c) {
    if (!c.is_static) {
        return std::nullopt;
    }
    if (c.max_tokens < 100 || c.max_tokens > 4096) {
        return error::invalid("chunking_strategy.static.max_chunk_size_tokens must be from 100 to 4096, got " +
                                  std::to_string(c.max_tokens),
                              "chunking_strategy.static.max_chunk_size_tokens");
    }
    if (c.overlap_tokens < 0 || c.overlap_tokens > c.max_tokens / 2) {
        return error::invalid("chunking_strategy.static.chunk_overlap_tokens must be from 0 to half of "
                              "max_chunk_size_tokens (" +
                                  std::to_string(c.max_tokens / 2) + "), got " + std::to_string(c.overlap_tokens),
                              "chunking_strategy.static.chunk_overlap_tokens");
    }
    return std::nullopt;
}

const char *status_name(store_file_status s) {
    switch (s) {
    case store_file_status::in_progress:
        return "in_progress";
    case store_file_status::completed:
        return "completed";
    case store_file_status::failed:
        return "failed";
    }
    return "failed";
}

error vector_store_not_found(const std::string &id) {
    return error{error_kind::not_found, "no vector store with id '" + id.substr(0, 100) + "'", "vector_store_id",
                 "vector_store_not_found"};
}

error vector_store_expired(const vector_store_record &s) {
    return error{error_kind::not_found,
                 "vector store " + s.id + " expired at " + std::to_string(s.expires_at) + " (" +
                     std::to_string(s.expires_days) +
                     " days after its last activity) and its files were removed; create a new one",
                 "vector_store_id", "vector_store_expired"};
}

result<std::unique_ptr<vector_store_catalog>> vector_store_catalog::open(const std::filesystem::path &dir,
                                                                         const vector_store_limits   &limits,
                                                                         const index_options         &index) {
    auto db = sqlite::open_store(
        dir / "catalogue.sqlite3", "the vector store catalogue",
        {"CREATE TABLE IF NOT EXISTS stores (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
         "owner TEXT NOT NULL, name TEXT NOT NULL, metadata TEXT NOT NULL, chunk_static INTEGER NOT NULL, "
         "chunk_max INTEGER NOT NULL, chunk_overlap INTEGER NOT NULL, created INTEGER NOT NULL, "
         "last_active INTEGER NOT NULL, expires_days INTEGER NOT NULL DEFAULT 0, expired INTEGER NOT NULL DEFAULT 0)",
         "CREATE INDEX IF NOT EXISTS stores_owner ON stores (owner, seq)",
         "CREATE TABLE IF NOT EXISTS files (seq INTEGER PRIMARY KEY AUTOINCREMENT, store_id TEXT NOT NULL, "
         "file_id TEXT NOT NULL, created INTEGER NOT NULL, status INTEGER NOT NULL, error_code TEXT NOT NULL, "
         "error_message TEXT NOT NULL, chunk_static INTEGER NOT NULL, chunk_max INTEGER NOT NULL, "
         "chunk_overlap INTEGER NOT NULL, n_chunks INTEGER NOT NULL, usage_bytes INTEGER NOT NULL, "
         "attributes TEXT NOT NULL DEFAULT '{}', UNIQUE (store_id, file_id))",
         // Ingestion runs in memory: a file still in progress at open was cut off by a stop.
         "UPDATE files SET status = 2, error_code = 'server_error', error_message = 'the server stopped while "
         "the file was being added; add it again' WHERE status = 0"});
    if (!db) {
        return db.err();
    }
    // Catalogues from before attributes and expiry gain their columns.
    if (!add_column(*db, "files", "attributes", "TEXT NOT NULL DEFAULT '{}'") ||
        !add_column(*db, "stores", "expires_days", "INTEGER NOT NULL DEFAULT 0") ||
        !add_column(*db, "stores", "expired", "INTEGER NOT NULL DEFAULT 0")) {
        std::string why = sqlite3_errmsg(*db);
        sqlite3_close(*db);
        return error{error_kind::internal,
                     "cannot upgrade the vector store catalogue " + (dir / "catalogue.sqlite3").string() + ": " + why,
                     "", ""};
    }
    if (static_cast<size_t>(limits.max_files_per_store) > index.max_filter_ids) {
        sqlite3_close(*db);
        return error::invalid("a vector store may hold at most " + std::to_string(index.max_filter_ids) +
                              " files (what one search filter names)");
    }
    vector_store_limits effective = limits;
    if (const int ms = failpoint_ms("INFERBOX_FAILPOINT_VECTOR_STORE_DAY_MS"); ms > 0) {
        effective.seconds_per_day = std::max(1, ms / 1000);
    }
    std::unique_ptr<vector_store_catalog> catalog(new vector_store_catalog(*db, dir, effective, index));
    catalog->sweep_expired();
    return catalog;
}

void vector_store_catalog::sweep_expired() {
    std::vector<std::string>                     due;
    std::vector<std::shared_ptr<document_index>> closing;
    {
        std::lock_guard lock(mu_);
        statement       st(db_, "SELECT id FROM stores WHERE expired = 0 AND expires_days > 0 AND "
                                      "last_active + expires_days * ?1 <= ?2");
        st.bind(1, limits_.seconds_per_day);
        st.bind(2, unix_seconds());
        while (st.ok() && st.step() == SQLITE_ROW) {
            due.push_back(st.text(0));
        }
        for (const auto &id : due) {
            statement files(db_, "DELETE FROM files WHERE store_id = ?1");
            files.bind(1, id);
            statement mark(db_, "UPDATE stores SET expired = 1 WHERE id = ?1");
            mark.bind(1, id);
            if (!exec(db_, "BEGIN") || files.step() != SQLITE_DONE || mark.step() != SQLITE_DONE ||
                !exec(db_, "COMMIT")) {
                exec(db_, "ROLLBACK");
                spdlog::warn("vector store {}: cannot expire it: {}", id, sqlite3_errmsg(db_));
                continue;
            }
            if (auto it = indexes_.find(id); it != indexes_.end()) {
                closing.push_back(std::move(it->second));
                indexes_.erase(it);
            }
        }
    }
    closing.clear();
    for (const auto &id : due) {
        std::error_code ec;
        if (well_formed_id(id)) {
            std::filesystem::remove_all(dir_ / id, ec);
        }
        if (ec) {
            spdlog::warn("vector store {}: cannot remove its folder: {}", id, ec.message());
        } else {
            spdlog::info("vector store {}: expired; its files and index are removed", id);
        }
    }
}

std::map<std::string, vector_store_catalog::file_attributes>
vector_store_catalog::file_attributes_locked(const std::string &store_id, bool typed) {
    std::map<std::string, file_attributes> out;
    statement                              st(db_, "SELECT file_id, attributes FROM files WHERE store_id = ?1");
    st.bind(1, store_id);
    while (st.ok() && st.step() == SQLITE_ROW) {
        out[st.text(0)].json = st.text(1);
    }
    if (!typed) {
        return out;
    }
    // The values typed by SQLite's own JSON reader (the API layer wrote only strings, numbers
    // and booleans).
    statement values(db_, "SELECT f.file_id, j.key, j.type, j.atom FROM files f, json_each(f.attributes) j "
                          "WHERE f.store_id = ?1");
    values.bind(1, store_id);
    while (values.ok() && values.step() == SQLITE_ROW) {
        auto             &into = out[values.text(0)].values;
        const std::string type = values.text(2);
        if (type == "text") {
            into[values.text(1)] = values.text(3);
        } else if (type == "integer" || type == "real") {
            into[values.text(1)] = values.real(3);
        } else if (type == "true" || type == "false") {
            into[values.text(1)] = type == "true";
        }
    }
    return out;
}

vector_store_catalog::~vector_store_catalog() {
    indexes_.clear(); // each index saves its graph
    sqlite3_close(db_);
}

std::optional<vector_store_record> vector_store_catalog::get_locked(const std::string &owner, const std::string &id) {
    statement st(db_,
                 (std::string("SELECT ") + store_columns + " FROM stores s WHERE s.id = ?1 AND s.owner = ?2").c_str());
    st.bind(1, id);
    st.bind(2, owner);
    if (!st.ok() || st.step() != SQLITE_ROW) {
        return std::nullopt;
    }
    return read_store(st, limits_.seconds_per_day);
}

bool vector_store_catalog::owns_locked(const std::string &owner, const std::string &store_id) {
    statement st(db_, "SELECT 1 FROM stores WHERE id = ?1 AND owner = ?2");
    st.bind(1, store_id);
    st.bind(2, owner);
    return st.ok() && st.step() == SQLITE_ROW;
}

result<vector_store_record> vector_store_catalog::create(const std::string &owner, const std::string &name,
                                                         const std::string       &metadata_json,
                                                         const chunking_strategy &chunking, int64_t expires_days) {
    if (auto err = check_limit_of(name, limits_.max_name_bytes, "name")) {
        return *err;
    }
    if (auto err = check_expiry_days(expires_days)) {
        return *err;
    }
    sweep_expired();
    if (auto err = check_limit_of(metadata_json, limits_.max_metadata_bytes, "metadata")) {
        return *err;
    }
    if (auto err = check_chunking(chunking)) {
        return *err;
    }
    std::lock_guard lock(mu_);
    statement       count(db_, "SELECT count(*) FROM stores WHERE owner = ?1");
    count.bind(1, owner);
    if (!count.ok() || count.step() != SQLITE_ROW) {
        return internal(count.error());
    }
    if (count.integer(0) >= limits_.max_stores_per_owner) {
        return error{error_kind::payload_too_large,
                     "this API key has " + std::to_string(count.integer(0)) + " vector stores, the most allowed (" +
                         std::to_string(limits_.max_stores_per_owner) +
                         ", --vector-stores-max-count); delete one first",
                     "", "too_many_vector_stores"};
    }
    const std::string id  = random_id("vs_");
    const int64_t     now = unix_seconds();
    statement         ins(db_, "INSERT INTO stores (id, owner, name, metadata, chunk_static, chunk_max, chunk_overlap, "
                                       "created, last_active, expires_days) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)");
    ins.bind(1, id);
    ins.bind(2, owner);
    ins.bind(3, name);
    ins.bind(4, metadata_json.empty() ? std::string("{}") : metadata_json);
    ins.bind(5, int64_t{chunking.is_static ? 1 : 0});
    ins.bind(6, chunking.max_tokens);
    ins.bind(7, chunking.overlap_tokens);
    ins.bind(8, now);
    ins.bind(9, expires_days);
    if (!ins.ok() || ins.step() != SQLITE_DONE) {
        return internal(ins.error());
    }
    auto made = get_locked(owner, id);
    if (!made) {
        return internal("the new store " + id + " cannot be read back");
    }
    return *made;
}

std::optional<vector_store_record> vector_store_catalog::get(const std::string &owner, const std::string &id) {
    sweep_expired();
    std::lock_guard lock(mu_);
    return get_locked(owner, id);
}

result<catalogue_page<vector_store_record>> vector_store_catalog::list(const std::string &owner, int32_t limit,
                                                                       bool ascending, const std::string &after) {
    if (limit < 1 || limit > 100) {
        return error::invalid("limit must be from 1 to 100, got " + std::to_string(limit), "limit");
    }
    sweep_expired();
    std::lock_guard lock(mu_);
    int64_t         after_seq = ascending ? 0 : INT64_MAX;
    if (!after.empty()) {
        statement st(db_, "SELECT seq FROM stores WHERE id = ?1 AND owner = ?2");
        st.bind(1, after);
        st.bind(2, owner);
        if (!st.ok() || st.step() != SQLITE_ROW) {
            return error::invalid("after names no vector store of yours: '" + after.substr(0, 100) + "'", "after");
        }
        after_seq = st.integer(0);
    }
    const std::string sql = std::string("SELECT ") + store_columns + " FROM stores s WHERE s.owner = ?1 AND s.seq " +
                            (ascending ? ">" : "<") + " ?2 ORDER BY s.seq " + (ascending ? "ASC" : "DESC") +
                            " LIMIT ?3";
    statement st(db_, sql.c_str());
    st.bind(1, owner);
    st.bind(2, after_seq);
    st.bind(3, int64_t{limit} + 1);
    catalogue_page<vector_store_record> page;
    while (st.ok() && st.step() == SQLITE_ROW) {
        page.data.push_back(read_store(st, limits_.seconds_per_day));
    }
    if (page.data.size() > static_cast<size_t>(limit)) {
        page.data.pop_back();
        page.has_more = true;
    }
    return page;
}

result<vector_store_record> vector_store_catalog::modify(const std::string &owner, const std::string &id,
                                                         const std::optional<std::string> &name,
                                                         const std::optional<std::string> &metadata_json,
                                                         const std::optional<int64_t>     &expires_days) {
    if (expires_days) {
        if (auto err = check_expiry_days(*expires_days)) {
            return *err;
        }
    }
    if (name) {
        if (auto err = check_limit_of(*name, limits_.max_name_bytes, "name")) {
            return *err;
        }
    }
    if (metadata_json) {
        if (auto err = check_limit_of(*metadata_json, limits_.max_metadata_bytes, "metadata")) {
            return *err;
        }
    }
    sweep_expired();
    std::lock_guard lock(mu_);
    auto            before = get_locked(owner, id);
    if (!before) {
        return vector_store_not_found(id);
    }
    if (before->expired) {
        return vector_store_expired(*before);
    }
    statement st(db_, "UPDATE stores SET name = coalesce(?1, name), metadata = coalesce(?2, metadata), "
                      "last_active = ?3, expires_days = coalesce(?5, expires_days) WHERE id = ?4");
    if (name) {
        st.bind(1, *name);
    }
    if (metadata_json) {
        st.bind(2, *metadata_json);
    }
    st.bind(3, unix_seconds());
    st.bind(4, id);
    if (expires_days) {
        st.bind(5, *expires_days);
    }
    if (!st.ok() || st.step() != SQLITE_DONE) {
        return internal(st.error());
    }
    auto r = get_locked(owner, id);
    if (!r) {
        return vector_store_not_found(id);
    }
    return *r;
}

bool vector_store_catalog::remove(const std::string &owner, const std::string &id) {
    std::shared_ptr<document_index> closing;
    {
        std::lock_guard lock(mu_);
        if (!owns_locked(owner, id)) {
            return false;
        }
        statement files(db_, "DELETE FROM files WHERE store_id = ?1");
        files.bind(1, id);
        statement store(db_, "DELETE FROM stores WHERE id = ?1");
        store.bind(1, id);
        if (!exec(db_, "BEGIN") || files.step() != SQLITE_DONE || store.step() != SQLITE_DONE || !exec(db_, "COMMIT")) {
            exec(db_, "ROLLBACK");
            spdlog::warn("vector store {}: cannot delete it: {}", id, sqlite3_errmsg(db_));
            return false;
        }
        if (auto it = indexes_.find(id); it != indexes_.end()) {
            closing = std::move(it->second);
            indexes_.erase(it);
        }
    }
    // A search that still holds the index finishes on it; its folder goes now (the index's final
    // save, if any, fails quietly into a folder that is gone).
    closing.reset();
    std::error_code ec;
    if (well_formed_id(id)) {
        std::filesystem::remove_all(dir_ / id, ec);
    }
    if (ec) {
        spdlog::warn("vector store {}: cannot remove its folder: {}", id, ec.message());
    }
    return true;
}

result<vector_store_file_record> vector_store_catalog::add_file(const std::string &owner, const std::string &store_id,
                                                                const std::string                      &file_id,
                                                                const std::optional<chunking_strategy> &c,
                                                                const std::string &attributes_json) {
    if (c) {
        if (auto err = check_chunking(*c)) {
            return *err;
        }
    }
    sweep_expired();
    std::lock_guard lock(mu_);
    auto            current = get_locked(owner, store_id);
    if (!current) {
        return vector_store_not_found(store_id);
    }
    if (current->expired) {
        return vector_store_expired(*current);
    }
    statement store(db_, "SELECT chunk_static, chunk_max, chunk_overlap, "
                         "(SELECT count(*) FROM files WHERE store_id = ?1) FROM stores WHERE id = ?1 AND owner = ?2");
    store.bind(1, store_id);
    store.bind(2, owner);
    if (!store.ok() || store.step() != SQLITE_ROW) {
        return vector_store_not_found(store_id);
    }
    chunking_strategy chunking;
    chunking.is_static      = store.integer(0) != 0;
    chunking.max_tokens     = store.integer(1);
    chunking.overlap_tokens = store.integer(2);
    if (c) {
        chunking = *c;
    }
    if (store.integer(3) >= limits_.max_files_per_store) {
        return error{error_kind::payload_too_large,
                     "vector store " + store_id + " holds " + std::to_string(store.integer(3)) +
                         " files, the most allowed (" + std::to_string(limits_.max_files_per_store) + ")",
                     "file_id", "too_many_files"};
    }
    statement ins(db_, "INSERT INTO files (store_id, file_id, created, status, error_code, error_message, "
                       "chunk_static, chunk_max, chunk_overlap, n_chunks, usage_bytes, attributes) "
                       "VALUES (?1, ?2, ?3, 0, '', '', ?4, ?5, ?6, 0, 0, ?7)");
    ins.bind(1, store_id);
    ins.bind(2, file_id);
    ins.bind(3, unix_seconds());
    ins.bind(4, int64_t{chunking.is_static ? 1 : 0});
    ins.bind(5, chunking.max_tokens);
    ins.bind(6, chunking.overlap_tokens);
    ins.bind(7, attributes_json.empty() ? std::string("{}") : attributes_json);
    const int rc = ins.ok() ? ins.step() : SQLITE_ERROR;
    if (rc == SQLITE_CONSTRAINT) {
        return error::invalid("the file " + file_id.substr(0, 100) + " is already in vector store " + store_id +
                                  "; delete it from the store first to add it again",
                              "file_id", "file_already_in_store");
    }
    if (rc != SQLITE_DONE) {
        return internal(ins.error());
    }
    statement st(db_,
                 (std::string("SELECT ") + file_columns + " FROM files WHERE store_id = ?1 AND file_id = ?2").c_str());
    st.bind(1, store_id);
    st.bind(2, file_id);
    if (!st.ok() || st.step() != SQLITE_ROW) {
        return internal(st.error());
    }
    return read_file(st);
}

result<std::shared_ptr<document_index>> vector_store_catalog::index_of(const std::string &store_id, size_t dimension) {
    std::lock_guard lock(mu_);
    if (auto it = indexes_.find(store_id); it != indexes_.end()) {
        if (dimension != 0 && it->second->dimension() != dimension) {
            return error::invalid("the embeddings have " + std::to_string(dimension) +
                                      " dimensions, but vector store " + store_id + " holds embeddings of " +
                                      std::to_string(it->second->dimension()) +
                                      " (made by another embedding model); use a new store",
                                  "", "embedding_dimension_mismatch");
        }
        return it->second;
    }
    if (!well_formed_id(store_id)) {
        return vector_store_not_found(store_id);
    }
    const auto      folder = dir_ / store_id;
    std::error_code ec;
    if (dimension == 0 && !std::filesystem::exists(folder / "index.sqlite", ec)) {
        return std::shared_ptr<document_index>();
    }
    index_options opts = index_options_;
    opts.dimension     = dimension;
    auto opened        = document_index::open(folder, opts);
    if (!opened) {
        return opened.err();
    }
    std::shared_ptr<document_index> idx = std::move(*opened);
    if (dimension != 0 && idx->dimension() != dimension) {
        return error::invalid("the embeddings have " + std::to_string(dimension) + " dimensions, but vector store " +
                                  store_id + " holds embeddings of " + std::to_string(idx->dimension()),
                              "", "embedding_dimension_mismatch");
    }
    indexes_[store_id] = idx;
    return idx;
}

std::optional<error> vector_store_catalog::add_chunks(const std::string &store_id, const std::string &file_id,
                                                      const std::string              &filename,
                                                      const std::vector<chunk_input> &chunks) {
    if (chunks.size() > limits_.max_chunks_per_file) {
        return error{error_kind::payload_too_large,
                     "the file makes " + std::to_string(chunks.size()) + " chunks, more than a vector store takes " +
                         "from one file (" + std::to_string(limits_.max_chunks_per_file) +
                         "); split it or use larger chunks",
                     "file_id", "too_many_chunks"};
    }
    int64_t usage = 0;
    for (const auto &c : chunks) {
        usage += static_cast<int64_t>(c.text.size());
    }
    if (!chunks.empty()) {
        auto idx = index_of(store_id, chunks.front().embedding.size());
        if (!idx) {
            return idx.err();
        }
        auto added = (*idx)->add_document(file_id, filename, chunks);
        if (!added) {
            return added.err();
        }
        if (auto err = (*idx)->save()) {
            spdlog::warn("vector store {}: cannot save its index ({}); the next open rebuilds it", store_id,
                         err->message);
        }
    }
    std::lock_guard lock(mu_);
    statement       st(db_, "UPDATE files SET status = 1, n_chunks = ?1, usage_bytes = ?2 WHERE store_id = ?3 AND "
                                  "file_id = ?4");
    st.bind(1, static_cast<int64_t>(chunks.size()));
    st.bind(2, usage);
    st.bind(3, store_id);
    st.bind(4, file_id);
    if (!st.ok() || st.step() != SQLITE_DONE) {
        return internal(st.error());
    }
    if (sqlite3_changes(db_) == 0) {
        // The file (or its store) was deleted while it was ingested: its chunks go too.
        if (auto it = indexes_.find(store_id); it != indexes_.end()) {
            (void)it->second->remove_document(file_id);
        }
        return vector_store_not_found(store_id);
    }
    statement touch(db_, "UPDATE stores SET last_active = ?1 WHERE id = ?2");
    touch.bind(1, unix_seconds());
    touch.bind(2, store_id);
    touch.step();
    return std::nullopt;
}

void vector_store_catalog::fail_file(const std::string &store_id, const std::string &file_id, const error &why) {
    std::lock_guard lock(mu_);
    statement       st(db_, "UPDATE files SET status = 2, error_code = ?1, error_message = ?2 WHERE store_id = ?3 AND "
                                  "file_id = ?4");
    st.bind(1, why.code.empty() ? std::string("server_error") : why.code);
    st.bind(2, why.message);
    st.bind(3, store_id);
    st.bind(4, file_id);
    if (!st.ok() || st.step() != SQLITE_DONE) {
        spdlog::warn("vector store {}: cannot mark file {} failed: {}", store_id, file_id, st.error());
    }
}

std::optional<vector_store_file_record>
vector_store_catalog::get_file(const std::string &owner, const std::string &store_id, const std::string &file_id) {
    sweep_expired();
    std::lock_guard lock(mu_);
    if (!owns_locked(owner, store_id)) {
        return std::nullopt;
    }
    statement st(db_,
                 (std::string("SELECT ") + file_columns + " FROM files WHERE store_id = ?1 AND file_id = ?2").c_str());
    st.bind(1, store_id);
    st.bind(2, file_id);
    if (!st.ok() || st.step() != SQLITE_ROW) {
        return std::nullopt;
    }
    return read_file(st);
}

result<catalogue_page<vector_store_file_record>>
vector_store_catalog::list_files(const std::string &owner, const std::string &store_id, int32_t limit, bool ascending,
                                 const std::string &after, const std::optional<store_file_status> &status) {
    if (limit < 1 || limit > 100) {
        return error::invalid("limit must be from 1 to 100, got " + std::to_string(limit), "limit");
    }
    sweep_expired();
    std::lock_guard lock(mu_);
    if (!owns_locked(owner, store_id)) {
        return vector_store_not_found(store_id);
    }
    int64_t after_seq = ascending ? 0 : INT64_MAX;
    if (!after.empty()) {
        statement st(db_, "SELECT seq FROM files WHERE store_id = ?1 AND file_id = ?2");
        st.bind(1, store_id);
        st.bind(2, after);
        if (!st.ok() || st.step() != SQLITE_ROW) {
            return error::invalid("after names no file of this vector store: '" + after.substr(0, 100) + "'", "after");
        }
        after_seq = st.integer(0);
    }
    const std::string sql = std::string("SELECT ") + file_columns + " FROM files WHERE store_id = ?1 AND seq " +
                            (ascending ? ">" : "<") + " ?2 AND (?3 < 0 OR status = ?3) ORDER BY seq " +
                            (ascending ? "ASC" : "DESC") + " LIMIT ?4";
    statement st(db_, sql.c_str());
    st.bind(1, store_id);
    st.bind(2, after_seq);
    st.bind(3, status ? static_cast<int64_t>(*status) : int64_t{-1});
    st.bind(4, int64_t{limit} + 1);
    catalogue_page<vector_store_file_record> page;
    while (st.ok() && st.step() == SQLITE_ROW) {
        page.data.push_back(read_file(st));
    }
    if (page.data.size() > static_cast<size_t>(limit)) {
        page.data.pop_back();
        page.has_more = true;
    }
    return page;
}

result<vector_store_file_record> vector_store_catalog::set_file_attributes(const std::string &owner,
                                                                           const std::string &store_id,
                                                                           const std::string &file_id,
                                                                           const std::string &attributes_json) {
    sweep_expired();
    std::lock_guard lock(mu_);
    if (!owns_locked(owner, store_id)) {
        return vector_store_not_found(store_id);
    }
    statement st(db_, "UPDATE files SET attributes = ?1 WHERE store_id = ?2 AND file_id = ?3");
    st.bind(1, attributes_json.empty() ? std::string("{}") : attributes_json);
    st.bind(2, store_id);
    st.bind(3, file_id);
    if (!st.ok() || st.step() != SQLITE_DONE) {
        return internal(st.error());
    }
    if (sqlite3_changes(db_) == 0) {
        return error{error_kind::not_found,
                     "no file '" + file_id.substr(0, 100) + "' in vector store '" + store_id.substr(0, 100) + "'",
                     "file_id", "file_not_found"};
    }
    statement read(
        db_, (std::string("SELECT ") + file_columns + " FROM files WHERE store_id = ?1 AND file_id = ?2").c_str());
    read.bind(1, store_id);
    read.bind(2, file_id);
    if (!read.ok() || read.step() != SQLITE_ROW) {
        return internal(read.error());
    }
    return read_file(read);
}

result<bool> vector_store_catalog::remove_file(const std::string &owner, const std::string &store_id,
                                               const std::string &file_id) {
    {
        std::lock_guard lock(mu_);
        if (!owns_locked(owner, store_id)) {
            return vector_store_not_found(store_id);
        }
        statement st(db_, "DELETE FROM files WHERE store_id = ?1 AND file_id = ?2");
        st.bind(1, store_id);
        st.bind(2, file_id);
        if (!st.ok() || st.step() != SQLITE_DONE) {
            return internal(st.error());
        }
        if (sqlite3_changes(db_) == 0) {
            return false;
        }
    }
    auto idx = index_of(store_id, 0);
    if (!idx) {
        return idx.err();
    }
    if (*idx) {
        auto removed = (*idx)->remove_document(file_id);
        if (!removed) {
            return removed.err();
        }
        if (auto err = (*idx)->save()) {
            spdlog::warn("vector store {}: cannot save its index ({}); the next open rebuilds it", store_id,
                         err->message);
        }
    }
    return true;
}

result<std::vector<store_hit>> vector_store_catalog::search(const std::string              &owner,
                                                            const std::vector<std::string> &store_ids,
                                                            const std::string              &query,
                                                            const std::vector<float> &query_vector, size_t k,
                                                            const store_search_options &options) {
    if (k < 1 || k > 50) {
        return error::invalid("max_num_results must be from 1 to 50, got " + std::to_string(k), "max_num_results");
    }
    if (query.empty() || query.size() > limits_.max_query_bytes) {
        return error::invalid("query must have 1 to " + std::to_string(limits_.max_query_bytes) + " bytes, got " +
                                  std::to_string(query.size()),
                              "query");
    }
    if (!(options.score_threshold >= 0 && options.score_threshold <= 1)) {
        return error::invalid("ranking_options.score_threshold must be from 0 to 1", "ranking_options.score_threshold");
    }
    sweep_expired();
    std::vector<store_hit> all;
    for (const auto &store_id : store_ids) {
        std::map<std::string, file_attributes> files;
        search_filter                          filter;
        {
            std::lock_guard lock(mu_);
            auto            store = get_locked(owner, store_id);
            if (!store) {
                return vector_store_not_found(store_id);
            }
            if (store->expired) {
                return vector_store_expired(*store);
            }
            statement touch(db_, "UPDATE stores SET last_active = ?1 WHERE id = ?2");
            touch.bind(1, unix_seconds());
            touch.bind(2, store_id);
            touch.step();
            files = file_attributes_locked(store_id, options.filter.has_value());
        }
        if (options.filter) {
            // The files that pass, before the index ranks anything: the index then finds the
            // best k among their chunks alone.
            for (const auto &[file_id, attrs] : files) {
                if (matches(*options.filter, file_id, attrs.values)) {
                    filter.document_ids.push_back(file_id);
                }
            }
            if (filter.document_ids.empty()) {
                continue;
            }
        }
        auto idx = index_of(store_id, 0);
        if (!idx) {
            return idx.err();
        }
        if (!*idx) {
            continue; // no file was ever added: nothing to find
        }
        result<std::vector<search_hit>> hits = std::vector<search_hit>{};
        if (query_vector.empty()) {
            hits = (*idx)->keyword_search(query, k, filter);
        } else if (query_vector.size() != (*idx)->dimension()) {
            return error::invalid("the query's embedding has " + std::to_string(query_vector.size()) +
                                      " dimensions, but vector store " + store_id + " holds embeddings of " +
                                      std::to_string((*idx)->dimension()) + " (made by another embedding model)",
                                  "", "embedding_dimension_mismatch");
        } else {
            hybrid_options opts;
            opts.k = k;
            hits   = (*idx)->hybrid_search(query, query_vector, opts, filter);
        }
        if (!hits) {
            return hits.err();
        }
        for (auto &h : *hits) {
            if (h.score < options.score_threshold) {
                continue;
            }
            auto        it         = files.find(h.document_id);
            std::string attributes = it != files.end() ? it->second.json : std::string("{}");
            all.push_back(
                store_hit{store_id, h.document_id, h.document_name, std::move(h.text), h.score, std::move(attributes)});
        }
    }
    // Stable: within one store the index's order (its ties already broken) stays.
    std::stable_sort(all.begin(), all.end(), [](const store_hit &a, const store_hit &b) { return a.score > b.score; });
    if (all.size() > k) {
        all.resize(k);
    }
    return all;
}

} // namespace inferbox::retrieval

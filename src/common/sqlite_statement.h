#pragma once
// A prepared SQLite statement that is finalized when it goes out of scope, the one-line `exec`
// for schema statements, and `open_store`: what the stores that keep state in SQLite (stored
// Responses, the console's conversations) share. Header-only; the including library links SQLite.

#include "common/status.h"

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>

namespace inferbox::sqlite {

class statement {
  public:
    statement(sqlite3 *db, const char *sql) : db_(db) {
        ok_ = sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) == SQLITE_OK;
    }
    ~statement() { sqlite3_finalize(st_); }
    statement(const statement &)            = delete;
    statement &operator=(const statement &) = delete;

    bool ok() const { return ok_; }
    void bind(int i, std::string_view s) {
        sqlite3_bind_text(st_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    }
    void        bind(int i, int64_t v) { sqlite3_bind_int64(st_, i, v); }
    int         step() { return sqlite3_step(st_); }
    std::string text(int col) const {
        const auto *p = sqlite3_column_text(st_, col);
        return p == nullptr ? std::string()
                            : std::string(reinterpret_cast<const char *>(p), sqlite3_column_bytes(st_, col));
    }
    int64_t     integer(int col) const { return sqlite3_column_int64(st_, col); }
    double      real(int col) const { return sqlite3_column_double(st_, col); }
    void        reset() { sqlite3_reset(st_); }
    std::string error() const { return sqlite3_errmsg(db_); }

  private:
    sqlite3      *db_;
    sqlite3_stmt *st_ = nullptr;
    bool          ok_ = false;
};

inline bool exec(sqlite3 *db, const char *sql) {
    return sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
}

// Opens a store's database at `file`, creating it and its folder: serialized connection, WAL,
// synchronous=NORMAL, a 2 s busy timeout, then each `schema` statement in order. An error names
// the store (`what`, e.g. "the response store") and the file; the caller owns the handle.
inline result<sqlite3 *> open_store(const std::filesystem::path &file, const std::string &what,
                                    std::initializer_list<const char *> schema) {
    std::error_code ec;
    std::filesystem::create_directories(file.parent_path(), ec);
    if (ec) {
        return error{error_kind::internal, "cannot create " + file.parent_path().string() + ": " + ec.message(), "",
                     ""};
    }
    sqlite3 *db = nullptr;
    if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        nullptr) != SQLITE_OK) {
        std::string why = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
        sqlite3_close(db);
        return error{error_kind::internal, "cannot open " + what + " " + file.string() + ": " + why, "", ""};
    }
    sqlite3_busy_timeout(db, 2000);
    bool ok = exec(db, "PRAGMA journal_mode=WAL") && exec(db, "PRAGMA synchronous=NORMAL");
    for (const char *sql : schema) {
        ok = ok && exec(db, sql);
    }
    if (!ok) {
        std::string why = sqlite3_errmsg(db);
        sqlite3_close(db);
        return error{error_kind::internal, "cannot set up " + what + " " + file.string() + ": " + why, "", ""};
    }
    return db;
}

} // namespace inferbox::sqlite

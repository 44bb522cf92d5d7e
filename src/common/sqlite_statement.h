#pragma once
// A prepared SQLite statement that is finalized when it goes out of scope, and the one-line
// `exec` for schema statements: what the stores that keep state in SQLite (stored Responses, the
// console's conversations) share. Header-only; the including library links SQLite.

#include <sqlite3.h>

#include <cstdint>
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

} // namespace inferbox::sqlite

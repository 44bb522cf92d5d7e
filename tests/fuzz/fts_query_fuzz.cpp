// Search text -> fts_match_expression, the builder that turns an untrusted query into SQLite FTS5
// syntax. Invariants:
//   - it fails only over its limits (bytes, distinct terms), and then says which;
//   - its expression is valid UTF-8, a run of "..." strings joined by " OR ", each string's
//     quotes doubled (so no operator, column filter, prefix or group can appear outside one);
//   - FTS5 itself accepts the expression: a MATCH over an in-memory table runs to the end
//     without an error (what a crafted query must never cause in the retrieval index).
// The first byte picks small limits half of the time, so the error paths are reached too.
// The same text also goes through rewrite_query (a search's `rewrite_query: true`), whose result
// is then searched the same way: it is never longer than the query, empty only for a blank one,
// single-spaced without spaces at its ends, and valid UTF-8 whenever the query is.

#include "common/utf8.h"
#include "fuzz_check.h"
#include "retrieval/fts_query.h"
#include "retrieval/query_rewrite.h"

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

using namespace inferbox;

namespace {

// One table for the whole run (kept open: the process ends with the fuzzer).
sqlite3 *database() {
    static sqlite3 *db = [] {
        sqlite3 *d = nullptr;
        FUZZ_CHECK(sqlite3_open(":memory:", &d) == SQLITE_OK);
        FUZZ_CHECK(sqlite3_exec(d,
                                "CREATE VIRTUAL TABLE t USING fts5(text, tokenize = 'porter unicode61 "
                                "remove_diacritics 2');"
                                "INSERT INTO t VALUES ('hello world, the quick brown fox');"
                                "INSERT INTO t VALUES ('NEAR OR AND NOT operators as words');"
                                "INSERT INTO t VALUES ('café naïve 日本語 text');",
                                nullptr, nullptr, nullptr) == SQLITE_OK);
        return d;
    }();
    return db;
}

// The expression is `"..."( OR "...")*` with every quote inside a string doubled.
bool well_formed(std::string_view e) {
    size_t i = 0;
    while (true) {
        if (i >= e.size() || e[i] != '"') {
            return false;
        }
        ++i;
        while (true) {
            if (i >= e.size()) {
                return false;
            }
            if (e[i] == '"') {
                if (i + 1 < e.size() && e[i + 1] == '"') {
                    i += 2;
                    continue;
                }
                ++i;
                break;
            }
            ++i;
        }
        if (i == e.size()) {
            return true;
        }
        if (e.substr(i, 4) != " OR ") {
            return false;
        }
        i += 4;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) {
        return 0;
    }
    retrieval::fts_query_limits limits;
    if ((data[0] & 1) != 0) {
        limits.max_bytes = 64;
        limits.max_terms = 3;
    }
    const std::string_view original(reinterpret_cast<const char *>(data + 1), size - 1);
    // Odd second bytes search the rewritten query (and check the rewrite), even ones the query.
    std::string rewritten;
    if (size > 1 && (data[1] & 1) != 0) {
        rewritten = retrieval::rewrite_query(original);
        FUZZ_CHECK(rewritten.size() <= original.size());
        const bool blank = original.find_first_not_of(" \t\n\v\f\r") == std::string_view::npos;
        FUZZ_CHECK(rewritten.empty() == blank);
        FUZZ_CHECK(rewritten.empty() || (rewritten.front() != ' ' && rewritten.back() != ' '));
        FUZZ_CHECK(rewritten.find("  ") == std::string::npos);
        FUZZ_CHECK(!utf8_valid(original) || utf8_valid(rewritten));
    }
    const std::string_view text = (size > 1 && (data[1] & 1) != 0) ? std::string_view(rewritten) : original;
    const auto             expr = retrieval::fts_match_expression(text, limits);
    if (!expr) {
        FUZZ_CHECK(text.size() > limits.max_bytes || expr.err().message.find("distinct terms") != std::string::npos);
        FUZZ_CHECK(expr.err().message.find(std::to_string(
                       text.size() > limits.max_bytes ? limits.max_bytes : limits.max_terms)) != std::string::npos);
        return 0;
    }
    FUZZ_CHECK(text.size() <= limits.max_bytes);
    if (expr->empty()) {
        return 0;
    }
    FUZZ_CHECK(utf8_valid(*expr));
    FUZZ_CHECK(well_formed(*expr));

    sqlite3_stmt *st = nullptr;
    FUZZ_CHECK(sqlite3_prepare_v2(database(), "SELECT rowid, bm25(t) FROM t WHERE t MATCH ?1 ORDER BY bm25(t)", -1, &st,
                                  nullptr) == SQLITE_OK);
    sqlite3_bind_text(st, 1, expr->data(), static_cast<int>(expr->size()), SQLITE_TRANSIENT);
    int rc = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE) {
        std::fprintf(stderr, "FTS5 rejected %s: %s\n", expr->c_str(), sqlite3_errmsg(database()));
    }
    sqlite3_finalize(st);
    FUZZ_CHECK(rc == SQLITE_DONE);
    return 0;
}

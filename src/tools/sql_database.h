#pragma once
// The `sql` built-in tool's database: a SQLite file or a PostgreSQL database the operator named
// (`--sql-database NAME=PATH|postgresql://...`), queried on behalf of a model. Read-only by
// construction, not by prompt (PostgreSQL: see tools/sql_postgres.h). SQLite:
//   - the file is opened read-only (SQLITE_OPEN_READONLY), with extension loading off and SQLite's
//     defensive mode on;
//   - one statement per call, which must begin with SELECT or WITH and which SQLite itself must
//     judge read-only (sqlite3_stmt_readonly);
//   - an authorizer allows reading tables, SELECT, recursive CTEs and ordinary functions only:
//     every write, DDL, ATTACH/DETACH, PRAGMA, transaction and load_extension() is denied;
//   - rows, output bytes and time are bounded (sql_limits); a query past its time is interrupted.
// Each call opens its own connection, so calls run in parallel on any thread.
//
// The schema (tables, columns, declared types, a few sample values) is read once at open: the
// model is shown it, and query_pattern() turns it into a regular expression for the call's
// `query` argument, so a grammar-constrained model can only write a SELECT over real tables and
// columns (the subset the pattern covers: columns or aggregates, one table, WHERE comparisons
// joined by AND/OR, ORDER BY, LIMIT).

#include "common/status.h"
#include "tools/builtin_tool.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace inferbox {

struct sql_limits {
    int32_t max_rows   = 100;               // rows returned; more are cut and the result says so
    size_t  max_bytes  = size_t{16} * 1024; // bytes of the JSON result given to the model
    int32_t timeout_ms = 2000;              // a query running longer is interrupted
};

struct sql_column {
    std::string              name;
    std::string              type;    // as declared ("" when none)
    std::vector<std::string> samples; // up to three distinct values, as text, each cut to 32 bytes
};

struct sql_table {
    std::string             name;
    std::vector<sql_column> columns;
    int64_t                 rows = 0;
};

class sql_database {
  public:
    // Opens `path` read-only and reads its schema; an error names the database and the problem.
    static result<std::shared_ptr<sql_database>> open(std::string name, std::string path, sql_limits limits = {});

    // A postgresql:// or postgres:// target is a PostgreSQL database (tools/sql_postgres.h), read
    // through the role its connection string names (never a superuser); anything else is a SQLite
    // file.
    static bool is_postgres_target(const std::string &target);

    const std::string &name() const { return name_; }
    // The target as logs may show it (a PostgreSQL password replaced).
    std::string                   display() const;
    const std::vector<sql_table> &schema() const { return schema_; }
    const sql_limits             &limits() const { return limits_; }

    // The schema as the model reads it, one table per line (built once, at open).
    const std::string &describe() const { return description_; }
    // An ECMAScript regular expression, anchored, matching the SELECTs the grammar allows (built
    // once, at open: every request offering the tool reads it).
    const std::string &query_pattern() const { return pattern_; }

    // Runs one read-only statement. The result is JSON text:
    //   {"columns":[...],"rows":[[...],...],"row_count":N,"truncated":bool}
    // A refused or failing statement is an error whose message is meant for the model (and the
    // client): what was refused and why, or SQLite's own message.
    result<std::string> run(const std::string &sql) const;

  private:
    sql_database(std::string name, std::string path, sql_limits limits)
        : name_(std::move(name)), path_(std::move(path)), limits_(limits) {}

    std::string            name_, path_;
    bool                   postgres_ = false;
    sql_limits             limits_;
    std::vector<sql_table> schema_;
    std::string            description_, pattern_; // derived from schema_ by derive(), at open

    void        derive();
    std::string build_description() const;
    std::string build_pattern() const;
};

// The database as a built-in tool: the function `function_name` ("sql", or "sql_NAME" among
// several), described by the schema, its one `query` argument held to query_pattern(); a call's
// output is run()'s JSON, its error run()'s message.
std::shared_ptr<builtin_tool> make_sql_tool(std::shared_ptr<sql_database> db, std::string function_name);

// Parses `NAME=PATH` (--sql-database). NAME: letters, digits, '_' and '-', at most 64.
struct sql_database_spec {
    std::string name, path;
};
result<sql_database_spec> parse_sql_database_spec(const std::string &text);

} // namespace inferbox

#include "tools/sql_database.h"

#include "tools/sql_postgres.h"

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>

namespace inferbox {

namespace {

using json = nlohmann::json;

struct db_closer {
    void operator()(sqlite3 *db) const { sqlite3_close_v2(db); }
};
struct stmt_finalizer {
    void operator()(sqlite3_stmt *s) const { sqlite3_finalize(s); }
};
using db_ptr   = std::unique_ptr<sqlite3, db_closer>;
using stmt_ptr = std::unique_ptr<sqlite3_stmt, stmt_finalizer>;

error db_error(const std::string &what) {
    return error{error_kind::invalid_request, what, "", "sql_error"};
}

result<db_ptr> open_read_only(const std::string &path) {
    sqlite3  *raw = nullptr;
    const int rc  = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    db_ptr    db(raw);
    if (rc != SQLITE_OK) {
        return error{error_kind::unavailable, std::string("cannot open it read-only: ") +
                                                  (raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc))};
    }
    sqlite3_db_config(raw, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
    sqlite3_db_config(raw, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
    sqlite3_db_config(raw, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
    sqlite3_limit(raw, SQLITE_LIMIT_ATTACHED, 0);
    sqlite3_limit(raw, SQLITE_LIMIT_SQL_LENGTH, 64 * 1024);
    sqlite3_limit(raw, SQLITE_LIMIT_LENGTH, 1 << 20);
    return db;
}

// Reading and selecting, recursive CTEs and functions other than load_extension; nothing else.
int authorize(void * /*user*/, int action, const char *a, const char *b, const char * /*db*/, const char * /*view*/) {
    switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_RECURSIVE:
        return SQLITE_OK;
    case SQLITE_FUNCTION: {
        const char *fn = b != nullptr ? b : a;
        return fn != nullptr && strcasecmp(fn, "load_extension") == 0 ? SQLITE_DENY : SQLITE_OK;
    }
    default:
        return SQLITE_DENY;
    }
}

// The statement's first keyword, past blanks and comments, upper-cased.
std::string first_keyword(const std::string &sql) {
    size_t i = 0;
    for (;;) {
        while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i])) != 0) {
            ++i;
        }
        if (sql.compare(i, 2, "--") == 0) {
            i = sql.find('\n', i);
            i = i == std::string::npos ? sql.size() : i;
        } else if (sql.compare(i, 2, "/*") == 0) {
            i = sql.find("*/", i + 2);
            i = i == std::string::npos ? sql.size() : i + 2;
        } else {
            break;
        }
    }
    std::string word;
    while (i < sql.size() && std::isalpha(static_cast<unsigned char>(sql[i])) != 0 && word.size() < 16) {
        word += static_cast<char>(std::toupper(static_cast<unsigned char>(sql[i++])));
    }
    return word;
}

json column_value(sqlite3_stmt *s, int col) {
    switch (sqlite3_column_type(s, col)) {
    case SQLITE_INTEGER:
        return sqlite3_column_int64(s, col);
    case SQLITE_FLOAT:
        return sqlite3_column_double(s, col);
    case SQLITE_NULL:
        return nullptr;
    case SQLITE_BLOB:
        return "<blob of " + std::to_string(sqlite3_column_bytes(s, col)) + " bytes>";
    default: {
        const auto *text = reinterpret_cast<const char *>(sqlite3_column_text(s, col));
        // Invalid UTF-8 is replaced when the result is written (error_handler_t::replace).
        return std::string(text != nullptr ? text : "", static_cast<size_t>(sqlite3_column_bytes(s, col)));
    }
    }
}

bool plain_identifier(const std::string &s) {
    return !s.empty() && s.size() <= 64 && (std::isalpha(static_cast<unsigned char>(s[0])) != 0 || s[0] == '_') &&
           std::all_of(s.begin(), s.end(),
                       [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; });
}

enum class column_kind { number, text, other };

// A declared type as SQLite's affinity rules read it (which PostgreSQL's type names also fit):
// INT, REAL, FLOA, DOUB, NUMERIC, DECIMAL are numbers; CHAR, CLOB, TEXT are text.
column_kind column_kind_of(std::string type) {
    for (auto &ch : type) {
        ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    }
    const auto has = [&](const char *w) { return type.find(w) != std::string::npos; };
    if (has("INT") || has("REAL") || has("FLOA") || has("DOUB") || has("NUMERIC") || has("DECIMAL")) {
        return column_kind::number;
    }
    if (has("CHAR") || has("CLOB") || has("TEXT")) {
        return column_kind::text;
    }
    return column_kind::other;
}

std::string alternation(const std::vector<std::string> &words) {
    std::string out = "(";
    for (size_t i = 0; i < words.size(); ++i) {
        out += (i > 0 ? "|" : "") + words[i];
    }
    return out + ")";
}

} // namespace

bool sql_database::is_postgres_target(const std::string &target) {
    return target.rfind("postgresql://", 0) == 0 || target.rfind("postgres://", 0) == 0;
}

std::string sql_database::display() const {
    return postgres_ ? pg::redact(path_) : path_;
}

result<std::shared_ptr<sql_database>> sql_database::open(std::string name, std::string path, sql_limits limits) {
    if (is_postgres_target(path)) {
        std::shared_ptr<sql_database> out(new sql_database(std::move(name), std::move(path), limits));
        out->postgres_ = true;
        auto schema    = pg::read_schema(out->path_);
        if (!schema) {
            return error{error_kind::unavailable,
                         "SQL database '" + out->name_ + "' (" + out->display() + "): " + schema.err().message};
        }
        if (schema->empty()) {
            return error{error_kind::unavailable,
                         "SQL database '" + out->name_ + "' (" + out->display() + "): its role can read no tables"};
        }
        out->schema_ = std::move(*schema);
        out->derive();
        return out;
    }
    auto db = open_read_only(path);
    if (!db) {
        return error{error_kind::unavailable, "SQL database '" + name + "' (" + path + "): " + db.err().message};
    }
    std::shared_ptr<sql_database> out(new sql_database(std::move(name), std::move(path), limits));
    const auto                    fail = [&](const std::string &what) {
        return error{error_kind::unavailable, "SQL database '" + out->name_ + "' (" + out->path_ + "): " + what};
    };
    sqlite3_stmt *raw = nullptr;
    if (sqlite3_prepare_v2(db->get(),
                           "SELECT name FROM sqlite_schema WHERE type IN ('table','view') AND name NOT LIKE 'sqlite_%' "
                           "ORDER BY name",
                           -1, &raw, nullptr) != SQLITE_OK) {
        return fail(std::string("not a readable SQLite database: ") + sqlite3_errmsg(db->get()));
    }
    stmt_ptr tables(raw);
    while (sqlite3_step(tables.get()) == SQLITE_ROW && out->schema_.size() < 256) {
        sql_table t;
        t.name = reinterpret_cast<const char *>(sqlite3_column_text(tables.get(), 0));
        out->schema_.push_back(std::move(t));
    }
    for (auto &t : out->schema_) {
        if (sqlite3_prepare_v2(db->get(), "SELECT name, type FROM pragma_table_info(?1)", -1, &raw, nullptr) !=
            SQLITE_OK) {
            return fail(sqlite3_errmsg(db->get()));
        }
        stmt_ptr cols(raw);
        sqlite3_bind_text(cols.get(), 1, t.name.c_str(), -1, SQLITE_TRANSIENT);
        while (sqlite3_step(cols.get()) == SQLITE_ROW && t.columns.size() < 256) {
            sql_column c;
            c.name           = reinterpret_cast<const char *>(sqlite3_column_text(cols.get(), 0));
            const auto *type = reinterpret_cast<const char *>(sqlite3_column_text(cols.get(), 1));
            c.type           = type != nullptr ? type : "";
            t.columns.push_back(std::move(c));
        }
        if (!plain_identifier(t.name)) {
            continue; // described, but neither counted nor sampled through generated SQL
        }
        if (sqlite3_prepare_v2(db->get(), ("SELECT count(*) FROM \"" + t.name + "\"").c_str(), -1, &raw, nullptr) ==
            SQLITE_OK) {
            stmt_ptr count(raw);
            if (sqlite3_step(count.get()) == SQLITE_ROW) {
                t.rows = sqlite3_column_int64(count.get(), 0);
            }
        }
        for (auto &c : t.columns) {
            if (!plain_identifier(c.name)) {
                continue;
            }
            const std::string q = "SELECT DISTINCT \"" + c.name + "\" FROM \"" + t.name + "\" WHERE \"" + c.name +
                                  "\" IS NOT NULL LIMIT 3";
            if (sqlite3_prepare_v2(db->get(), q.c_str(), -1, &raw, nullptr) != SQLITE_OK) {
                continue;
            }
            stmt_ptr sample(raw);
            while (sqlite3_step(sample.get()) == SQLITE_ROW) {
                const auto *v = reinterpret_cast<const char *>(sqlite3_column_text(sample.get(), 0));
                std::string s = v != nullptr ? v : "";
                c.samples.push_back(s.substr(0, 32));
            }
        }
    }
    if (out->schema_.empty()) {
        return fail("it has no tables");
    }
    out->derive();
    return out;
}

void sql_database::derive() {
    description_ = build_description();
    pattern_     = build_pattern();
}

std::string sql_database::build_description() const {
    std::string out;
    for (const auto &t : schema_) {
        out += t.name + "(";
        for (size_t i = 0; i < t.columns.size(); ++i) {
            const auto &c = t.columns[i];
            out += (i > 0 ? ", " : "") + c.name + (c.type.empty() ? "" : " " + c.type);
            if (!c.samples.empty()) {
                out += " e.g. ";
                for (size_t k = 0; k < c.samples.size(); ++k) {
                    out += (k > 0 ? "|" : "") + c.samples[k];
                }
            }
        }
        out += ") " + std::to_string(t.rows) + " rows\n";
    }
    return out;
}

std::string sql_database::build_pattern() const {
    // No double quotes or backslashes anywhere: the query travels inside a JSON string. Each
    // column is compared only in ways its type takes in both dialects (PostgreSQL has no LIKE on
    // numbers and no AVG of text): numbers with numbers, text with strings (LIKE too), columns of
    // other types by equality with either.
    const std::string text_literal = "'[^'\"\\\\]{0,32}'";
    const std::string number       = "-?[0-9]{1,12}(\\.[0-9]{1,6})?";
    std::string       tables;
    for (const auto &t : schema_) {
        std::vector<std::string> cols, numeric, text, other;
        for (const auto &c : t.columns) {
            if (!plain_identifier(c.name)) {
                continue;
            }
            cols.push_back(c.name);
            switch (column_kind_of(c.type)) {
            case column_kind::number:
                numeric.push_back(c.name);
                break;
            case column_kind::text:
                text.push_back(c.name);
                break;
            case column_kind::other:
                other.push_back(c.name);
                break;
            }
        }
        if (!plain_identifier(t.name) || cols.empty()) {
            continue;
        }
        const std::string        col = alternation(cols);
        std::vector<std::string> conds, aggregates = {"(COUNT|MIN|MAX)\\(" + col + "\\)", "COUNT\\(\\*\\)"};
        if (!numeric.empty()) {
            conds.push_back(alternation(numeric) + " ?(=|!=|<|>|<=|>=) ?" + number);
            aggregates.push_back("(SUM|AVG)\\(" + alternation(numeric) + "\\)");
        }
        if (!text.empty()) {
            conds.push_back(alternation(text) + " ?(=|!=|<|>|<=|>=| LIKE ) ?" + text_literal);
        }
        if (!other.empty()) {
            conds.push_back(alternation(other) + " ?(=|!=) ?(" + text_literal + "|" + number + ")");
        }
        const std::string item = "(" + col + "|" + alternation(aggregates) + ")";
        const std::string cond = alternation(conds);
        tables += std::string(tables.empty() ? "" : "|") + "(SELECT (\\*|" + item + "(, " + item + "){0,5}) FROM " +
                  t.name + "( WHERE " + cond + "( (AND|OR) " + cond + "){0,2})?( GROUP BY " + col + ")?( ORDER BY " +
                  col + "( ASC| DESC)?)?)";
    }
    return "^(" + tables + ")( LIMIT [0-9]{1,4})?;?$";
}

result<std::string> sql_database::run(const std::string &sql) const {
    const std::string keyword = first_keyword(sql);
    if (keyword != "SELECT" && keyword != "WITH") {
        return db_error("only a SELECT (or WITH ... SELECT) statement may run; this one begins with '" +
                        (keyword.empty() ? std::string("?") : keyword) + "'");
    }
    if (postgres_) {
        return pg::run(path_, sql, limits_);
    }
    auto db = open_read_only(path_);
    if (!db) {
        return db_error("database '" + name_ + "' is not available: " + db.err().message);
    }
    sqlite3_set_authorizer(db->get(), authorize, nullptr);
    using clock          = std::chrono::steady_clock;
    const auto deadline  = clock::now() + std::chrono::milliseconds(limits_.timeout_ms);
    auto       past_time = [](void *d) -> int { return clock::now() > *static_cast<clock::time_point *>(d) ? 1 : 0; };
    auto       dl        = deadline;
    sqlite3_progress_handler(db->get(), 1000, past_time, &dl);

    sqlite3_stmt *raw  = nullptr;
    const char   *tail = nullptr;
    if (sqlite3_prepare_v2(db->get(), sql.c_str(), static_cast<int>(sql.size()), &raw, &tail) != SQLITE_OK) {
        const std::string why = sqlite3_errmsg(db->get());
        return db_error(why == "not authorized" ? "the statement reads or does something this read-only tool refuses"
                                                : "the statement does not compile: " + why);
    }
    stmt_ptr stmt(raw);
    if (stmt == nullptr) {
        return db_error("the statement is empty");
    }
    if (tail != nullptr && std::string(tail).find_first_not_of(" \t\r\n;") != std::string::npos) {
        return db_error("one statement per call: text follows the first statement");
    }
    if (sqlite3_stmt_readonly(stmt.get()) == 0) {
        return db_error("the statement would change the database; this tool only reads");
    }
    json cols = json::array();
    for (int i = 0; i < sqlite3_column_count(stmt.get()); ++i) {
        const char *n = sqlite3_column_name(stmt.get(), i);
        cols.push_back(n != nullptr ? n : "");
    }
    json   rows      = json::array();
    bool   truncated = false;
    size_t bytes     = cols.dump().size() + 64;
    int    rc        = SQLITE_ROW;
    while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
        if (static_cast<int32_t>(rows.size()) >= limits_.max_rows) {
            truncated = true;
            break;
        }
        json row = json::array();
        for (int i = 0; i < sqlite3_column_count(stmt.get()); ++i) {
            row.push_back(column_value(stmt.get(), i));
        }
        const size_t row_bytes = row.dump(-1, ' ', false, json::error_handler_t::replace).size() + 1;
        if (bytes + row_bytes > limits_.max_bytes) {
            truncated = true;
            break;
        }
        bytes += row_bytes;
        rows.push_back(std::move(row));
    }
    if (rc == SQLITE_INTERRUPT) {
        return db_error("the query ran past its time limit of " + std::to_string(limits_.timeout_ms) + " ms");
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return db_error(std::string("the query failed: ") + sqlite3_errmsg(db->get()));
    }
    json out         = {{"columns", std::move(cols)}, {"rows", std::move(rows)}, {"truncated", truncated}};
    out["row_count"] = out["rows"].size();
    return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

class sql_tool final : public builtin_tool {
  public:
    sql_tool(std::shared_ptr<sql_database> db, std::string name) : db_(std::move(db)), name_(std::move(name)) {}

    tool_function function() const override {
        const json params = {
            {"type", "object"},
            {"properties",
             {{"query",
               {{"type", "string"},
                {"description", "one SELECT statement over the tables listed"},
                {"pattern", db_->query_pattern()}}}}},
            {"required", {"query"}},
            {"additionalProperties", false},
        };
        return {name_,
                "Runs one read-only SQL SELECT on the database '" + db_->name() +
                    "' and returns its columns and rows as JSON. Tables, as name(column type e.g. samples) and "
                    "row count:\n" +
                    db_->describe(),
                params.dump()};
    }
    std::string kind() const override { return "sql"; }
    std::string server() const override { return db_->name(); }
    std::string item_type() const override { return "sql_call"; }

    tool_outcome run(const std::string &arguments_json) const override {
        const json args = json::parse(arguments_json, nullptr, /*allow_exceptions=*/false);
        if (!args.is_object() || !args.contains("query") || !args["query"].is_string()) {
            return {"", "the arguments must be {\"query\": \"SELECT ...\"}"};
        }
        auto r = db_->run(args["query"].get<std::string>());
        return r ? tool_outcome{std::move(*r), ""} : tool_outcome{"", r.err().message};
    }

  private:
    std::shared_ptr<sql_database> db_;
    std::string                   name_;
};

} // namespace

std::shared_ptr<builtin_tool> make_sql_tool(std::shared_ptr<sql_database> db, std::string function_name) {
    return std::make_shared<sql_tool>(std::move(db), std::move(function_name));
}

result<sql_database_spec> parse_sql_database_spec(const std::string &text) {
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
        return error::invalid("expected NAME=PATH, got '" + text.substr(0, 128) + "'");
    }
    sql_database_spec s{text.substr(0, eq), text.substr(eq + 1)};
    if (s.name.size() > 64 || !std::all_of(s.name.begin(), s.name.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
        })) {
        return error::invalid("database name '" + s.name.substr(0, 64) +
                              "': use letters, digits, '_' and '-' (at most 64)");
    }
    return s;
}

} // namespace inferbox

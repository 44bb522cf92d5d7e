#include "tools/sql_postgres.h"

#include <libpq-fe.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <memory>
#include <regex>

namespace inferbox::pg {

namespace {

using json = nlohmann::json;

struct conn_closer {
    void operator()(PGconn *c) const { PQfinish(c); }
};
struct result_clearer {
    void operator()(PGresult *r) const { PQclear(r); }
};
using conn_ptr   = std::unique_ptr<PGconn, conn_closer>;
using result_ptr = std::unique_ptr<PGresult, result_clearer>;

error sql_error(const std::string &what) {
    return error{error_kind::invalid_request, what, "", "sql_error"};
}

std::string trimmed(const char *message) {
    std::string m = message != nullptr ? message : "";
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) {
        m.pop_back();
    }
    return m;
}

result<conn_ptr> connect(const std::string &conninfo) {
    // dbname is expanded as the whole connection string or URI; connect_timeout bounds the wait.
    const char *keys[]   = {"dbname", "connect_timeout", "application_name", nullptr};
    const char *values[] = {conninfo.c_str(), "5", "inferbox-sql-tool", nullptr};
    conn_ptr    c(PQconnectdbParams(keys, values, 1));
    if (!c || PQstatus(c.get()) != CONNECTION_OK) {
        return error{error_kind::unavailable,
                     "cannot connect: " + trimmed(c ? PQerrorMessage(c.get()) : "out of memory"), "", "sql_error"};
    }
    return c;
}

result_ptr exec(PGconn *c, const std::string &sql) {
    return result_ptr(PQexec(c, sql.c_str()));
}

bool ok(const result_ptr &r) {
    return r && (PQresultStatus(r.get()) == PGRES_COMMAND_OK || PQresultStatus(r.get()) == PGRES_TUPLES_OK);
}

// One text value, typed by its column's type OID (pg_type.h's numbers, stable across versions).
json value_of(const PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col) != 0) {
        return nullptr;
    }
    const char *v = PQgetvalue(r, row, col);
    switch (PQftype(r, col)) {
    case 16: // bool
        return v[0] == 't';
    case 20: // int8
    case 21: // int2
    case 23: // int4
        return std::strtoll(v, nullptr, 10);
    case 700:  // float4
    case 701:  // float8
    case 1700: // numeric
        return std::strtod(v, nullptr);
    default:
        return std::string(v);
    }
}

std::string quoted(PGconn *c, const std::string &name) {
    char *q = PQescapeIdentifier(c, name.c_str(), name.size());
    if (q == nullptr) {
        return "\"\"";
    }
    std::string out = q;
    PQfreemem(q);
    return out;
}

} // namespace

std::string redact(const std::string &conninfo) {
    static const std::regex uri_password(R"(^(postgres(ql)?://[^:/@]*):[^@]*@)");
    static const std::regex kv_password(R"((^|\s)password\s*=\s*('[^']*'|\S+))");
    auto                    out = std::regex_replace(conninfo, uri_password, "$1:***@");
    return std::regex_replace(out, kv_password, "$1password=***");
}

result<std::vector<sql_table>> read_schema(const std::string &conninfo) {
    auto c = connect(conninfo);
    if (!c) {
        return c.err();
    }
    PGconn *db    = c->get();
    auto    super = exec(db, "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user");
    if (!ok(super) || PQntuples(super.get()) != 1) {
        return error{error_kind::unavailable, "cannot read the role: " + trimmed(PQerrorMessage(db)), "", ""};
    }
    if (PQgetvalue(super.get(), 0, 1)[0] == 't') {
        return error{error_kind::unavailable,
                     std::string("it connects as role '") + PQgetvalue(super.get(), 0, 0) +
                         "', a superuser: name a role that can only read the tables the model may see",
                     "", ""};
    }
    if (!ok(exec(db, "BEGIN READ ONLY"))) {
        return error{error_kind::unavailable, "cannot begin a read-only transaction: " + trimmed(PQerrorMessage(db)),
                     "", ""};
    }
    auto tables = exec(db, "SELECT table_schema, table_name FROM information_schema.tables "
                           "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
                           "AND table_type IN ('BASE TABLE', 'VIEW') ORDER BY 1, 2 LIMIT 256");
    if (!ok(tables)) {
        return error{error_kind::unavailable, "cannot list the tables: " + trimmed(PQerrorMessage(db)), "", ""};
    }
    std::vector<sql_table> out;
    for (int i = 0; i < PQntuples(tables.get()); ++i) {
        const std::string schema = PQgetvalue(tables.get(), i, 0);
        const std::string table  = PQgetvalue(tables.get(), i, 1);
        sql_table         t;
        t.name                    = schema == "public" ? table : schema + "." + table;
        const std::string from    = quoted(db, schema) + "." + quoted(db, table);
        const char       *args[2] = {schema.c_str(), table.c_str()};
        result_ptr        cols(PQexecParams(db,
                                            "SELECT column_name, data_type FROM information_schema.columns "
                                                   "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position LIMIT 256",
                                            2, nullptr, args, nullptr, nullptr, 0));
        if (!ok(cols)) {
            continue;
        }
        for (int k = 0; k < PQntuples(cols.get()); ++k) {
            sql_column col;
            col.name = PQgetvalue(cols.get(), k, 0);
            col.type = PQgetvalue(cols.get(), k, 1);
            exec(db, "SAVEPOINT s");
            auto sample = exec(db, "SELECT DISTINCT " + quoted(db, col.name) + "::text FROM " + from + " WHERE " +
                                       quoted(db, col.name) + " IS NOT NULL LIMIT 3");
            if (ok(sample)) {
                for (int r = 0; r < PQntuples(sample.get()); ++r) {
                    col.samples.push_back(std::string(PQgetvalue(sample.get(), r, 0)).substr(0, 32));
                }
            }
            exec(db, "ROLLBACK TO SAVEPOINT s");
            t.columns.push_back(std::move(col));
        }
        exec(db, "SAVEPOINT s");
        auto count = exec(db, "SELECT count(*) FROM " + from);
        if (ok(count) && PQntuples(count.get()) == 1) {
            t.rows = std::strtoll(PQgetvalue(count.get(), 0, 0), nullptr, 10);
        }
        exec(db, "ROLLBACK TO SAVEPOINT s");
        out.push_back(std::move(t));
    }
    exec(db, "ROLLBACK");
    return out;
}

result<std::string> run(const std::string &conninfo, const std::string &sql, const sql_limits &limits) {
    auto c = connect(conninfo);
    if (!c) {
        return sql_error("the database is not available: " + c.err().message);
    }
    PGconn *db = c->get();
    if (!ok(exec(db, "BEGIN READ ONLY")) ||
        !ok(exec(db, "SET LOCAL statement_timeout = " + std::to_string(limits.timeout_ms)))) {
        return sql_error("cannot begin a read-only transaction: " + trimmed(PQerrorMessage(db)));
    }
    // The extended protocol: one statement only, no parameters.
    if (PQsendQueryParams(db, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) == 0) {
        return sql_error("the statement could not be sent: " + trimmed(PQerrorMessage(db)));
    }
    PQsetSingleRowMode(db);
    json        cols = json::array(), rows = json::array();
    bool        truncated = false, cancelled = false;
    size_t      bytes = 64;
    std::string failure, sqlstate;
    for (result_ptr r(PQgetResult(db)); r; r.reset(PQgetResult(db))) {
        const auto status = PQresultStatus(r.get());
        if (status == PGRES_SINGLE_TUPLE || status == PGRES_TUPLES_OK) {
            if (cols.empty()) {
                for (int i = 0; i < PQnfields(r.get()); ++i) {
                    cols.push_back(PQfname(r.get(), i));
                }
                bytes += cols.dump().size();
            }
            if (status == PGRES_TUPLES_OK || cancelled) {
                continue;
            }
            json row = json::array();
            for (int i = 0; i < PQnfields(r.get()); ++i) {
                row.push_back(value_of(r.get(), 0, i));
            }
            const size_t row_bytes = row.dump(-1, ' ', false, json::error_handler_t::replace).size() + 1;
            if (static_cast<int32_t>(rows.size()) >= limits.max_rows || bytes + row_bytes > limits.max_bytes) {
                truncated = cancelled = true; // enough: stop the server producing the rest
                if (PGcancel *cancel = PQgetCancel(db)) {
                    char why[256];
                    PQcancel(cancel, why, sizeof why);
                    PQfreeCancel(cancel);
                }
                continue;
            }
            bytes += row_bytes;
            rows.push_back(std::move(row));
        } else if (status != PGRES_COMMAND_OK && failure.empty()) {
            failure           = trimmed(PQresultErrorMessage(r.get()));
            const char *state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
            sqlstate          = state != nullptr ? state : "";
        }
    }
    exec(db, "ROLLBACK");
    if (!failure.empty() && !(cancelled && sqlstate == "57014")) {
        if (sqlstate == "57014") {
            return sql_error("the query ran past its time limit of " + std::to_string(limits.timeout_ms) + " ms");
        }
        if (sqlstate == "25006") {
            return sql_error("the statement would change the database; this tool only reads (" + failure + ")");
        }
        return sql_error("the query failed: " + failure);
    }
    json out         = {{"columns", std::move(cols)}, {"rows", std::move(rows)}, {"truncated", truncated}};
    out["row_count"] = out["rows"].size();
    return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

} // namespace inferbox::pg

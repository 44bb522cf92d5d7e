#pragma once
// The PostgreSQL side of the `sql` tool (tools/sql_database.h chooses it for a postgresql:// or
// postgres:// target). Read-only by construction:
//   - the role the connection string names must not be a superuser (checked at open, so that no
//     function with side effects a superuser may call is within reach);
//   - every statement runs inside BEGIN READ ONLY with SET LOCAL statement_timeout, and is rolled
//     back;
//   - the extended query protocol runs exactly one statement (a second one is an error), which
//     must begin with SELECT or WITH (sql_database::run checks before it gets here);
//   - rows arrive one at a time (single-row mode) and are cut at the row and byte limits, the
//     rest of the query cancelled.
// Each call opens its own connection.

#include "common/status.h"
#include "tools/sql_database.h"

#include <string>
#include <vector>

namespace inferbox::pg {

// The schema the role can read (tables and views outside pg_catalog and information_schema,
// public ones unqualified), or why it cannot be used.
result<std::vector<sql_table>> read_schema(const std::string &conninfo);

// One statement, read-only, as sql_database::run's JSON.
result<std::string> run(const std::string &conninfo, const std::string &sql, const sql_limits &limits);

// The target as logs and errors may show it: the password, if the URI holds one, replaced.
std::string redact(const std::string &conninfo);

} // namespace inferbox::pg

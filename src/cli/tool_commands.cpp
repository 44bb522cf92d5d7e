#include "cli/tool_commands.h"

#include "tools/sql_database.h"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <memory>
#include <string>

namespace inferbox {

namespace {

struct sql_options {
    std::string spec, query;
};

int run_sql(const sql_options &o) {
    auto spec = parse_sql_database_spec(o.spec);
    if (!spec) {
        spdlog::error("{}", spec.err().message);
        return 1;
    }
    auto db = sql_database::open(spec->name, spec->path);
    if (!db) {
        spdlog::error("{}", db.err().message);
        return 1;
    }
    if (o.query.empty()) {
        std::printf("%s\npattern: %s\n", (*db)->describe().c_str(), (*db)->query_pattern().c_str());
        return 0;
    }
    auto r = (*db)->run(o.query);
    if (!r) {
        spdlog::error("{}", r.err().message);
        return 1;
    }
    std::printf("%s\n", r->c_str());
    return 0;
}

} // namespace

void add_tool_commands(CLI::App &app, std::function<int()> &action) {
    auto o   = std::make_shared<sql_options>();
    auto cmd = app.add_subcommand("sql", "show what the sql tool gives a model, or run one query as it would");
    cmd->add_option("database", o->spec, "NAME=FILE or NAME=postgresql://... (as --sql-database takes it)")->required();
    cmd->add_option("query", o->query, "run this one statement read-only, as the tool would");
    cmd->callback([&action, o] { action = [o] { return run_sql(*o); }; });
}

} // namespace inferbox

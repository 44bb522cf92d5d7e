#pragma once
// `inferbox sql NAME=TARGET [QUERY]`: what the `sql` tool gives a model, for an operator checking
// a --sql-database before serving it. Without QUERY it prints the schema as the model reads it and
// the pattern the grammar holds queries to; with QUERY it runs it exactly as the tool does
// (read-only, the same limits) and prints the JSON the model would get. Exit 1 with the reason
// when the database cannot be used or the query is refused.

#include <functional>

namespace CLI { // NOLINT(readability-identifier-naming): CLI11's namespace
class App;
}

namespace inferbox {

// Adds `sql` to `app`; when app.parse() picks it, `action` is set to run it.
void add_tool_commands(CLI::App &app, std::function<int()> &action);

} // namespace inferbox

#pragma once
// `inferbox import | models | show | rm`: the model store on the command line. The store lives
// at $INFERBOX_CACHE (default ~/.cache/inferbox); see store/store.h for its layout.
//
// Output: results on stdout (a table or text, or JSON with --json); an error is one line on
// stderr and exit code 1.

#include <functional>

namespace CLI { // NOLINT(readability-identifier-naming): CLI11's namespace
class App;
}

namespace inferbox {

// Adds the store subcommands to `app`. When app.parse() picks one of them, `action` is set to
// run it; calling `action` runs the command and returns the process exit code. `action` must
// outlive app.parse().
void add_store_commands(CLI::App &app, std::function<int()> &action);

} // namespace inferbox

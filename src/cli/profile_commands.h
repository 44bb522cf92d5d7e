#pragma once
// `inferbox profiles | hardware`: the serving profiles for a model on this machine and the
// hardware they are computed from (store/profiles.h, store/hardware.h).
//
// Output: results on stdout (a table or text, or JSON with --json); an error is one line on
// stderr and exit code 1. A model that fits nowhere is a listing, not an error (exit 0).

#include "server/profile_json.h"

#include <functional>

namespace CLI { // NOLINT(readability-identifier-naming): CLI11's namespace
class App;
}

namespace inferbox {

// Adds the subcommands to `app`. When app.parse() picks one of them, `action` is set to run it;
// calling `action` runs the command and returns the process exit code. `action` must outlive
// app.parse().
void add_profile_commands(CLI::App &app, std::function<int()> &action);

} // namespace inferbox

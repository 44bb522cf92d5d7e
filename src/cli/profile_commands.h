#pragma once
// `inferbox profiles | hardware`: the serving profiles for a model on this machine and the
// hardware they are computed from (store/profiles.h, store/hardware.h).
//
// Output: results on stdout (a table or text, or JSON with --json); an error is one line on
// stderr and exit code 1. A model that fits nowhere is a listing, not an error (exit 0).

#include "engine/engine.h"
#include "store/profiles.h"

#include <nlohmann/json_fwd.hpp>

#include <functional>

namespace CLI { // NOLINT(readability-identifier-naming): CLI11's namespace
class App;
}

namespace inferbox {

// Adds the subcommands to `app`. When app.parse() picks one of them, `action` is set to run it;
// calling `action` runs the command and returns the process exit code. `action` must outlive
// app.parse().
void add_profile_commands(CLI::App &app, std::function<int()> &action);

// The JSON shapes `profiles --json` prints, shared with serve's /v1/metadata and /v1/manifest.
nlohmann::json profile_to_json(const model_profile &p);
nlohmann::json settings_to_json(const profile_settings &s);
nlohmann::json memory_to_json(const memory_estimate &m);
// What `inferbox hardware --json` prints; also the console dashboard's hardware panel.
nlohmann::json hardware_json(const hardware_info &hw);

// Between the engine's and the estimator's names for a KV type (`automatic` reads as f16).
kv_cache_type to_cache_type(kv_precision p);
kv_precision  to_precision(kv_cache_type t);

} // namespace inferbox

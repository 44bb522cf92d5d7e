#pragma once

// The JSON views of the hardware and of serving profiles: what `inferbox profiles --json` and
// `inferbox hardware --json` print, and what serve publishes on /v1/metadata, /v1/manifest and the
// console's dashboard.

#include "engine/engine.h"
#include "store/hardware.h"
#include "store/latency_targets.h"
#include "store/profiles.h"

#include <nlohmann/json_fwd.hpp>

namespace inferbox {

nlohmann::json profile_to_json(const model_profile &p);
nlohmann::json settings_to_json(const profile_settings &s);
nlohmann::json memory_to_json(const memory_estimate &m);
nlohmann::json hardware_json(const hardware_info &hw);
// A profile's default latency targets: {"ttft_ms", "itl_ms" (null: none), "basis" ("measured",
// "fallback", null), "note", and the prediction they come from}.
nlohmann::json latency_defaults_json(const latency_defaults &d);
// The targets serve runs with: {"ttft_ms", "itl_ms" (null: none), "ttft_source", "itl_source"
// ("flag", "profile", "none"), "profile_defaults": latency_defaults_json}.
nlohmann::json latency_targets_json(const settled_targets &t);

} // namespace inferbox

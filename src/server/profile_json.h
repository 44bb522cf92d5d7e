#pragma once

// The JSON views of the hardware and of serving profiles: what `inferbox profiles --json` and
// `inferbox hardware --json` print, and what serve publishes on /v1/metadata, /v1/manifest and the
// console's dashboard.

#include "engine/engine.h"
#include "store/hardware.h"
#include "store/profiles.h"

#include <nlohmann/json_fwd.hpp>

namespace inferbox {

nlohmann::json profile_to_json(const model_profile &p);
nlohmann::json settings_to_json(const profile_settings &s);
nlohmann::json memory_to_json(const memory_estimate &m);
nlohmann::json hardware_json(const hardware_info &hw);

} // namespace inferbox

#pragma once

// The JSON views of the hardware and of serving profiles: what `inferbox profiles --json` and
// `inferbox hardware --json` print, and what serve publishes on /v1/metadata, /v1/manifest and the
// console's dashboard. Also the two names of a KV cache type (the engine's and the estimator's).

#include "engine/engine.h"
#include "store/hardware.h"
#include "store/profiles.h"

#include <nlohmann/json_fwd.hpp>

namespace inferbox {

nlohmann::json profile_to_json(const model_profile &p);
nlohmann::json settings_to_json(const profile_settings &s);
nlohmann::json memory_to_json(const memory_estimate &m);
nlohmann::json hardware_json(const hardware_info &hw);

// Between the engine's and the estimator's names for a KV type (`automatic` reads as f16).
kv_cache_type to_cache_type(kv_precision p);
kv_precision  to_precision(kv_cache_type t);

} // namespace inferbox

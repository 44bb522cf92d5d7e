#pragma once

// What `inferbox serve` settles before it loads anything: the checked flags (check_serve_options),
// each model's profile and engine settings (choose_profile, plan_models). No I/O but reading the
// API-key file and the model files' headers, no threads, no llama.cpp calls: unit-tested with
// synthetic model headers and hardware (tests/unit/serve_plan_test.cpp).

#include "agent/team.h"
#include "api/routes.h"
#include "common/status.h"
#include "engine/rpc.h"
#include "model/model.h"
#include "server/serve_options.h"
#include "store/gguf.h"
#include "store/hardware.h"
#include "tools/mcp_client.h"
#include "tools/sql_database.h"

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace inferbox {

class registry;

// What the flags settle before any model is resolved, pulled or loaded. Each check needs no file
// but the API-key file, so a mistyped flag fails at once rather than after a download.
struct serve_settings {
    std::optional<uint64_t>        budget_bytes; // --memory-budget as a size; nullopt: auto (the profile's)
    std::vector<std::string>       api_keys;     // --api-key, --api-key-file and INFERBOX_API_KEYS together
    std::vector<rpc_endpoint>      rpc;          // --rpc; empty without it
    std::vector<sql_database_spec> sql_databases;
    std::vector<mcp_server_spec>   mcp_servers;
    std::vector<route_arg>         routes; // --route, parsed; pull= only with a download reference
    // --team, parsed, their tools checked against the databases and MCP servers (their models are
    // checked once the served models are known: check_team_models in configure_routing).
    std::vector<team_spec> teams;
};

// `env_api_keys` is INFERBOX_API_KEYS (null when unset). An error names the flag and its rule.
result<serve_settings> check_serve_options(const serve_options &opts, const char *env_api_keys);

// "ID=REF" names a model's id on the command line → {ID, REF}; anything else → {"", arg}. A path
// that exists as given is never split.
std::pair<std::string, std::string> split_model_arg(const std::string &arg);

// `message` with each of `paths` replaced by its file name: clients never see absolute paths.
std::string without_paths(std::string message, std::initializer_list<std::string> paths);

// What choosing a profile settles for one model besides its engine settings.
struct chosen_profile {
    std::string profile_json;  // the active profile (/v1/metadata)
    std::string profiles_json; // every candidate, with its status (/v1/manifest)
    uint64_t    memory_bytes = 0;
    uint64_t    budget_bytes = 0; // what the machine can hold, by the profile estimator
};

// Settles one model's engine configuration from its file's header and the hardware (`hw`, with
// any RPC workers in hw.remote), before any weights load: --profile auto picks the best runnable
// profile, --profile NAME applies a listed one, and explicit flags are estimated as a "custom"
// profile. A configuration that cannot fit is refused with the numbers; so is one whose draft
// model (`draft`, speculative decoding; null without one) does not fit beside it. The latency
// targets (ecfg.slo_ttft_ms, slo_itl_ms) come from opts.slo_* when given, else from the chosen
// profile's defaults, predicted from hw.roofline (or the fallback bandwidth without one).
std::optional<error> choose_profile(const serve_options &opts, const gguf_info &info, const gguf_info *draft,
                                    const hardware_info &hw, engine_config &ecfg, model_options &mo,
                                    chosen_profile &out);

// One hosted model as serve settles it before anything loads.
struct hosted_plan {
    std::string          id;
    std::string          path;
    engine_config        ecfg;
    model_options        mo;
    embedder_config      embed;
    hosted_model_info    info;
    uint64_t             memory_bytes = 0; // the profile's estimate
    std::optional<error> refused;          // its file or configuration cannot be served
};

struct hosted_ref {
    std::string id;
    std::string file;
};

struct model_plans {
    std::vector<hosted_plan> plans;              // one per ref, in order
    uint64_t                 machine_budget = 0; // the largest budget a profile estimate saw
};

// Settles every model: validates its file (llama.cpp's loader reports a bad file only as "failed
// to load", and aborts on some malformed ones), chooses its profile and registers its metrics in
// `metrics`. A model that cannot be served is planned with `refused` set; the caller decides what
// that means (the first model's stops the server). `draft` and --chat-template belong to the first
// model; `first_index` is refs[0]'s entry in the host (a model pulled later is planned alone).
model_plans plan_models(const serve_options &opts, const std::vector<hosted_ref> &refs, const gguf_info *draft,
                        const hardware_info &hw, registry &metrics, size_t first_index = 0);

} // namespace inferbox

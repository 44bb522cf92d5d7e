#include "server/serve_plan.h"

#include "api/auth.h"
#include "common/micro_batch.h"
#include "metrics/embedding_metrics.h"
#include "metrics/serving_metrics.h"
#include "model/grammar.h"
#include "server/profile_json.h"
#include "store/latency_targets.h"
#include "store/profiles.h"
#include "store/store.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>
#include <thread>

namespace inferbox {

std::optional<uint64_t> parse_memory_size(const std::string &text) {
    if (text == "off" || text == "0") {
        return 0;
    }
    size_t pos   = 0;
    double value = 0;
    try {
        value = std::stod(text, &pos);
    } catch (const std::exception &) {
        return std::nullopt;
    }
    std::string unit = text.substr(pos);
    while (!unit.empty() && unit.front() == ' ') {
        unit.erase(0, 1);
    }
    static const std::pair<const char *, double> units[] = {
        {"B", 1.0},    {"KiB", 1024.0},  {"MiB", 1048576.0},  {"GiB", 1073741824.0},  {"TiB", 1099511627776.0},
        {"K", 1024.0}, {"M", 1048576.0}, {"G", 1073741824.0}, {"T", 1099511627776.0}, {"KB", 1e3},
        {"MB", 1e6},   {"GB", 1e9},      {"TB", 1e12}};
    for (const auto &[name, scale] : units) {
        if (unit == name && value > 0 && value * scale < 1.8e19) {
            return static_cast<uint64_t>(value * scale);
        }
    }
    return std::nullopt;
}

namespace {

// The API keys from --api-key, --api-key-file and INFERBOX_API_KEYS; each at least 8 characters.
result<std::vector<std::string>> collect_api_keys(const serve_options &opts, const char *env_api_keys) {
    std::vector<std::string> keys = opts.api_keys;
    if (!opts.api_key_file.empty()) {
        std::string err;
        if (!read_key_file(opts.api_key_file, keys, err)) {
            return error::invalid(err, "api_key_file");
        }
    }
    if (env_api_keys != nullptr) {
        for (auto &k : split_key_list(env_api_keys)) {
            keys.push_back(std::move(k));
        }
    }
    for (const auto &k : keys) {
        if (k.size() < 8) {
            return error::invalid("an API key is " + std::to_string(k.size()) +
                                  " characters long; keys must have at least 8");
        }
    }
    return keys;
}

// Parses each NAME=... entry of a repeatable flag with `parse`; two entries may not share a name.
template <typename Spec, typename Parse>
result<std::vector<Spec>> parse_named_specs(const std::vector<std::string> &texts, const std::string &flag,
                                            Parse parse) {
    std::vector<Spec> specs;
    for (const auto &text : texts) {
        auto spec = parse(text);
        if (!spec) {
            return error::invalid(flag + ": " + spec.err().message);
        }
        for (const auto &s : specs) {
            if (s.name == spec->name) {
                return error::invalid(flag + ": the name '" + spec->name + "' is given twice");
            }
        }
        specs.push_back(std::move(*spec));
    }
    return specs;
}

} // namespace

result<serve_settings> check_serve_options(const serve_options &opts, const char *env_api_keys) {
    serve_settings s;
    if (opts.models.empty()) {
        return error::invalid("no model to serve");
    }
    if (opts.memory_budget != "auto") {
        s.budget_bytes = parse_memory_size(opts.memory_budget);
        if (!s.budget_bytes) {
            return error::invalid("--memory-budget '" + opts.memory_budget +
                                  "' is not a size: use auto, off, or a number with a unit (512MiB, 8GiB, 16GB)");
        }
    }
    if (opts.engine.kv_type == kv_cache_type::q8_0 && opts.engine.flash_attn == flash_attention::off) {
        return error::invalid("--kv-type q8_0 needs flash attention: llama.cpp cannot quantize the V cache without "
                              "it (use --flash-attn auto or on)");
    }
    if (opts.embedding.max_inputs > opts.embedder.max_queue_inputs) {
        return error::invalid("--embedding-max-inputs (" + std::to_string(opts.embedding.max_inputs) +
                              ") must not exceed --embedding-max-queue (" +
                              std::to_string(opts.embedder.max_queue_inputs) +
                              "): such a request could never be queued");
    }
    if (!opts.rpc.empty()) {
        auto eps = parse_rpc_endpoints(opts.rpc);
        if (!eps) {
            return eps.err();
        }
        s.rpc = std::move(*eps);
    }
    auto keys = collect_api_keys(opts, env_api_keys);
    if (!keys) {
        return keys.err();
    }
    s.api_keys = std::move(*keys);
    if (opts.tls_cert.empty() != opts.tls_key.empty() || (opts.tls_cert.empty() && !opts.tls_client_ca.empty())) {
        return error::invalid("TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)");
    }
    auto sql = parse_named_specs<sql_database_spec>(opts.sql_databases, "--sql-database", parse_sql_database_spec);
    if (!sql) {
        return sql.err();
    }
    s.sql_databases = std::move(*sql);
    auto mcp        = parse_named_specs<mcp_server_spec>(opts.mcp_servers, "--mcp-server", parse_mcp_server_spec);
    if (!mcp) {
        return mcp.err();
    }
    s.mcp_servers = std::move(*mcp);
    auto teams    = parse_named_specs<team_spec>(opts.teams, "--team", parse_team_spec);
    if (!teams) {
        return teams.err();
    }
    std::vector<std::string> sql_names, mcp_names;
    for (const auto &d : s.sql_databases) {
        sql_names.push_back(d.name);
    }
    for (const auto &m : s.mcp_servers) {
        mcp_names.push_back(m.name);
    }
    for (const auto &t : *teams) {
        if (auto err = check_team_tools(t, sql_names, mcp_names)) {
            return error::invalid("--team: " + err->message);
        }
        // A member's schema is compiled to the grammar its answers are sampled under here, once,
        // so that a schema llama.cpp's converter cannot take stops the start instead of failing
        // every call of that member (a remote member's backend gets the schema itself, but the
        // same team may be served locally tomorrow).
        for (const auto &m : t.members) {
            if (m.schema.empty()) {
                continue;
            }
            const std::string param = "member." + m.name + ".schema";
            if (auto g = json_schema_to_gbnf(m.schema, param); !g) {
                return error::invalid("--team '" + t.name + "': " + g.err().message);
            }
        }
    }
    s.teams = std::move(*teams);
    for (const auto &text : opts.routes) {
        auto r = parse_route_arg(text);
        if (!r) {
            return r.err();
        }
        if (!r->pull.empty()) {
            auto ref = parse_model_ref(r->pull);
            if (!ref || (ref->kind != model_ref_kind::hugging_face && ref->kind != model_ref_kind::url)) {
                return error::invalid("--route " + r->model +
                                      ": pull= takes a download reference (hf://ORG/REPO/"
                                      "FILE.gguf or an http(s):// URL), got '" +
                                      r->pull.substr(0, 200) + "'");
            }
        }
        for (const auto &earlier : s.routes) {
            if (earlier.model == r->model) {
                return error::invalid("--route: the model '" + r->model + "' has two routes");
            }
        }
        s.routes.push_back(std::move(*r));
    }
    if (!opts.lora_dir.empty()) {
        std::error_code ec;
        if (!std::filesystem::is_directory(opts.lora_dir, ec)) {
            return error::invalid("--lora-dir " + opts.lora_dir + " is not a folder");
        }
    }
    return s;
}

std::pair<std::string, std::string> split_model_arg(const std::string &arg) {
    const auto eq = arg.find('=');
    if (eq == std::string::npos || eq == 0 || std::filesystem::exists(arg)) {
        return {"", arg};
    }
    const std::string id    = arg.substr(0, eq);
    const bool        plain = std::all_of(id.begin(), id.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':';
    });
    return plain ? std::make_pair(id, arg.substr(eq + 1)) : std::make_pair(std::string(), arg);
}

// Clients see a model's file by its name only: error messages never carry absolute paths.
std::string without_paths(std::string message, std::initializer_list<std::string> paths) {
    for (const auto &path : paths) {
        if (path.empty()) {
            continue;
        }
        const std::string name = std::filesystem::path(path).filename().string();
        for (size_t at = message.find(path); at != std::string::npos; at = message.find(path, at + name.size())) {
            message.replace(at, path.size(), name);
        }
    }
    return message;
}

namespace {

// --profile auto: the best runnable profile (pick_profile's rule).
result<model_profile> auto_profile(const profile_set &set) {
    auto pick = pick_profile(set);
    if (!pick) {
        return pick.err();
    }
    model_profile active = set.profiles[pick->index];
    active.settings      = pick->settings;
    active.memory        = pick->memory;
    spdlog::info("profile {}", pick->reason);
    return active;
}

// --profile NAME: that profile, which must be runnable here.
result<model_profile> named_profile(const profile_set &set, const std::string &name) {
    const auto i = find_profile(set, name);
    if (!i) {
        std::string names;
        for (const auto &p : set.profiles) {
            names += (names.empty() ? "" : ", ") + p.name;
        }
        return error::invalid("no profile '" + name + "' for this model; profiles: " + names, "profile");
    }
    model_profile active = set.profiles[*i];
    if (active.status != profile_status::runnable) {
        return error::invalid("profile " + active.name + " is " + std::string(profile_status_name(active.status)) +
                                  ": " + active.detail,
                              "profile");
    }
    spdlog::info("profile {} (chosen with --profile)", active.name);
    return active;
}

// No --profile: the flags as given, estimated as a "custom" profile. "auto" KV type and flash
// attention settle here (the first option that fits); --rpc without --gpu-layers takes the
// profile's layer split.
result<model_profile> custom_profile(const profile_set &set, const hardware_info &hw, engine_config &ecfg,
                                     model_options &mo) {
    const std::optional<model_shape> &draft_shape = set.draft;
    profile_settings                  s;
    s.n_threads =
        ecfg.n_threads > 0 ? ecfg.n_threads : static_cast<int32_t>(std::max(1U, std::thread::hardware_concurrency()));
    s.parallel     = ecfg.parallel;
    s.n_ctx_slot   = ecfg.n_ctx_slot;
    s.n_batch      = ecfg.step_tokens;
    s.use_mmap     = mo.use_mmap;
    s.use_mlock    = mo.use_mlock;
    s.n_gpu_layers = mo.n_gpu_layers;
    s.rpc          = !hw.remote.empty();
    s.gpu          = mo.n_gpu_layers > 0 && !s.rpc;
    s.n_ubatch     = micro_batch_for(!s.gpu && !s.rpc, ecfg.step_tokens);
    // "auto" KV type and flash attention: the first option that fits (attention_candidates()).
    const std::optional<kv_cache_type> kv_asked    = ecfg.kv_type;
    const std::optional<bool>          flash_asked = ecfg.flash_attn == flash_attention::automatic
                                                         ? std::nullopt
                                                         : std::optional(ecfg.flash_attn == flash_attention::on);
    const attention_site site    = s.gpu || s.rpc ? attention_site::accelerator : cpu_attention_site(set.model);
    const auto           options = attention_candidates(kv_asked, flash_asked, site);
    s.kv_type                    = options.front().kv_type;
    s.flash_attn                 = options.front().flash_attn;
    if (s.rpc && s.n_gpu_layers == 0) { // --rpc without --gpu-layers: the profile's split
        s.n_gpu_layers  = rpc_layer_split(set.model, hw, set.budget, s);
        mo.n_gpu_layers = s.n_gpu_layers;
    }
    model_profile active = evaluate_attention_options(set.model, hw, set.budget, "custom", profile_flavour::latency, s,
                                                      options, draft_shape ? &*draft_shape : nullptr);
    const profile_settings &settled = active.settings;
    if (!kv_asked || !flash_asked) {
        spdlog::info("attention: {} KV, flash attention {} ({} the memory budget)", kv_cache_type_name(settled.kv_type),
                     settled.flash_attn ? "on" : "off",
                     active.status == profile_status::runnable ? "auto: the fastest option that fits"
                                                               : "auto: no option fits");
    }
    ecfg.kv_type = settled.kv_type;
    if (!settled.flash_attn) { // with it, `on` as asked, or `automatic`: llama.cpp enables it where the model can
        ecfg.flash_attn = flash_attention::off;
    }
    if (active.status == profile_status::incompatible) {
        return error::invalid("this configuration cannot run here: " + active.detail, "");
    }
    if (active.status == profile_status::low_memory) {
        return error::invalid(
            "this configuration needs about " + std::to_string(active.memory.total() >> 20) + " MiB" +
                (draft_shape ? " (" + std::to_string(active.memory.draft >> 20) + " MiB of it for the draft model)"
                             : std::string()) +
                " but " + std::to_string(set.budget.bytes >> 20) + " MiB are available; try " + active.detail +
                " (inferbox profiles --model lists what fits)",
            "");
    }
    return active;
}

// The engine and model settings a chosen profile implies. Without --profile, the explicit flags
// (or their defaults) stay as given.
void apply_profile(const serve_options &opts, const profile_set &set, const model_profile &active,
                   const hardware_info &hw, engine_config &ecfg, model_options &mo) {
    if (active.settings.rpc) {
        spdlog::info("RPC: {} of {} layers on {} remote devices ({} MiB of weights and KV there), the rest here",
                     std::min<uint64_t>(uint64_t(active.settings.n_gpu_layers), set.model.n_layer), set.model.n_layer,
                     hw.remote.size(), active.memory.remote >> 20);
    }
    if (!opts.profile.empty()) { // explicit flags (or their defaults) otherwise stay as given
        ecfg.n_threads   = active.settings.n_threads;
        ecfg.parallel    = active.settings.parallel;
        ecfg.n_ctx_slot  = active.settings.n_ctx_slot;
        ecfg.step_tokens = active.settings.n_batch;
        ecfg.kv_type     = active.settings.kv_type;
        // A profile's "flash attention" means "where supported": llama.cpp decides per model.
        ecfg.flash_attn = active.settings.flash_attn ? flash_attention::automatic : flash_attention::off;
        mo.use_mmap     = active.settings.use_mmap;
        mo.use_mlock    = active.settings.use_mlock;
        mo.n_gpu_layers = active.settings.n_gpu_layers;
    }
    // the micro-batch the estimate counted (micro_batch_for(): the CPU's smaller one unless layers
    // go elsewhere); the decoder keeps it within a step
    ecfg.micro_batch = active.settings.n_ubatch;
}

// How one settled target reads in the log: "250 ms (profile)", "off (flag)", "none (the profile
// has none: why)".
std::string target_text(int32_t ms, target_source source, const latency_defaults &d) {
    if (ms > 0) {
        return std::to_string(ms) + " ms (" + std::string(target_source_name(source)) + ")";
    }
    if (source == target_source::flag) {
        return "off (flag)";
    }
    return "none (" + (d.note.empty() ? std::string("the profile has none") : d.note) + ")";
}

// The latency targets the engine runs with: each target's flag when given (0: off), else the
// profile's default, else none; logged with where each came from.
settled_targets settle_targets(const serve_options &opts, const gguf_info &info, const model_profile &active,
                               const hardware_info &hw, engine_config &ecfg) {
    const latency_defaults d = profile_latency_defaults(info, active.settings, hw.roofline ? &*hw.roofline : nullptr);
    settled_targets        t = settle_latency_targets(opts.slo_ttft_ms, opts.slo_itl_ms, d);
    ecfg.slo_ttft_ms         = t.ttft_ms;
    ecfg.slo_itl_ms          = t.itl_ms;
    const bool from_profile  = t.ttft_source == target_source::profile || t.itl_source == target_source::profile;
    spdlog::info("latency targets: TTFT {}, ITL {}{}", target_text(t.ttft_ms, t.ttft_source, d),
                 target_text(t.itl_ms, t.itl_source, d),
                 !from_profile           ? std::string()
                 : d.basis == "measured" ? std::string("; the profile's from the measured decode roofline")
                                         : std::string("; the profile's from an assumed memory bandwidth (run "
                                                       "`inferbox hardware --measure` to fit them to this machine)"));
    return t;
}

// Logs the estimate and fills what /v1/metadata and /v1/manifest publish: the active profile
// with the latency targets in force, every candidate with its default targets.
void publish_profile(const serve_options &opts, const profile_set &set, const model_profile &active,
                     const gguf_info &info, const hardware_info &hw, const settled_targets &targets,
                     chosen_profile &out) {
    const std::optional<model_shape> &draft_shape = set.draft;
    auto                              dump        = [](const nlohmann::json &j) {
        return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    };
    nlohmann::json profiles = nlohmann::json::array();
    for (const auto &p : set.profiles) {
        nlohmann::json j = profile_to_json(p);
        j["latency_targets"] =
            latency_defaults_json(profile_latency_defaults(info, p.settings, hw.roofline ? &*hw.roofline : nullptr));
        profiles.push_back(std::move(j));
    }
    if (opts.profile.empty()) {
        spdlog::info("memory estimate: {} MiB (weights {}, KV {}, compute {}{}) of {} MiB available",
                     active.memory.total() >> 20, active.memory.weights >> 20, active.memory.kv_cache >> 20,
                     active.memory.compute >> 20,
                     draft_shape ? ", draft model " + std::to_string(active.memory.draft >> 20) : std::string(),
                     set.budget.bytes >> 20);
    } else if (draft_shape) {
        spdlog::info("draft model: memory estimate {} MiB, counted in the profile's {} MiB", active.memory.draft >> 20,
                     active.memory.total() >> 20);
    }
    nlohmann::json active_json     = profile_to_json(active);
    active_json["latency_targets"] = latency_targets_json(targets);
    out.profile_json               = dump(active_json);
    out.profiles_json              = dump(profiles);
    out.memory_bytes               = active.memory.total();
    out.budget_bytes               = set.budget.bytes;
}

} // namespace

std::optional<error> choose_profile(const serve_options &opts, const gguf_info &info, const gguf_info *draft,
                                    const hardware_info &hw, engine_config &ecfg, model_options &mo,
                                    chosen_profile &out) {
    profile_options po;
    po.draft                 = draft;
    const profile_set set    = list_profiles(info, hw, po);
    auto              active = opts.profile == "auto"  ? auto_profile(set)
                               : !opts.profile.empty() ? named_profile(set, opts.profile)
                                                       : custom_profile(set, hw, ecfg, mo);
    if (!active) {
        return active.err();
    }
    apply_profile(opts, set, *active, hw, ecfg, mo);
    const settled_targets targets = settle_targets(opts, info, *active, hw, ecfg);
    publish_profile(opts, set, *active, info, hw, targets, out);
    return std::nullopt;
}

model_plans plan_models(const serve_options &opts, const std::vector<hosted_ref> &refs, const gguf_info *draft,
                        const hardware_info &hw, registry &metrics, size_t first_index) {
    model_plans out;
    for (size_t k = 0; k < refs.size(); ++k) {
        const size_t i = first_index + k; // the host's entry
        hosted_plan  p;
        p.id                 = refs[k].id;
        p.path               = refs[k].file;
        p.ecfg               = opts.engine;
        p.mo.path            = p.path;
        p.mo.chat_template   = i == 0 ? opts.chat_template : std::string();
        p.mo.n_gpu_layers    = opts.gpu_layers;
        p.mo.use_mmap        = !opts.no_mmap;
        p.mo.use_mlock       = opts.mlock;
        p.info.metrics       = std::make_shared<serving_metrics>(metrics, p.id, opts.metrics_vllm_names);
        p.info.embed_metrics = std::make_shared<embedding_metrics>(metrics, p.id);
        p.ecfg.metrics       = p.info.metrics;
        p.embed              = opts.embedder;
        p.embed.metrics      = p.info.embed_metrics;
        const auto checked   = read_gguf_file(p.path, p.path);
        if (!checked) {
            p.refused = checked.err();
            out.plans.push_back(std::move(p));
            continue;
        }
        p.info.architecture = checked->architecture;
        p.info.file_bytes   = checked->file_size;
        chosen_profile chosen;
        p.refused = choose_profile(opts, checked.value(), i == 0 ? draft : nullptr, hw, p.ecfg, p.mo, chosen);
        if (!p.refused) {
            p.info.profile_json  = std::move(chosen.profile_json);
            p.info.profiles_json = std::move(chosen.profiles_json);
            p.info.n_ctx_slot =
                p.ecfg.n_ctx_slot > 0
                    ? p.ecfg.n_ctx_slot
                    : static_cast<int32_t>(std::min<uint64_t>(checked->context_length.value_or(0), 1U << 20));
            p.memory_bytes     = chosen.memory_bytes;
            out.machine_budget = std::max(out.machine_budget, chosen.budget_bytes);
        }
        out.plans.push_back(std::move(p));
    }
    return out;
}

} // namespace inferbox

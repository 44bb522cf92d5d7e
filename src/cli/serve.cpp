#include "cli/serve.h"

#include "api/errors.h"
#include "api/routes.h"
#include "backend/backend_spec.h"
#include "backend/remote_backend.h"
#include "cli/output.h"
#include "cli/profile_commands.h"
#include "engine/model.h"
#include "engine/rpc.h"
#include "fetch/pull.h"
#include "host/model_host.h"
#include "store/gguf.h"
#include "store/hardware.h"
#include "store/profiles.h"
#include "tools/mcp_client.h"
#include "tools/sql_database.h"

#include <nlohmann/json.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <spdlog/spdlog.h>

#include "llama.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#include <unistd.h>

#ifndef INFERBOX_VERSION
#define INFERBOX_VERSION "0.0.0"
#endif

namespace inferbox {

namespace net = boost::asio;

namespace {

// Settles the engine's configuration from the model file and the hardware, before any weights
// load: --profile auto picks the best runnable profile, --profile NAME applies a listed one, and
// explicit flags are estimated as a "custom" profile. A configuration that cannot fit is refused
// here, with the numbers; so is one whose draft model (`draft`, speculative decoding; null
// without one) does not fit beside it. Also publishes /v1/metadata and /v1/manifest.
// What choosing a profile settles for one model besides its engine settings.
struct chosen_profile {
    std::string profile_json;  // the active profile (/v1/metadata)
    std::string profiles_json; // every candidate, with its status (/v1/manifest)
    uint64_t    memory_bytes = 0;
    uint64_t    budget_bytes = 0; // what the machine can hold, by the profile estimator
};

std::optional<error> choose_profile(const serve_options &opts, const gguf_info &info, const gguf_info *draft,
                                    const std::vector<rpc_device> &remote, engine_config &ecfg, model_options &mo,
                                    chosen_profile &out) {
    hardware_info hw = detect_hardware();
    for (const auto &d : remote) {
        hw.remote.push_back({d.name, d.endpoint, d.total_bytes, d.free_bytes});
    }
    profile_options po;
    po.draft                                      = draft;
    const profile_set                 set         = list_profiles(info, hw, po);
    const std::optional<model_shape> &draft_shape = set.draft;

    model_profile active;
    if (opts.profile == "auto") {
        auto pick = pick_profile(set);
        if (!pick) {
            return pick.err();
        }
        active          = set.profiles[pick->index];
        active.settings = pick->settings;
        active.memory   = pick->memory;
        spdlog::info("profile {}", pick->reason);
    } else if (!opts.profile.empty()) {
        const auto i = find_profile(set, opts.profile);
        if (!i) {
            std::string names;
            for (const auto &p : set.profiles) {
                names += (names.empty() ? "" : ", ") + p.name;
            }
            return error::invalid("no profile '" + opts.profile + "' for this model; profiles: " + names, "profile");
        }
        active = set.profiles[*i];
        if (active.status != profile_status::runnable) {
            return error::invalid("profile " + active.name + " is " + std::string(profile_status_name(active.status)) +
                                      ": " + active.detail,
                                  "profile");
        }
        spdlog::info("profile {} (chosen with --profile)", active.name);
    } else {
        profile_settings s;
        s.n_threads    = ecfg.n_threads > 0 ? ecfg.n_threads
                                            : static_cast<int32_t>(std::max(1U, std::thread::hardware_concurrency()));
        s.n_slots      = ecfg.n_slots;
        s.n_ctx_slot   = ecfg.n_ctx_slot;
        s.n_batch      = ecfg.step_tokens;
        s.n_ubatch     = std::min(ecfg.step_tokens, 512);
        s.use_mmap     = mo.use_mmap;
        s.use_mlock    = mo.use_mlock;
        s.n_gpu_layers = mo.n_gpu_layers;
        s.rpc          = !remote.empty();
        s.gpu          = mo.n_gpu_layers > 0 && !s.rpc;
        // "auto" KV type and flash attention: the first option that fits (attention_candidates()).
        const std::optional<kv_cache_type> kv_asked =
            ecfg.kv_type == kv_precision::automatic ? std::nullopt : std::optional(to_cache_type(ecfg.kv_type));
        const std::optional<bool> flash_asked = ecfg.flash_attn == flash_attention::automatic
                                                    ? std::nullopt
                                                    : std::optional(ecfg.flash_attn == flash_attention::on);
        const auto                options     = attention_candidates(kv_asked, flash_asked, !s.gpu && !s.rpc);
        s.kv_type                             = options.front().kv_type;
        s.flash_attn                          = options.front().flash_attn;
        if (s.rpc && s.n_gpu_layers == 0) { // --rpc without --gpu-layers: the profile's split
            s.n_gpu_layers  = rpc_layer_split(set.model, hw, set.budget, s);
            mo.n_gpu_layers = s.n_gpu_layers;
        }
        active = evaluate_attention_options(set.model, hw, set.budget, "custom", profile_flavour::latency, s, options,
                                            draft_shape ? &*draft_shape : nullptr);
        const profile_settings &settled = active.settings;
        if (!kv_asked || !flash_asked) {
            spdlog::info("attention: {} KV, flash attention {} ({} the memory budget{})",
                         kv_cache_type_name(settled.kv_type), settled.flash_attn ? "on" : "off",
                         active.status == profile_status::runnable ? "auto: the fastest option that fits"
                                                                   : "auto: no option fits",
                         !settled.gpu && !settled.rpc
                             ? "; on the CPU, decode is fastest without flash attention and with f32 KV"
                             : "");
        }
        ecfg.kv_type = to_precision(settled.kv_type);
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
    }
    if (active.settings.rpc) {
        spdlog::info("RPC: {} of {} layers on {} remote devices ({} MiB of weights and KV there), the rest here",
                     std::min<uint64_t>(uint64_t(active.settings.n_gpu_layers), set.model.n_layer), set.model.n_layer,
                     remote.size(), active.memory.remote >> 20);
    }
    if (!opts.profile.empty()) { // explicit flags (or their defaults) otherwise stay as given
        ecfg.n_threads   = active.settings.n_threads;
        ecfg.n_slots     = active.settings.n_slots;
        ecfg.n_ctx_slot  = active.settings.n_ctx_slot;
        ecfg.step_tokens = active.settings.n_batch;
        ecfg.kv_type     = to_precision(active.settings.kv_type);
        // A profile's "flash attention" means "where supported": llama.cpp decides per model.
        ecfg.flash_attn = active.settings.flash_attn ? flash_attention::automatic : flash_attention::off;
        mo.use_mmap     = active.settings.use_mmap;
        mo.use_mlock    = active.settings.use_mlock;
        mo.n_gpu_layers = active.settings.n_gpu_layers;
    }

    auto dump = [](const nlohmann::json &j) {
        return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    };
    nlohmann::json profiles = nlohmann::json::array();
    for (const auto &p : set.profiles) {
        profiles.push_back(profile_to_json(p));
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
    out.profile_json  = dump(profile_to_json(active));
    out.profiles_json = dump(profiles);
    out.memory_bytes  = active.memory.total();
    out.budget_bytes  = set.budget.bytes;
    return std::nullopt;
}

// "ID=REF" names a model's id on the command line; anything else is a reference whose id is the
// cached name or the file's stem. A path that exists as given is never split.
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

} // namespace

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

// Where the server keeps its state: --data-dir, else $INFERBOX_DATA, else ~/.local/share/inferbox;
// an error naming `off_flag` (the flag that turns the state off) when none can be found.
result<std::filesystem::path> data_directory(const serve_options &opts, const char *off_flag) {
    if (!opts.data_dir.empty()) {
        return std::filesystem::path(opts.data_dir);
    }
    if (const char *d = std::getenv("INFERBOX_DATA"); d != nullptr && *d != '\0') {
        return std::filesystem::path(d);
    }
    if (const char *h = std::getenv("HOME"); h != nullptr && *h != '\0') {
        return std::filesystem::path(h) / ".local" / "share" / "inferbox";
    }
    return error::invalid(std::string("no data directory: set --data-dir, INFERBOX_DATA or HOME (or ") + off_flag +
                          " off)");
}

// The stored-Responses database under the data directory; null when --store-max-bytes is off.
result<std::shared_ptr<response_store>> open_response_store(const serve_options &opts) {
    const auto max = parse_memory_size(opts.store_max_bytes);
    if (!max) {
        return error::invalid("--store-max-bytes: '" + opts.store_max_bytes + "' is not a size (256MiB, 1GiB, off)");
    }
    if (*max == 0) {
        return std::shared_ptr<response_store>();
    }
    auto found = data_directory(opts, "--store-max-bytes");
    if (!found) {
        return found.err();
    }
    const std::filesystem::path &dir = *found;
    response_store_limits        limits;
    limits.max_bytes = static_cast<int64_t>(*max);
    limits.max_age   = std::chrono::hours(24) * opts.store_max_age_days;
    const auto file  = dir / "responses.sqlite3";
    auto       store = response_store::open(file, limits);
    if (!store) {
        return store.err();
    }
    spdlog::info("stored Responses: {} (up to {} bytes, {} days)", file.string(), *max, opts.store_max_age_days);
    return std::shared_ptr<response_store>(std::move(*store));
}

// The console's conversations under the data directory; null when --conversations-max-bytes is off.
result<std::shared_ptr<conversation_store>> open_conversation_store(const serve_options &opts) {
    const auto max = parse_memory_size(opts.conversations_max_bytes);
    if (!max) {
        return error::invalid("--conversations-max-bytes: '" + opts.conversations_max_bytes +
                              "' is not a size (64MiB, 1GiB, off)");
    }
    if (*max == 0) {
        return std::shared_ptr<conversation_store>();
    }
    auto dir = data_directory(opts, "--conversations-max-bytes");
    if (!dir) {
        return dir.err();
    }
    conversation_limits limits;
    limits.max_bytes_per_owner = static_cast<int64_t>(std::min<uint64_t>(*max, uint64_t{1} << 50));
    limits.max_bytes           = std::min<int64_t>(limits.max_bytes, limits.max_bytes_per_owner);
    const auto file            = *dir / "console.sqlite3";
    auto       store           = conversation_store::open(file, limits);
    if (!store) {
        return store.err();
    }
    spdlog::info("console conversations: {} (up to {} bytes per API key)", file.string(), *max);
    return std::shared_ptr<conversation_store>(std::move(*store));
}

} // namespace

namespace {

// A remote backend's state on /metrics, read at each scrape.
void register_backend_metrics(registry &reg, const std::shared_ptr<remote_backend> &b) {
    const label_list                    labels = {{"backend", b->name()}};
    const std::weak_ptr<remote_backend> weak   = b;
    const auto                          read   = [weak](auto field) {
        return [weak, field]() -> double {
            auto self = weak.lock();
            return self ? field(self->status()) : 0.0;
        };
    };
    reg.add_counter_fn("inferbox_backend_requests_total", "Requests sent to a remote backend.", labels,
                       read([](const remote_status &s) { return static_cast<double>(s.requests); }));
    reg.add_counter_fn("inferbox_backend_failures_total",
                       "Requests to a remote backend that failed (transport, timeout, 5xx, broken stream).", labels,
                       read([](const remote_status &s) { return static_cast<double>(s.failures); }));
    reg.add_gauge_fn("inferbox_backend_in_flight", "Requests open at a remote backend.", labels,
                     read([](const remote_status &s) { return static_cast<double>(s.in_flight); }));
    reg.add_gauge_fn("inferbox_backend_circuit_state", "A remote backend's circuit: 0 closed, 1 open, 2 half-open.",
                     labels, read([](const remote_status &s) { return static_cast<double>(s.circuit); }));
    reg.add_gauge_fn("inferbox_backend_up", "1 when the last probe or request reached the remote backend.", labels,
                     read([](const remote_status &s) { return s.reachable ? 1.0 : 0.0; }));
}

// The remote backends (--backend) and routing policies (--route): every entry checked, its API key
// read, its TLS set up; an error names the entry.
std::optional<error> configure_routing(const serve_options &opts, const net::any_io_executor &exec, api_config &cfg) {
    for (const auto &text : opts.backends) {
        auto spec = parse_backend_spec(text);
        if (!spec) {
            return error::invalid("--backend: " + spec.err().message);
        }
        for (const auto &b : cfg.backends) {
            if (b->name() == spec->name) {
                return error::invalid("--backend: two backends are named '" + spec->name + "'");
            }
        }
        if (spec->name == "local") {
            return error::invalid("--backend: 'local' names this server; choose another backend name");
        }
        auto key = resolve_backend_key(*spec);
        if (!key) {
            return error::invalid("--backend: " + key.err().message);
        }
        auto backend = remote_backend::create(*spec, std::move(*key), exec);
        if (!backend) {
            return error::invalid("--backend: " + backend.err().message);
        }
        std::string models;
        for (const auto &m : (*backend)->spec().models) {
            models += (models.empty() ? "" : ", ") + m.id + (m.id == m.remote_id ? "" : " (as " + m.remote_id + ")");
        }
        spdlog::info("backend '{}': {} serving {}", spec->name,
                     (*backend)->url().origin() + (*backend)->url().base_path,
                     models.empty() ? std::string("the models its /models lists") : models);
        register_backend_metrics(*cfg.metrics_registry, *backend);
        cfg.backends.push_back(std::move(*backend));
    }
    for (const auto &text : opts.routes) {
        const auto eq = text.rfind('=');
        if (eq == std::string::npos || eq == 0) {
            return error::invalid("--route: expected MODEL=POLICY, got '" + text + "'");
        }
        auto policy = parse_route_policy(text.substr(eq + 1));
        if (!policy) {
            return error::invalid("--route " + text + ": " + policy.err().message);
        }
        cfg.routes[text.substr(0, eq)] = *policy;
    }
    cfg.overflow_after  = opts.overflow_after;
    cfg.request_timeout = std::chrono::milliseconds(opts.request_timeout_ms);
    return std::nullopt;
}

} // namespace

int run_serve(const serve_options &given) {
    // Each --model is a path, a cached name, or a reference to pull (hf://, https://) into the
    // cache, optionally as ID=REF.
    if (given.models.empty()) {
        spdlog::error("no model to serve");
        return 1;
    }
    std::vector<std::pair<std::string, std::string>> refs; // (id, file)
    std::string                                      draft_path;
    {
        pull_options po;
        auto         last = std::make_shared<std::chrono::steady_clock::time_point>();
        po.on_progress    = [last](const download_progress &p) {
            const auto now  = std::chrono::steady_clock::now();
            const bool done = p.total && p.received >= *p.total;
            if (done || now - *last >= std::chrono::seconds(5)) {
                *last = now;
                spdlog::info("{}{}", done ? "downloaded " : "downloading: ", format_progress(p, false));
            }
        };
        po.on_notice = [](const std::string &msg) { spdlog::info("download: {}", msg); };
        for (size_t i = 0; i < given.models.size(); ++i) {
            auto [id, ref] = split_model_arg(given.models[i]);
            auto found     = resolve_model(ref, po);
            if (!found) {
                spdlog::error("{}", found.err().message);
                return 1;
            }
            if (id.empty() && i == 0) {
                id = given.model_name;
            }
            if (id.empty()) {
                id = found->from_store ? found->name : std::filesystem::path(found->file).stem().string();
            }
            for (const auto &r : refs) {
                if (r.first == id) {
                    spdlog::error("two models have the id '{}': name one with --model ID=PATH (or --model-name for "
                                  "the first)",
                                  id);
                    return 1;
                }
            }
            refs.emplace_back(id, found->file.string());
        }
        if (!given.draft_model.empty()) {
            auto draft = resolve_model(given.draft_model, po);
            if (!draft) {
                spdlog::error("--draft-model: {}", draft.err().message);
                return 1;
            }
            draft_path = draft->file.string();
        }
    }
    std::optional<uint64_t> budget_flag;
    if (given.memory_budget != "auto") {
        budget_flag = parse_memory_size(given.memory_budget);
        if (!budget_flag) {
            spdlog::error("--memory-budget '{}' is not a size: use auto, off, or a number with a unit (512MiB, 8GiB, "
                          "16GB)",
                          given.memory_budget);
            return 1;
        }
    }
    const serve_options &opts = given;

    llama_log_set(
        [](ggml_log_level level, const char *text, void *) {
            // Warnings and errors always; llama.cpp's own info lines (the KV cache's types and
            // size, flash attention, mmap) at --log-level debug.
            const bool problem = level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR;
            if (!problem && (level != GGML_LOG_LEVEL_INFO || !spdlog::should_log(spdlog::level::debug))) {
                return;
            }
            std::string s(text);
            while (!s.empty() && s.back() == '\n') {
                s.pop_back();
            }
            if (s.empty()) {
                return;
            }
            if (problem) {
                spdlog::warn("llama.cpp: {}", s);
            } else {
                spdlog::debug("llama.cpp: {}", s);
            }
        },
        nullptr);
    llama_backend_init();
    // A peer that vanishes must not kill the process: ggml's RPC client writes to its sockets
    // without MSG_NOSIGNAL (Asio's own writes never raise SIGPIPE).
    std::signal(SIGPIPE, SIG_IGN);

    // Remote layers: the workers are probed (with a timeout) and attached before any model is
    // settled, so that the profiles see their memory. Until the server is ready, a worker that
    // fails makes ggml abort, and the handler turns that into a clear exit 1.
    std::vector<rpc_device> remote;
    std::string             rpc_list;
    if (!opts.rpc.empty()) {
        auto eps = parse_rpc_endpoints(opts.rpc);
        if (!eps) {
            spdlog::error("{}", eps.err().message);
            return 1;
        }
        for (const auto &ep : *eps) {
            rpc_list += (rpc_list.empty() ? "" : ", ") + ep.text();
        }
        set_fatal_handler([rpc_list](const std::string &msg) {
            spdlog::critical("ggml: {}", msg);
            spdlog::critical("an RPC worker ({}) failed during start-up; exiting", rpc_list);
            spdlog::shutdown();
            std::_Exit(1);
        });
        auto attached = attach_rpc_workers(*eps, std::chrono::seconds(std::min(opts.rpc_timeout, 30)));
        if (!attached) {
            spdlog::error("{}", attached.err().message);
            return 1;
        }
        remote = std::move(*attached);
        for (const auto &d : remote) {
            spdlog::info("RPC device {} on {}: {} ({} MiB free of {} MiB)", d.name, d.endpoint, d.description,
                         d.free_bytes >> 20, d.total_bytes >> 20);
        }
    }

    api_config cfg;
    cfg.model_id          = refs.front().first;
    cfg.version           = INFERBOX_VERSION;
    cfg.llama_cpp_version = llama_cpp_version();
    cfg.limits            = opts.api;

    // API keys: --api-key, --api-key-file and INFERBOX_API_KEYS together.
    cfg.api_keys = opts.api_keys;
    if (!opts.api_key_file.empty()) {
        std::string err;
        if (!read_key_file(opts.api_key_file, cfg.api_keys, err)) {
            spdlog::error("{}", err);
            return 1;
        }
    }
    if (const char *env = std::getenv("INFERBOX_API_KEYS")) {
        for (auto &k : split_key_list(env)) {
            cfg.api_keys.push_back(std::move(k));
        }
    }
    for (const auto &k : cfg.api_keys) {
        if (k.size() < 8) {
            spdlog::error("an API key is {} characters long; keys must have at least 8", k.size());
            return 1;
        }
    }
    cfg.metrics_public   = opts.metrics_public;
    cfg.cors_origins     = opts.cors_origins;
    cfg.rate             = opts.rate;
    cfg.metrics_registry = std::make_shared<registry>();
    cfg.embedding        = opts.embedding;
    if (auto store = open_response_store(opts); !store) {
        // A read-only file system (a locked-down container) must not keep the server from serving:
        // it runs without stored Responses, and says so.
        spdlog::warn("{}; Responses are not stored (store and previous_response_id answer 404)", store.err().message);
    } else {
        cfg.responses = std::move(*store);
    }
    cfg.console = !opts.no_console;
    if (auto store = open_conversation_store(opts); !store) {
        spdlog::warn("{}; the console's conversations are not kept on the server", store.err().message);
    } else {
        cfg.conversations = std::move(*store);
    }
    cfg.hardware_json = hardware_json(detect_hardware()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    for (const auto &text : opts.sql_databases) {
        auto spec = parse_sql_database_spec(text);
        if (!spec) {
            spdlog::error("--sql-database: {}", spec.err().message);
            return 1;
        }
        if (cfg.sql_databases.count(spec->name) != 0) {
            spdlog::error("--sql-database: the name '{}' is given twice", spec->name);
            return 1;
        }
        auto db = sql_database::open(spec->name, spec->path);
        if (!db) {
            spdlog::error("--sql-database: {}", db.err().message);
            return 1;
        }
        spdlog::info("sql tool: database '{}' ({}, {} tables, read-only)", spec->name, (*db)->display(),
                     (*db)->schema().size());
        cfg.sql_databases.emplace(spec->name, std::move(*db));
    }
    for (const auto &text : opts.mcp_servers) {
        auto spec = parse_mcp_server_spec(text);
        if (!spec) {
            spdlog::error("--mcp-server: {}", spec.err().message);
            return 1;
        }
        if (cfg.mcp_servers.count(spec->name) != 0) {
            spdlog::error("--mcp-server: the name '{}' is given twice", spec->name);
            return 1;
        }
        const auto name   = spec->name;
        auto       client = mcp_client::start(std::move(*spec));
        if (!client) {
            spdlog::error("--mcp-server '{}': {}", name, client.err().message);
            return 1;
        }
        std::string tools;
        for (const auto &t : (*client)->tools()) {
            tools += (tools.empty() ? "" : ", ") + t.name;
        }
        spdlog::info("MCP server '{}': {} tool(s): {}", name, (*client)->tools().size(), tools);
        cfg.mcp_servers.emplace(name, std::move(*client));
    }

    // Settle every model before anything loads: validate its file ourselves (llama.cpp's loader
    // reports a bad file only as "failed to load", and aborts on some malformed ones), choose its
    // profile, register its metrics. The first model's problems stop the server (reported once
    // listening, below); another model's fail only that model's requests.
    std::optional<gguf_info> draft_info; // read once here: its shape counts in the first model's estimate
    if (!draft_path.empty()) {
        auto read = read_gguf_file(draft_path, draft_path);
        if (!read) {
            spdlog::error("--draft-model: {}", read.err().message);
            return 1;
        }
        draft_info = std::move(*read);
    }
    std::vector<hosted_plan> plans;
    uint64_t                 machine_budget = 0;
    for (size_t i = 0; i < refs.size(); ++i) {
        hosted_plan p;
        p.id                 = refs[i].first;
        p.path               = refs[i].second;
        p.ecfg               = opts.engine;
        p.mo.path            = p.path;
        p.mo.chat_template   = i == 0 ? opts.chat_template : std::string();
        p.mo.n_gpu_layers    = opts.gpu_layers;
        p.mo.use_mmap        = !opts.no_mmap;
        p.mo.use_mlock       = opts.mlock;
        p.info.metrics       = std::make_shared<serving_metrics>(*cfg.metrics_registry, p.id, opts.metrics_vllm_names);
        p.info.embed_metrics = std::make_shared<embedding_metrics>(*cfg.metrics_registry, p.id);
        p.ecfg.metrics       = p.info.metrics;
        p.embed              = opts.embedder;
        p.embed.metrics      = p.info.embed_metrics;
        const auto checked   = read_gguf_file(p.path, p.path);
        if (!checked) {
            p.refused = checked.err();
        } else {
            p.info.architecture = checked->architecture;
            p.info.file_bytes   = checked->file_size;
            chosen_profile chosen;
            p.refused = choose_profile(opts, checked.value(), i == 0 && draft_info ? &*draft_info : nullptr, remote,
                                       p.ecfg, p.mo, chosen);
            if (!p.refused) {
                p.info.profile_json  = std::move(chosen.profile_json);
                p.info.profiles_json = std::move(chosen.profiles_json);
                p.info.n_ctx_slot =
                    p.ecfg.n_ctx_slot > 0
                        ? p.ecfg.n_ctx_slot
                        : static_cast<int32_t>(std::min<uint64_t>(checked->context_length.value_or(0), 1U << 20));
                p.memory_bytes = chosen.memory_bytes;
                machine_budget = std::max(machine_budget, chosen.budget_bytes);
            }
        }
        if (i == 0 && !opts.lora_dir.empty()) {
            std::error_code ec;
            if (!std::filesystem::is_directory(opts.lora_dir, ec)) {
                spdlog::error("--lora-dir {} is not a folder", opts.lora_dir);
                return 1;
            }
            // Adapters must match the base model's architecture.
            cfg.loras = std::make_shared<lora_catalog>(opts.lora_dir, p.info.architecture);
            for (const auto &why : cfg.loras->rescan()) {
                spdlog::warn("LoRA adapter skipped: {}", why);
            }
            spdlog::info("LoRA adapters in {}: {} (loaded on first use, at most {} at once)", opts.lora_dir,
                         cfg.loras->list().size(), p.ecfg.max_loras);
        }
        plans.push_back(std::move(p));
    }

    host_options hopts;
    hopts.budget_bytes = budget_flag.value_or(machine_budget);
    hopts.load_wait    = std::chrono::seconds(opts.model_load_timeout);
    std::vector<hosted_model_spec> specs;
    std::vector<hosted_model_info> infos;
    for (const auto &p : plans) {
        specs.push_back({p.id, p.memory_bytes});
        infos.push_back(p.info);
    }
    // Loads entry i: its weights, the first model's draft model, an engine and an embedder.
    // Runs on the host's loader thread.
    const bool with_rpc = !remote.empty();
    auto       load     = [&plans, draft_path, with_rpc](size_t i) -> result<std::shared_ptr<served_model>> {
        const hosted_plan &p      = plans[i];
        auto               failed = [&p, &draft_path](const error &e) {
            return error{error_kind::unavailable,
                         "the model '" + p.id +
                             "' could not be loaded: " + without_paths(e.message, {p.path, draft_path}),
                         "model", "model_load_failed"};
        };
        const auto started_at = std::chrono::steady_clock::now();
        // Checked again: the file may have changed since start-up, and llama.cpp's loader aborts
        // on some malformed files.
        if (const auto checked = read_gguf_file(p.path, p.path); !checked) {
            return failed(checked.err());
        }
        auto m = model::load(p.mo);
        if (!m) {
            return failed(m.err());
        }
        engine_config ecfg = p.ecfg;
        if (i == 0 && !draft_path.empty()) {
            if (const auto draft_checked = read_gguf_file(draft_path, draft_path); !draft_checked) {
                return failed(draft_checked.err());
            }
            model_options dmo;
            dmo.path = draft_path;
            // A small draft goes where the model goes, but never over the network: its steps
            // are many and tiny, so a round trip each would cost more than the draft saves.
            dmo.n_gpu_layers = p.mo.n_gpu_layers > 0 && !with_rpc ? 100000 : 0;
            dmo.use_mmap     = p.mo.use_mmap;
            auto draft       = model::load(dmo);
            if (!draft) {
                return failed(draft.err());
            }
            ecfg.draft_model = *draft;
        }
        auto e = engine::start(*m, ecfg);
        if (!e) {
            return failed(e.err());
        }
        auto sm       = std::make_shared<served_model>();
        sm->eng       = std::shared_ptr<engine>(std::move(*e));
        const auto &c = sm->eng->config();
        // The embedder shares the weights, not the context: see engine/embedder.h.
        embedder_config embed = p.embed;
        embed.n_threads       = c.n_threads;
        auto started          = embedder::start(*m, embed);
        if (!started) {
            sm->eng->stop();
            return failed(started.err());
        }
        sm->emb = std::shared_ptr<embedder>(std::move(*started));
        spdlog::info("model '{}' ({}) ready in {:.1f} s: {} slots × {} tokens, {} threads, {} tokens per step, queue "
                                         "{}, chat template: {}",
                               p.id, (*m)->description(),
                               std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at).count(), c.n_slots,
                               c.n_ctx_slot, c.n_threads, c.step_tokens, c.max_waiting, (*m)->has_chat_template() ? "yes" : "no");
        return sm;
    };
    auto host = std::make_shared<served_models>(specs, hopts, load);
    for (size_t i = 1; i < plans.size(); ++i) {
        if (plans[i].refused) {
            spdlog::warn("model '{}' cannot be served: {}", plans[i].id, plans[i].refused->message);
            host->mark_failed(i, error{error_kind::unavailable,
                                       "the model '" + plans[i].id + "' cannot be served: " +
                                           without_paths(plans[i].refused->message, {plans[i].path}),
                                       "model", "model_load_failed"});
        }
    }
    if (plans.size() > 1 || budget_flag) {
        spdlog::info("hosting {} models under a memory budget of {}; each loads on its first request, the least "
                     "recently used idle one unloads when another would not fit",
                     plans.size(),
                     hopts.budget_bytes == 0 ? std::string("(none)")
                                             : std::to_string(hopts.budget_bytes >> 20) + " MiB");
    }

    net::io_context ioc;
    // Remote backends run their HTTP calls and probes on the I/O threads' io_context.
    if (auto err = configure_routing(opts, ioc.get_executor(), cfg)) {
        spdlog::error("{}", err->message);
        return 1;
    }
    api_router router(cfg);
    router.set_models(host, infos);
    if (!cfg.api_keys.empty()) {
        spdlog::info("API keys: {} configured; every route except /v1/health/*{} requires one", cfg.api_keys.size(),
                     cfg.metrics_public ? " and /metrics" : "");
    }

    http_server server(
        ioc, [&router](const std::shared_ptr<http_exchange> &ex) { router.handle(ex); },
        [](http::status status, const std::string &msg) {
            error_kind kind = error_kind::invalid_request;
            if (status == http::status::payload_too_large) {
                kind = error_kind::payload_too_large;
            } else if (status == http::status::internal_server_error) {
                kind = error_kind::internal;
            }
            return error_body(error{kind, msg, "", ""});
        },
        opts.http);
    server.set_access_log(&api_router::log_access);
    server.set_body_limit([fallback = opts.http.max_body_bytes](std::string_view target, http::verb verb) {
        return api_router::body_limit_for(target, verb, fallback);
    });
    // Exceptions that reached the last line of defence (a handler, an I/O thread): logged and
    // counted; the request gets a 500 and the server keeps serving.
    const auto count_unhandled = [reg = cfg.metrics_registry](const char *where, const std::string &what) {
        spdlog::error("unexpected exception in {}: {}", where, what);
        reg->add_counter("inferbox_unhandled_exceptions_total",
                         "exceptions caught by the last line of defence (handler, I/O thread, engine loop)",
                         {{"where", where}})
            .inc();
    };
    server.set_on_unhandled(count_unhandled);
    if (opts.tls_cert.empty() != opts.tls_key.empty() || (opts.tls_cert.empty() && !opts.tls_client_ca.empty())) {
        spdlog::error("TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)");
        return 1;
    }
    if (!opts.tls_cert.empty()) {
        if (auto err = server.enable_tls({opts.tls_cert, opts.tls_key, opts.tls_client_ca})) {
            spdlog::error("{}", *err);
            return 1;
        }
    }
    const char *scheme = opts.tls_cert.empty() ? "http" : "https";
    uint16_t    port   = 0;
    try {
        port = server.listen(opts.host, opts.port);
    } catch (const std::exception &e) {
        spdlog::error("cannot listen on {}:{}: {}", opts.host, opts.port, e.what());
        return 1;
    }
    spdlog::info("inferbox {} listening on {}://{}:{}{} (live; loading {})", cfg.version, scheme, opts.host, port,
                 opts.tls_client_ca.empty() ? "" : " with client certificates", plans.front().path);

    int32_t n_io = opts.http_threads;
    if (n_io <= 0) { // auto: only the CPU facts matter, not the memory and ISA detect_hardware() reads
        hardware_info cpus;
        read_cpus("/", cpus);
        n_io = http_threads_for(cpus);
    }
    spdlog::debug("{} I/O thread{}", n_io, n_io == 1 ? "" : "s");
    std::vector<std::thread> io_threads;
    io_threads.reserve(size_t(n_io));
    for (int32_t i = 0; i < n_io; ++i) {
        io_threads.emplace_back([&ioc, &count_unhandled] {
            // A completion handler that throws leaves run(); the thread reports it and goes on.
            for (;;) {
                try {
                    ioc.run();
                    return;
                } catch (const std::exception &e) {
                    count_unhandled("io_thread", e.what());
                }
            }
        });
    }

    for (const auto &b : cfg.backends) {
        b->start_probes();
    }

    // The first model loads now: readiness waits for it, and a server whose default model cannot
    // load exits non-zero.
    int exit_code = 0;
    if (plans.front().refused) {
        spdlog::error("{}", plans.front().refused->message);
        exit_code = 1;
    } else if (auto first = host->acquire_blocking(0); !first) {
        spdlog::error("{}", first.err().message);
        exit_code = 1;
    } else {
        router.set_ready();
    }

    // Serving with remote layers: a worker lost mid-request (ggml aborts inside the decode) or
    // silent past --rpc-timeout (the watchdog below) fails every in-flight request with a 503 or
    // an SSE error event naming the workers, and the process exits 2 for the orchestrator to
    // restart it: ggml's client cannot reconnect, so nothing else could serve again.
    std::function<void(const std::string &)> lost;
    if (!remote.empty() && exit_code == 0) {
        lost = [&router, &server, &host, rpc_list](const std::string &why) {
            static std::atomic<bool> once{false};
            if (once.exchange(true)) {
                for (;;) { // another thread is already exiting the process
                    ::pause();
                }
            }
            spdlog::critical("RPC workers ({}) lost: {}; failing in-flight requests and exiting", rpc_list, why);
            router.set_draining(true);
            server.stop_accepting();
            const error err{error_kind::unavailable,
                            "the server lost its RPC workers (" + rpc_list + ") and is restarting; retry shortly", "",
                            "rpc_worker_lost"};
            for (const auto &m : host->loaded()) {
                m->eng->abandon(err);
            }
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
            while (server.open_exchanges() > 0 && std::chrono::steady_clock::now() < deadline) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
            spdlog::shutdown();
            std::_Exit(2);
        };
        set_fatal_handler([lost](const std::string &msg) { lost("ggml: " + msg); });
    }

    if (exit_code == 0) {
        // SIGTERM/SIGINT: stop admitting, let in-flight requests finish, then exit 0. A second
        // signal exits at once.
        std::atomic<int>                                            signals{0};
        net::io_context                                             sig_ioc;
        net::signal_set                                             sigs(sig_ioc, SIGINT, SIGTERM);
        std::function<void(const boost::system::error_code &, int)> on_signal;
        on_signal = [&](const boost::system::error_code &ec, int sig) {
            if (ec) {
                return;
            }
            if (signals.fetch_add(1) > 0) {
                spdlog::warn("second signal ({}): exiting now", sig);
                std::_Exit(1);
            }
            spdlog::info("signal {}: draining (readiness is now 503, up to {} s)", sig, opts.shutdown_timeout);
            sigs.async_wait(on_signal);
        };
        sigs.async_wait(on_signal);
        std::thread sig_thread([&] { sig_ioc.run(); });

        auto all_healthy = [&host] {
            const auto loaded = host->loaded();
            return std::all_of(loaded.begin(), loaded.end(), [](const auto &m) { return m->healthy(); });
        };
        const auto rpc_timeout = std::chrono::seconds(opts.rpc_timeout);
        while (signals.load() == 0 && all_healthy()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            if (lost) {
                for (const auto &m : host->loaded()) {
                    if (m->eng->busy_for() > rpc_timeout) {
                        lost("an engine step has waited on them for more than " + std::to_string(opts.rpc_timeout) +
                             " s (--rpc-timeout)");
                    }
                }
            }
        }
        if (!all_healthy()) {
            spdlog::error("the engine cannot continue; exiting so the orchestrator restarts the server");
            exit_code = 2;
        }
        router.set_draining(true);
        server.stop_accepting();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(opts.shutdown_timeout);
        while (std::chrono::steady_clock::now() < deadline) {
            const auto loaded = host->loaded();
            if (!host->loading() && router.preparing() == 0 &&
                std::all_of(loaded.begin(), loaded.end(), [](const auto &m) { return m->idle(); }) &&
                std::all_of(cfg.backends.begin(), cfg.backends.end(),
                            [](const auto &b) { return b->status().in_flight == 0; })) {
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        // Anything still running ends with an error event; queued embedding requests with an error.
        host->shutdown();
        // Let the last bytes of every answer go out. A client that stopped reading is dropped by
        // the write timeout, so this wait is bounded by it; a fixed pause would lose the final
        // events on a busy machine.
        const auto flush_deadline =
            std::chrono::steady_clock::now() + opts.http.write_timeout + std::chrono::seconds(1);
        // Requests still being prepared (a tokenizer on a pathological prompt) have nothing to
        // flush; they are not waited for past the shutdown deadline.
        const auto writing = [&] {
            return static_cast<int64_t>(server.open_exchanges()) - std::max<int64_t>(0, router.preparing());
        };
        while (writing() > 0 && std::chrono::steady_clock::now() < flush_deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (writing() > 0) {
            spdlog::warn("{} responses were still being written at exit", writing());
        }
        sig_ioc.stop();
        sig_thread.join();
        if (router.preparing() > 0) {
            // The preparation threads cannot be interrupted inside llama.cpp and would hold the
            // exit (joining them) for as long as their input takes: SIGTERM's timeout wins.
            spdlog::warn("{} requests were still being prepared at the shutdown deadline; exiting without them",
                         router.preparing());
            spdlog::info("stopped");
            spdlog::shutdown();
            std::_Exit(exit_code);
        }
    }
    if (lost) { // the router and server the handler uses go away below; freeing remote buffers may still fail
        set_fatal_handler([](const std::string &msg) {
            spdlog::critical("ggml: {} (while stopping)", msg);
            spdlog::shutdown();
            std::_Exit(2);
        });
    }
    host->shutdown();
    for (const auto &b : cfg.backends) {
        b->stop();
    }
    ioc.stop();
    for (auto &t : io_threads) {
        t.join();
    }
    router.set_models(nullptr, {});
    host.reset();
    llama_backend_free();
    spdlog::info("stopped");
    return exit_code;
}

} // namespace inferbox

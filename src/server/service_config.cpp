#include "server/service_config.h"

#include "agent/team.h"
#include "api/response_store.h"
#include "backend/backend_spec.h"
#include "backend/remote_backend.h"
#include "console/conversation_store.h"
#include "files/file_store.h"
#include "metrics/registry.h"
#include "retrieval/vector_store_catalog.h"
#include "server/profile_json.h"
#include "store/hardware.h"
#include "tools/mcp_client.h"
#include "tools/sql_database.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>

#ifndef INFERBOX_VERSION
#define INFERBOX_VERSION "0.0.0"
#endif

namespace inferbox {

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

// The Files API's store under the data directory (<data>/files). A malformed flag is an error;
// --files-max-total-bytes off, or a store that cannot be opened (no data directory, a read-only
// file system), leaves the Files API off (the latter with a warning).
std::optional<error> open_file_store(const serve_options &opts, api_config &cfg) {
    const auto per_file = parse_memory_size(opts.files_max_bytes);
    if (!per_file || *per_file == 0 || *per_file > (uint64_t{1} << 30)) {
        return error::invalid("--files-max-bytes: '" + opts.files_max_bytes +
                              "' is not a size from 1 byte to 1GiB (32MiB, 100MiB, ...)");
    }
    const auto total = parse_memory_size(opts.files_max_total_bytes);
    if (!total) {
        return error::invalid("--files-max-total-bytes: '" + opts.files_max_total_bytes +
                              "' is not a size (4GiB, 100GiB, off)");
    }
    if (*total == 0) {
        return std::nullopt;
    }
    auto dir = data_directory(opts, "--files-max-total-bytes");
    if (!dir) {
        spdlog::warn("{}; the Files API (/v1/files) is off", dir.err().message);
        return std::nullopt;
    }
    file_limits limits;
    limits.max_file_bytes      = static_cast<int64_t>(*per_file);
    limits.max_files_per_owner = opts.files_max_count;
    limits.max_total_bytes     = static_cast<int64_t>(std::min<uint64_t>(*total, uint64_t{1} << 60));
    auto store                 = file_store::open(*dir / "files", limits);
    if (!store) {
        spdlog::warn("{}; the Files API (/v1/files) is off", store.err().message);
        return std::nullopt;
    }
    spdlog::info("files: {} (up to {} bytes each, {} per API key, {} bytes in all)", (*dir / "files").string(),
                 limits.max_file_bytes, limits.max_files_per_owner, limits.max_total_bytes);
    cfg.files = std::move(*store);
    return std::nullopt;
}

// The `sql` tool's databases, each opened read-only.
std::optional<error> open_sql_databases(const serve_settings &settings, api_config &cfg) {
    for (const auto &spec : settings.sql_databases) {
        auto db = sql_database::open(spec.name, spec.path);
        if (!db) {
            return error::invalid("--sql-database: " + db.err().message);
        }
        spdlog::info("sql tool: database '{}' ({}, {} tables, read-only)", spec.name, (*db)->display(),
                     (*db)->schema().size());
        cfg.sql_databases.emplace(spec.name, std::move(*db));
    }
    return std::nullopt;
}

// The MCP servers, each started and asked for its tools.
std::optional<error> start_mcp_servers(const serve_settings &settings, api_config &cfg) {
    for (const auto &spec : settings.mcp_servers) {
        auto client = mcp_client::start(spec);
        if (!client) {
            return error::invalid("--mcp-server '" + spec.name + "': " + client.err().message);
        }
        std::string tools;
        for (const auto &t : (*client)->tools()) {
            tools += (tools.empty() ? "" : ", ") + t.name;
        }
        spdlog::info("MCP server '{}': {} tool(s): {}", spec.name, (*client)->tools().size(), tools);
        cfg.mcp_servers.emplace(spec.name, std::move(*client));
    }
    return std::nullopt;
}

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

// The model ids a team may name, as far as the flags settle them before the models are resolved:
// the default model's id, each --model's (ID=REF; a path's file stem; a cached name), each
// --route's model and each remote backend's configured models. `certain`: false when some id is
// only known later (a download reference without ID=, a backend that lists its models itself).
struct known_models {
    std::vector<std::string> ids;
    bool                     certain = true;
};

known_models served_model_ids(const serve_options &opts, const api_config &cfg) {
    known_models k;
    k.ids.push_back(cfg.model_id);
    for (size_t i = 0; i < opts.models.size(); ++i) {
        auto [id, ref] = split_model_arg(opts.models[i]);
        std::error_code ec;
        if (!id.empty() || (i == 0 && !opts.model_name.empty())) {
            k.ids.push_back(id.empty() ? opts.model_name : id);
        } else if (std::filesystem::exists(ref, ec)) {
            k.ids.push_back(std::filesystem::path(ref).stem().string());
        } else if (ref.find("://") != std::string::npos) {
            k.certain = false; // named by its download reference: known once resolved
        } else {
            k.ids.push_back(ref); // a cached model's name
        }
    }
    for (const auto &[model, policy] : cfg.routes) {
        k.ids.push_back(model);
    }
    for (const auto &b : cfg.backends) {
        k.certain = k.certain && !b->spec().models.empty();
        for (const auto &m : b->spec().models) {
            k.ids.push_back(m.id);
        }
    }
    std::vector<std::string> once;
    for (auto &id : k.ids) {
        if (std::find(once.begin(), once.end(), id) == once.end()) {
            once.push_back(std::move(id));
        }
    }
    k.ids = std::move(once);
    return k;
}

// The Vector Stores API's catalogue under the data directory (<data>/vector_stores), beside the
// Files API it takes its files from: off with it, or with --vector-stores-max-count 0. A
// catalogue that cannot be opened leaves vector stores off with a warning. The embedding model
// (--retrieval-embedding-model) must be one this server hosts; whether it can embed is known once
// it has loaded, and a request that needs it says so then.
std::optional<error> open_vector_stores(const serve_options &opts, api_config &cfg) {
    if (!opts.retrieval_embedding_model.empty() && !opts.retrieval_embedding_model.starts_with("team/")) {
        const auto known = served_model_ids(opts, cfg);
        if (known.certain &&
            std::find(known.ids.begin(), known.ids.end(), opts.retrieval_embedding_model) == known.ids.end()) {
            std::string served;
            for (const auto &id : known.ids) {
                served += (served.empty() ? "" : ", ") + id;
            }
            return error::invalid("--retrieval-embedding-model: '" + opts.retrieval_embedding_model +
                                  "' is not served here (served: " + served + ")");
        }
    } else if (opts.retrieval_embedding_model.starts_with("team/")) {
        return error::invalid("--retrieval-embedding-model: a team cannot embed; name a hosted model");
    }
    cfg.retrieval_embedding_model = opts.retrieval_embedding_model;
    if (!cfg.files || opts.vector_stores_max_count == 0) {
        return std::nullopt;
    }
    auto dir = data_directory(opts, "--vector-stores-max-count");
    if (!dir) {
        spdlog::warn("{}; vector stores (/v1/vector_stores) are off", dir.err().message);
        return std::nullopt;
    }
    retrieval::vector_store_limits limits;
    limits.max_stores_per_owner = opts.vector_stores_max_count;
    auto catalog                = retrieval::vector_store_catalog::open(*dir / "vector_stores", limits);
    if (!catalog) {
        spdlog::warn("{}; vector stores (/v1/vector_stores) are off", catalog.err().message);
        return std::nullopt;
    }
    spdlog::info("vector stores: {} (up to {} per API key, {} files each; embeddings by {})",
                 (*dir / "vector_stores").string(), limits.max_stores_per_owner, limits.max_files_per_store,
                 opts.retrieval_embedding_model.empty() ? cfg.model_id : opts.retrieval_embedding_model);
    cfg.vector_stores = std::move(*catalog);
    return std::nullopt;
}

// The teams (--team, parsed and their tools checked by check_serve_options) into `cfg`, each of
// their models checked against what the server serves.
std::optional<error> configure_teams(const serve_options &opts, api_config &cfg) {
    const auto  known = served_model_ids(opts, cfg);
    std::string served;
    for (const auto &id : known.ids) {
        served += (served.empty() ? "" : ", ") + id;
    }
    for (const auto &text : opts.teams) {
        auto team = parse_team_spec(text);
        if (!team) {
            return error::invalid("--team: " + team.err().message);
        }
        const auto serves = [&](const std::string &m) {
            return std::find(known.ids.begin(), known.ids.end(), m) != known.ids.end();
        };
        if (auto err = check_team_models(*team, serves, served)) {
            if (known.certain || err->message.find("is a team") != std::string::npos) {
                return error::invalid("--team: " + err->message);
            }
            spdlog::warn("--team: {} (a model may still be found once the models are resolved; a member whose model "
                         "is not served fails when called)",
                         err->message);
        }
        std::string members;
        for (const auto &m : team->members) {
            members += (members.empty() ? "" : ", ") + m.name + " (" + m.model + ")";
        }
        spdlog::info("team '{}': served as team/{}; captain {}; members {}", team->name, team->name,
                     team->captain_model, members);
        cfg.teams.emplace(team->name, std::move(*team));
    }
    return std::nullopt;
}

} // namespace

result<api_config> make_api_config(const serve_options &opts, const serve_settings &settings,
                                   const hardware_info &machine) {
    api_config cfg;
    cfg.version          = INFERBOX_VERSION;
    cfg.limits           = opts.api;
    cfg.api_keys         = settings.api_keys;
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
    if (auto err = open_file_store(opts, cfg)) {
        return *err;
    }
    if (auto err = open_vector_stores(opts, cfg)) {
        return *err;
    }
    cfg.hardware_json = hardware_json(machine).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (auto err = open_sql_databases(settings, cfg)) {
        return *err;
    }
    if (auto err = start_mcp_servers(settings, cfg)) {
        return *err;
    }
    return cfg;
}

std::optional<error> configure_routing(const serve_options &opts, const boost::asio::any_io_executor &exec,
                                       api_config &cfg) {
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
        auto route = parse_route_arg(text); // checked before (check_serve_options): pull= is serve's
        if (!route) {
            return route.err();
        }
        cfg.routes[route->model] = route->policy;
    }
    cfg.overflow_after      = opts.overflow_after;
    cfg.affinity_bytes      = opts.route_affinity_bytes;
    cfg.request_timeout     = std::chrono::milliseconds(opts.request_timeout_ms);
    cfg.route_retries       = opts.route_retries;
    cfg.route_retry_backoff = std::chrono::milliseconds(opts.route_retry_backoff_ms);
    return configure_teams(opts, cfg);
}

} // namespace inferbox

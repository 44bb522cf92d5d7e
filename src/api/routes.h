#pragma once
// The HTTP routes: OpenAI's /v1/completions, /v1/chat/completions and /v1/models, NIM's health
// and version endpoints. Requests are validated (schema.h), tokenized here on the I/O thread,
// and handed to the engine as generation_requests.

#include "agent/team.h"
#include "agent/tool_loop.h"
#include "api/auth.h"
#include "api/embeddings_schema.h"
#include "api/http_server.h"
#include "api/response_store.h"
#include "api/schema.h"
#include "backend/remote_backend.h"
#include "backend/routing.h"
#include "backend/served_model.h"
#include "console/conversation_store.h"
#include "engine/embedder.h"
#include "engine/engine.h"
#include "files/file_store.h"
#include "host/model_host.h"
#include "metrics/embedding_metrics.h"
#include "metrics/registry.h"
#include "metrics/serving_metrics.h"
#include "metrics/timeline.h"
#include "retrieval/vector_store_catalog.h"
#include "store/lora_catalog.h"
#include "tools/file_search.h"
#include "tools/mcp_client.h"
#include "tools/sql_database.h"

#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace inferbox {

// What the router knows of a hosted model whether or not it is loaded: its documents and the
// metrics series labelled with its id. Index i describes the host's entry i.
struct hosted_model_info {
    std::string                        architecture;
    uint64_t                           file_bytes = 0;
    int32_t                            n_ctx_slot = 0; // 0: known once loaded
    std::string                        profile_json;   // its active profile, for /v1/metadata
    std::string                        profiles_json;  // its profile list, for /v1/manifest (a JSON array)
    std::shared_ptr<serving_metrics>   metrics;        // may be null
    std::shared_ptr<embedding_metrics> embed_metrics;  // may be null
};

struct api_config {
    std::string model_id; // the default model: what a request without `model` gets, the LoRA parent
    std::string version;
    std::string llama_cpp_version; // for /v1/metadata
    api_limits  limits;

    std::vector<std::string>  api_keys;               // empty: no authentication
    bool                      metrics_public = false; // /metrics without a key
    std::vector<std::string>  cors_origins;           // empty: CORS off; "*": any origin
    rate_limits               rate;
    std::shared_ptr<registry> metrics_registry; // what /metrics renders; may be null

    // The LoRA adapter folder: each adapter is a model id of its own (parent: model_id). May be null.
    std::shared_ptr<lora_catalog> loras;

    embedding_limits embedding; // /v1/embeddings and /v1/ranking

    // Threads that prepare requests (chat template, tokenizer, grammar) off the I/O threads.
    int32_t prep_threads = 2;

    // Stored Responses (store, previous_response_id, GET/DELETE /v1/responses/{id}); null: off.
    std::shared_ptr<response_store> responses;

    // Remote OpenAI-compatible backends (--backend), in configuration order, and the routing
    // policy per model id (--route MODEL=POLICY; a model without one: auto, backend/routing.h).
    std::vector<std::shared_ptr<remote_backend>> backends;
    std::map<std::string, route_policy>          routes;
    // local-first spills a request to a remote backend when this many already wait here for a
    // slot (0: as soon as every slot is busy).
    int32_t overflow_after = 0;
    // balanced routing's prefix affinity: how many leading bytes of a prompt name its prefix
    // (backend/routing.h prefix_key); 0 turns affinity off (fewest in flight only).
    int32_t affinity_bytes = 512;
    // The deadline of a generation request that names none (0: none).
    std::chrono::milliseconds request_timeout{0};
    // A routed request that failed on every backend before any output is tried again this many
    // times, after route_retry_backoff, then twice that, ... (at most 8×; backend/failover.h).
    int32_t                   route_retries = 2;
    std::chrono::milliseconds route_retry_backoff{250};

    // The `sql` tool's databases (--sql-database NAME=PATH), by name: a Responses request enables
    // one with {"type": "sql", "database": NAME} and the server runs the tool loop (agent/).
    std::map<std::string, std::shared_ptr<sql_database>> sql_databases;
    // MCP servers (--mcp-server NAME=stdio:COMMAND), by label: {"type": "mcp", "server_label": NAME}.
    std::map<std::string, std::shared_ptr<mcp_client>> mcp_servers;
    // Teams (--team), by name: each is the model id "team/NAME" on /v1/chat/completions and
    // /v1/responses (agent/team.h), checked at start against the models, databases and MCP servers.
    std::map<std::string, team_spec> teams;
    // Threads that run team members' calls (each waits for a member's whole generation): the most
    // members that run at once on this server, and the most calls of one captain step that do.
    int32_t team_threads = 8;

    // The web console at "/" (--no-console: off), the conversations it keeps (null: storage off,
    // --conversations-max-bytes off or no data directory) and the hardware facts its dashboard
    // shows (a JSON object; may be empty).
    bool                                console = true;
    std::shared_ptr<conversation_store> conversations;
    std::string                         hardware_json;

    // The Files API's storage (/v1/files; files/file_store.h); null: the routes answer 404
    // (--files-max-total-bytes off, or no data directory).
    std::shared_ptr<file_store> files;
    // The Vector Stores API's catalogue (/v1/vector_stores, the file_search tool;
    // retrieval/vector_store_catalog.h); null: the routes answer 404 (no Files API, or
    // --vector-stores-max-count 0). Its files come from `files`.
    std::shared_ptr<retrieval::vector_store_catalog> vector_stores;
    // The hosted model that embeds chunks and queries (--retrieval-embedding-model; "": the
    // default model).
    std::string retrieval_embedding_model;
};

// Everything a generation job needs besides the request: where to report, whom to charge.
struct job_context {
    std::shared_ptr<serving_metrics> metrics;             // may be null
    rate_limiter                    *limiter   = nullptr; // may be null; outlives every job
    size_t                           key_index = 0;
    std::shared_ptr<void>            hold; // keeps the model loaded until the job ends (model_host)
    // Routed requests only (all may be empty): where it ran, once its answer starts (and again
    // when a stream moves); its time to first token and end to end, once it succeeded, by the
    // backend it finished on; the router's own time before a backend had the request.
    std::function<void(const route_info &)>                              on_route;
    std::function<void(const route_info &, double ttft_s, double e2e_s)> on_success;
    std::function<void(double seconds)>                                  on_submit;
};

class api_router;
class answer_writer;

// Who may call a route: anyone (probes), holders of an API key when keys are on, or (metrics)
// anyone when --metrics-public is set and key holders otherwise.
enum class route_access { open, key, metrics };

// What a handler receives besides the exchange.
struct route_call {
    std::string param;         // the value of the route's trailing {param} segment ("" when it has none)
    size_t      key_index = 0; // the caller's API-key index (the anonymous bucket when keys are off)
};

// One row of the route table: the only place a route is described. The router, the 404/405
// answers, CORS preflights, the access log's level and docs/api.md's endpoint list all read it.
struct route_entry {
    const char  *path;         // "/v1/models/{model}": a trailing {param} matches one non-empty segment
    http::verb   verb;         // GET routes also answer HEAD
    route_access access;       //
    bool         rate_limited; // counts against the key's request rate (--rate-limit-rpm)
    bool         probe;        // logged at debug level (health checks and scrapes are frequent)
    size_t       max_body;     // request body limit in bytes; 0: the server's --max-body-bytes;
                               // upload_body: the file store's (--files-max-bytes plus the form)
    void (api_router::*handler)(const std::shared_ptr<http_exchange> &, const route_call &);
    const char *summary; // one line for the docs
};

class api_router {
  public:
    // The route table, and a Markdown rendering of it (what docs/api.md lists).
    static const std::vector<route_entry> &routes();
    static std::string                     routes_markdown();
    // route_entry::max_body of a file upload route: its limit is the file store's.
    static constexpr size_t upload_body = SIZE_MAX;
    // The body limit for a request line: the route's own, else `fallback` (unknown routes and
    // routes without a limit of their own); an upload route's is `upload`, or `fallback` when 0.
    static size_t body_limit_for(std::string_view target, http::verb verb, size_t fallback, size_t upload = 0);
    // body_limit_for with this router's upload limit (the file store's --files-max-bytes plus
    // the form's framing; none without a file store). Thread-safe.
    size_t body_limit(std::string_view target, http::verb verb, size_t fallback) const;

    explicit api_router(api_config cfg);

    // Thread-safe, once. The hosted models (entry 0 is the default model, cfg.model_id) and what
    // is known of each. Until then, readiness, inference, /v1/metadata and /v1/manifest answer 503.
    void set_models(std::shared_ptr<served_models> host, std::vector<hosted_model_info> info);
    // Thread-safe. What is known of entry `index` once it changes (a pulled model's plan).
    void set_model_info(size_t index, hosted_model_info info);
    // Thread-safe. Readiness answers 200 once set: the default model has loaded (its weights may
    // later be unloaded for another model; the server stays ready to route).
    void set_ready();
    void set_draining(bool draining); // readiness turns 503, new inference requests get 503

    void handle(const std::shared_ptr<http_exchange> &ex);

    // Writes one access-log line for a finished exchange (health and metrics probes at debug
    // level, everything else at info).
    static void log_access(const access_record &r);

    const api_config &config() const { return cfg_; }
    // Requests being prepared now (their exchanges are open but no answer has started).
    int64_t preparing() const { return preparing_.load(); }

  private:
    using leased = served_models::lease;
    using use_fn = std::function<void(leased)>;
    // The host, or null while draining (or before set_models).
    std::shared_ptr<served_models> current_host() const;
    hosted_model_info              info_for(size_t index) const;
    std::string                    model_id(size_t index) const; // the host's id for an entry
    // The entry a request's `model` names ("" = the default); answers 404 and returns nullopt.
    std::optional<size_t> route_model(http_exchange &ex, const std::string &requested, bool loras_too);
    // Runs `use` on the exchange's executor with a lease on model `index`, loading it first if
    // needed (bounded wait); answers the error instead when it cannot.
    void with_model(const std::shared_ptr<http_exchange> &ex, size_t index, use_fn use);
    // Route handlers (the table's rows).
    void handle_completions(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_chat(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_responses(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_response_get(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_response_delete(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_response_input_items(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    // The owner of stored responses for an API-key index ("" when keys are off).
    std::string owner_of(size_t key_index) const;
    // Replaces each `item_reference` input item with the stored item it names (404 when none).
    std::optional<error> resolve_item_references(nlohmann::json &body, const std::string &owner) const;
    void                 handle_embeddings_call(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void                 handle_ranking_call(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void                 handle_models(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void                 handle_model(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void                 handle_live(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void                 handle_ready(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void                 handle_version(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void                 handle_metrics(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void                 handle_metadata(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void                 handle_manifest(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    // The console (console_routes.cpp): its page and files, its conversations, its dashboard's series.
    void handle_console_page(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_console_asset(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_conversation_list(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_conversation_create(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_conversation_get(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_conversation_update(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_conversation_delete(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_console_stats(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    // The conversation store, or null after answering 404 (storage is off).
    conversation_store *conversations_or_404(http_exchange &ex) const;
    // The Files API (files.cpp): upload, list, retrieve, content, delete.
    void handle_file_upload(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_file_list(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_file_get(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_file_content(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_file_delete(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    // The file store, or null after answering 404 (the Files API is off).
    file_store *files_or_404(http_exchange &ex) const;
    // The Vector Stores API (vector_stores.cpp): stores, their files, search.
    void handle_vector_store_create(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_vector_store_list(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_vector_store_get(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_vector_store_modify(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_vector_store_delete(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_vector_store_file_add(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_vector_store_file_list(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_vector_store_file_get(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_vector_store_file_update(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_vector_store_file_delete(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    void handle_vector_store_search(const std::shared_ptr<http_exchange> &ex, const route_call &call);
    // The catalogue, or null after answering 404 (vector stores are off).
    retrieval::vector_store_catalog *vector_stores_or_404(http_exchange &ex) const;
    // Runs `use` on the exchange's executor with the retrieval embedding model's embedder and a
    // hold that keeps the model loaded; answers the error instead (not served, cannot embed).
    using embedder_fn = std::function<void(std::shared_ptr<embedder>, std::shared_ptr<void>)>;
    void with_retrieval_embedder(const std::shared_ptr<http_exchange> &ex, embedder_fn use);
    // Queues a file's ingestion (read, extract, chunk, embed, index) on ingest_pool_; the file is
    // marked completed or failed there.
    void start_ingest(const std::string &owner, const retrieval::vector_store_file_record &rec,
                      std::shared_ptr<embedder> emb, std::shared_ptr<void> hold);
    // Hybrid search over the owner's stores: embeds the query on the retrieval embedding model
    // (without blocking a thread), searches on prep_pool_, and calls `done` on `exec` (call it
    // from `exec`; an early failure calls `done` at once).
    using search_done_fn = std::function<void(result<std::vector<retrieval::store_hit>>)>;
    void search_vector_stores(const std::string &owner, const std::vector<std::string> &store_ids,
                              const std::string &query, size_t k, const retrieval::store_search_options &options,
                              const executor_t &exec, search_done_fn done);

    // The model objects GET /v1/models lists (hosted models, then the default model's adapters).
    nlohmann::json model_objects() const;
    void           add_remote_models(nlohmann::json &data) const; // the remote backends' models and placements
    void           handle_documents(const std::shared_ptr<http_exchange> &ex, bool manifest);
    // The built-in tools this server runs (/v1/metadata's builtin_tools): each `sql` database with
    // its tables, each MCP server with its allowed tools.
    nlohmann::json builtin_tools_json() const;
    void           handle_inference(const std::shared_ptr<http_exchange> &ex, api_kind kind, size_t key_index);
    // Checks what needs the backend but no preparation, then hands the request to the
    // preparation pool (template, tokenizer, grammar), after which the job runs on the exchange's
    // executor. `metrics` and `hold` come from the local model when it is a candidate.
    // A request's built-in tools as this server has them (a 400 naming an unknown database, MCP
    // server or tool, or two tools with one name).
    // file_search's stores must be those of the key `key_index`.
    result<builtin_toolbox> resolve_builtin_tools(const api_request &request, size_t key_index) const;
    // The file_search tool's query embedding: leases the retrieval embedding model (waiting up to
    // 2 minutes for a load) and embeds on a worker thread, blocking it.
    query_embedder retrieval_query_embedder() const;
    // A request for "team/NAME" (a configured team): the captain's model and instructions in its
    // place, and req.team set; an error when the team cannot answer it (not a chat request).
    std::optional<error> apply_team(api_request &req) const;
    // Adds a team's members to a request's tools as the captain's tools, each with its own built-in
    // tools (a 400 when a tool of the request has a member's name).
    std::optional<error> add_team_tools(const team_spec &team, builtin_toolbox &box, size_t key_index);
    // A request's `extract` tool (agent/extract.h): its model served here, its files the caller's.
    result<std::shared_ptr<builtin_tool>> extract_tool_for(const builtin_tool_use &t, const std::string &param,
                                                           const std::string &request_model, size_t key_index) const;
    // Runs tasks of the tool loops on prep_pool_, and team members' calls on team_pool_.
    task_poster prep_poster();
    task_poster team_poster();
    // Where a team member's model runs (waits for a hosted model to load; called on the team pool).
    result<member_backend> member_backend_for(const std::string &model) const;
    // Counts and times each built-in call (inferbox_tool_calls_total, inferbox_tool_call_seconds).
    std::function<void(const server_tool_call &, double)> tool_call_metrics() const;
    // Times the loop's own work per step change (inferbox_tool_loop_overhead_seconds).
    std::function<void(double)> tool_step_metrics() const;
    void run_inference(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<generation_backend> backend,
                       std::shared_ptr<serving_metrics> metrics, std::shared_ptr<void> hold, api_request req,
                       std::string served, size_t key_index, std::shared_ptr<answer_writer> writer,
                       bool routed = false);
    // Sequences routed to hosted model `index` by route_request whose jobs have not ended.
    std::shared_ptr<std::atomic<int32_t>> local_counter(size_t index);
    // Requests route_request sent to remote backend `name` whose jobs have not ended.
    std::shared_ptr<std::atomic<int32_t>> remote_counter(const std::string &name);
    // Relays a JSON body (embeddings, ranking) for `model` to the least loaded remote backend
    // that serves it, and its answer back as it is.
    void relay_json(const std::shared_ptr<http_exchange>               &ex,
                    const std::vector<std::shared_ptr<remote_backend>> &remotes, const std::string &path,
                    nlohmann::json body, const std::string &model);
    // The remote backends that serve model `id` now.
    std::vector<std::shared_ptr<remote_backend>> remotes_for(const std::string &id) const;
    // A request for a model some remote backend serves: orders the candidates (the local model
    // when `local` holds a lease on it) by the model's policy and the request's placement, and
    // runs it on the resulting failover_backend.
    void route_request(const std::shared_ptr<http_exchange> &ex, std::optional<leased> local,
                       const std::vector<std::shared_ptr<remote_backend>> &remotes, api_request req, std::string served,
                       size_t key_index, std::shared_ptr<answer_writer> writer);
    // Routes a validated generation request to its model (or adapter) and runs it; `writer` null:
    // the request kind's OpenAI shape.
    void dispatch_inference(const std::shared_ptr<http_exchange> &ex, api_request req, size_t key_index,
                            std::shared_ptr<answer_writer> writer);
    // The placement pin and the deadline from the request's headers (X-Inferbox-Placement,
    // X-Inferbox-Timeout-Ms) and --request-timeout-ms; an error names the header.
    std::optional<error> apply_request_headers(const http_exchange &ex, api_request &req) const;
    // Where a request's model runs: a hosted model, an adapter of the default model (run here), or
    // remote backends only.
    struct model_target {
        std::string                                  wanted;    // the model id asked for (the default's when none)
        std::string                                  served;    // the id the answer names: a hosted model or an adapter
        std::vector<std::shared_ptr<remote_backend>> remotes;   // empty: this server answers alone
        size_t                                       index = 0; // the hosted model's entry
        bool                                         local = true; // false: only remote backends serve it
    };
    // The request's target; nullopt once an error (404 naming what is served, lora_scale on a
    // base model) has been answered. Sets req.lora for an adapter.
    std::optional<model_target> find_target(http_exchange &ex, api_request &req);
    // A request some remote backend could serve: by the model's policy and the placement, the
    // local model (waiting for its load when the policy puts it first) or the remotes.
    void dispatch_routed(const std::shared_ptr<http_exchange> &ex, api_request request, model_target target,
                         size_t key_index, std::shared_ptr<answer_writer> writer);
    void handle_embedding_route(const std::shared_ptr<http_exchange> &ex, bool ranking, size_t key_index);
    bool cors(const std::shared_ptr<http_exchange> &ex, const std::string &methods);

    api_config     cfg_;
    affinity_table affinity_; // balanced routing: prompt prefix -> the backend that served it
    // Where requests are prepared (chat template, tokenizer, grammar compilation), off the I/O
    // threads; preparing_ counts the ones in progress (a draining server does not wait for them).
    boost::asio::thread_pool prep_pool_;
    // Where team members' calls run (agent/team.h: they wait for generations, so never on
    // prep_pool_); null without teams.
    std::shared_ptr<boost::asio::thread_pool> team_pool_;
    // Where files are ingested into vector stores (one thread: each file waits for its
    // embeddings, so never on prep_pool_); null without vector stores.
    std::shared_ptr<boost::asio::thread_pool>                    ingest_pool_;
    std::atomic<int64_t>                                         preparing_{0};
    api_keys                                                     keys_;
    rate_limiter                                                 limiter_;
    mutable std::mutex                                           mu_;
    std::shared_ptr<served_models>                               host_;
    std::vector<hosted_model_info>                               info_;          // set once with host_
    std::map<size_t, std::shared_ptr<std::atomic<int32_t>>>      local_routed_;  // local_counter()
    std::map<std::string, std::shared_ptr<std::atomic<int32_t>>> remote_routed_; // remote_counter()
    bool                                                         ready_    = false;
    bool                                                         draining_ = false;
    int64_t                                                      created_  = 0;
    // The dashboard's series (GET /v1/console/stats): sampled from the hosted models' metrics
    // once set_models() names them. Last, so that its thread stops before the rest goes.
    metrics_timeline timeline_;
};

// Sends an error response (the one error-to-HTTP path for whole responses); `headers` are
// added to the ones the error kind implies (Retry-After for overloaded).
void respond_error(http_exchange &ex, const error &err, header_list headers = {});

} // namespace inferbox

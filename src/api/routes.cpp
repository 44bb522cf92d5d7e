#include "api/routes.h"

#include "api/query_string.h"

#include "agent/extract.h"
#include "agent/tool_loop.h"
#include "api/embeddings.h"
#include "api/errors.h"
#include "api/openai.h"
#include "api/request_context.h"
#include "api/responses.h"
#include "backend/failover.h"
#include "backend/local_backend.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/utf8.h"
#include "files/extract.h"
#include "model/grammar.h"
#include "tools/file_search.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <set>

namespace inferbox {

using json = nlohmann::json;

void respond_error(http_exchange &ex, const error &err, header_list headers) {
    const auto info      = map_error(err.kind);
    const bool has_retry = std::any_of(headers.begin(), headers.end(),
                                       [](const auto &h) { return ascii_iequals(h.first, "Retry-After"); });
    if (err.kind == error_kind::overloaded && !has_retry) {
        headers.emplace_back("Retry-After", "1");
    }
    if (err.kind == error_kind::unauthorized) {
        headers.emplace_back("WWW-Authenticate", "Bearer");
    }
    ex.respond(static_cast<http::status>(info.status), error_body(err), "application/json", headers);
}

api_router::api_router(api_config cfg)
    : cfg_(std::move(cfg)), prep_pool_(static_cast<size_t>(std::max(1, cfg_.prep_threads))), keys_(cfg_.api_keys),
      limiter_(cfg_.rate, keys_.size()),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                   .count()) {
    // Team members' calls, and any request's extractions (agent/extract.h): calls that wait for a
    // whole generation, which the preparation pool must never run.
    team_pool_ = std::make_shared<boost::asio::thread_pool>(static_cast<size_t>(std::max(1, cfg_.team_threads)));
    if (cfg_.vector_stores && !cfg_.files) {
        cfg_.vector_stores.reset(); // its files come from the Files API
    }
    if (cfg_.vector_stores) {
        ingest_pool_ = std::make_shared<boost::asio::thread_pool>(1);
    }
}

void api_router::set_models(std::shared_ptr<served_models> host, std::vector<hosted_model_info> info) {
    const bool none = info.empty();
    {
        std::lock_guard lock(mu_);
        host_ = std::move(host);
        info_ = std::move(info);
    }
    if (none) {
        timeline_.stop(); // no models (shutdown): nothing to sample
        return;
    }
    // Read at each sample: a pulled model's metrics join once its plan is known.
    timeline_.start(
        [this] {
            std::vector<std::shared_ptr<serving_metrics>> sources;
            std::lock_guard                               lock(mu_);
            for (const auto &i : info_) {
                if (i.metrics) {
                    sources.push_back(i.metrics);
                }
            }
            return sources;
        },
        std::chrono::seconds(1));
}

void api_router::set_model_info(size_t index, hosted_model_info info) {
    std::lock_guard lock(mu_);
    if (index < info_.size()) {
        info_[index] = std::move(info);
    }
}

void api_router::set_ready() {
    std::lock_guard lock(mu_);
    ready_ = true;
}

void api_router::set_draining(bool draining) {
    std::lock_guard lock(mu_);
    draining_ = draining;
}

hosted_model_info api_router::info_for(size_t index) const {
    std::lock_guard lock(mu_);
    return index < info_.size() ? info_[index] : hosted_model_info{};
}

std::string api_router::model_id(size_t index) const {
    std::lock_guard lock(mu_);
    return host_ && index < host_->size() ? host_->id(index) : cfg_.model_id;
}

std::shared_ptr<served_models> api_router::current_host() const {
    std::lock_guard lock(mu_);
    return draining_ ? nullptr : host_;
}

std::optional<size_t> api_router::route_model(http_exchange &ex, const std::string &requested, bool loras_too) {
    auto host = current_host();
    if (requested.empty() || !host) {
        return 0;
    }
    if (auto i = host->find(requested)) {
        return i;
    }
    std::string served;
    for (size_t i = 0; i < host->size() && i < 16; ++i) {
        served += (served.empty() ? "'" : ", '") + host->id(i) + "'";
    }
    if (host->size() > 16) {
        served += " and " + std::to_string(host->size() - 16) + " more";
    }
    respond_error(ex, error{error_kind::not_found,
                            "the model '" + requested.substr(0, 200) + "' does not exist; this server serves " +
                                served + (loras_too && cfg_.loras ? " and the LoRA adapters GET /v1/models lists" : ""),
                            "model", "model_not_found"});
    return std::nullopt;
}

void api_router::with_model(const std::shared_ptr<http_exchange> &ex, size_t index, use_fn use) {
    auto host = current_host();
    if (!host) {
        respond_error(*ex, error{error_kind::unavailable,
                                 "the server is not ready (starting or draining); retry shortly", "", "not_ready"});
        return;
    }
    auto answer = [ex, use = std::move(use)](result<leased> r) {
        if (!r) {
            ex->log_field("error", r.err().code.empty() ? std::string(map_error(r.err().kind).type) : r.err().code);
            respond_error(*ex, r.err());
            return;
        }
        use(std::move(*r));
    };
    if (auto now = host->try_acquire(index)) {
        answer(std::move(*now));
        return;
    }
    // The model is not loaded: the host loads it (making room under the memory budget) and calls
    // back on its loader thread; the rest runs on the exchange's executor again.
    ex->log_field("model_load_wait", true);
    host->acquire_async(index, [ex, answer](result<leased> r) {
        boost::asio::post(ex->executor(), [ex, answer, r = std::move(r)]() mutable {
            if (ex->disconnected()) {
                return; // the client left while the model loaded; the lease ends here
            }
            answer(std::move(r));
        });
    });
}

namespace {

void respond_json(http_exchange &ex, const json &j) {
    ex.respond(http::status::ok, j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

} // namespace

const std::vector<route_entry> &api_router::routes() {
    using v                                    = http::verb;
    using a                                    = route_access;
    using r                                    = api_router;
    static const std::vector<route_entry> rows = {
        // path                  verb     access     rate   probe  body  handler
        {"/v1/chat/completions", v::post, a::key, true, false, 0, &r::handle_chat,
         "OpenAI chat completions (streaming, tools, structured output)"},
        {"/v1/completions", v::post, a::key, true, false, 0, &r::handle_completions,
         "OpenAI legacy completions (text or token-id prompts)"},
        {"/v1/responses", v::post, a::key, true, false, 0, &r::handle_responses,
         "OpenAI Responses (input items, function tools, text.format, typed event stream)"},
        {"/v1/responses/{id}", v::get, a::key, false, false, 0, &r::handle_response_get,
         "a stored Response (the caller's own)"},
        {"/v1/responses/{id}", v::delete_, a::key, false, false, 0, &r::handle_response_delete,
         "deletes a stored Response"},
        {"/v1/responses/{id}/input_items", v::get, a::key, false, false, 0, &r::handle_response_input_items,
         "the input items a stored Response answered"},
        {"/v1/embeddings", v::post, a::key, true, false, 0, &r::handle_embeddings_call, "OpenAI embeddings"},
        {"/v1/ranking", v::post, a::key, true, false, 0, &r::handle_ranking_call, "NIM reranking (reranker models)"},
        {"/v1/models", v::get, a::key, false, false, 0, &r::handle_models,
         "the served models and LoRA adapters, with their state"},
        {"/v1/models/{model}", v::get, a::key, false, false, 0, &r::handle_model,
         "one model object as /v1/models lists it; 404 when not served"},
        {"/v1/health/live", v::get, a::open, false, true, 0, &r::handle_live, "liveness: the process answers"},
        {"/v1/health/ready", v::get, a::open, false, true, 0, &r::handle_ready,
         "readiness: the default model is loaded and the engines are healthy"},
        {"/health", v::get, a::open, false, true, 0, &r::handle_ready, "readiness (llama-server's path)"},
        {"/v1/version", v::get, a::key, false, false, 0, &r::handle_version, "the server's version"},
        {"/v1/metadata", v::get, a::key, false, false, 0, &r::handle_metadata,
         "versions, models and the active profile (NIM)"},
        {"/v1/manifest", v::get, a::key, false, false, 0, &r::handle_manifest,
         "every model's profiles with their status (NIM)"},
        {"/", v::get, a::open, false, false, 0, &r::handle_console_page,
         "the web console (playground and dashboard; --no-console turns it off)"},
        {"/assets/{file}", v::get, a::open, false, false, 0, &r::handle_console_asset,
         "the console's files (content-hashed, cached forever)"},
        {"/v1/console/conversations", v::get, a::key, false, false, 0, &r::handle_conversation_list,
         "the caller's console conversations, newest first (`q` searches, `limit`)"},
        {"/v1/console/conversations", v::post, a::key, false, false, 0, &r::handle_conversation_create,
         "stores a new console conversation"},
        {"/v1/console/conversations/{id}", v::get, a::key, false, false, 0, &r::handle_conversation_get,
         "one console conversation with its messages (the JSON export)"},
        {"/v1/console/conversations/{id}", v::post, a::key, false, false, 0, &r::handle_conversation_update,
         "renames a console conversation or replaces its messages or settings"},
        {"/v1/console/conversations/{id}", v::delete_, a::key, false, false, 0, &r::handle_conversation_delete,
         "deletes a console conversation"},
        {"/v1/console/stats", v::get, a::key, false, true, 0, &r::handle_console_stats,
         "the last minutes of throughput, queue, KV-cache use and latency, once a second (`since`)"},
        {"/v1/files", v::post, a::key, true, false, r::upload_body, &r::handle_file_upload,
         "uploads a file (multipart/form-data: file, purpose); up to --files-max-bytes"},
        {"/v1/files", v::get, a::key, false, false, 0, &r::handle_file_list,
         "the caller's files (`purpose`, `limit`, `order`, `after`)"},
        {"/v1/files/{file_id}", v::get, a::key, false, false, 0, &r::handle_file_get, "one file object"},
        {"/v1/files/{file_id}", v::delete_, a::key, false, false, 0, &r::handle_file_delete, "deletes a file"},
        {"/v1/files/{file_id}/content", v::get, a::key, false, false, 0, &r::handle_file_content,
         "a file's bytes as uploaded"},
        {"/v1/vector_stores", v::post, a::key, true, false, 0, &r::handle_vector_store_create,
         "creates a vector store (name, file_ids, chunking_strategy, metadata, expires_after)"},
        {"/v1/vector_stores", v::get, a::key, false, false, 0, &r::handle_vector_store_list,
         "the caller's vector stores (`limit`, `order`, `after`)"},
        {"/v1/vector_stores/{vector_store_id}", v::get, a::key, false, false, 0, &r::handle_vector_store_get,
         "one vector store object"},
        {"/v1/vector_stores/{vector_store_id}", v::post, a::key, false, false, 0, &r::handle_vector_store_modify,
         "renames a vector store or replaces its metadata or expires_after"},
        {"/v1/vector_stores/{vector_store_id}", v::delete_, a::key, false, false, 0, &r::handle_vector_store_delete,
         "deletes a vector store and its index"},
        {"/v1/vector_stores/{vector_store_id}/files", v::post, a::key, true, false, 0, &r::handle_vector_store_file_add,
         "adds a file of /v1/files to a vector store (ingested in the background)"},
        {"/v1/vector_stores/{vector_store_id}/files", v::get, a::key, false, false, 0,
         &r::handle_vector_store_file_list, "a vector store's files (`limit`, `order`, `after`, `filter`)"},
        {"/v1/vector_stores/{vector_store_id}/files/{file_id}", v::get, a::key, false, false, 0,
         &r::handle_vector_store_file_get, "one vector store file, with its status and last_error"},
        {"/v1/vector_stores/{vector_store_id}/files/{file_id}", v::post, a::key, false, false, 0,
         &r::handle_vector_store_file_update, "replaces a vector store file's attributes"},
        {"/v1/vector_stores/{vector_store_id}/files/{file_id}", v::delete_, a::key, false, false, 0,
         &r::handle_vector_store_file_delete, "removes a file from a vector store (the file itself stays)"},
        {"/v1/vector_stores/{vector_store_id}/search", v::post, a::key, true, false, 0, &r::handle_vector_store_search,
         "hybrid search of a vector store (query, max_num_results, filters, ranking_options)"},
        {"/metrics", v::get, a::metrics, false, true, 0, &r::handle_metrics, "Prometheus metrics"},
        {"/v1/metrics", v::get, a::metrics, false, true, 0, &r::handle_metrics, "Prometheus metrics (NIM's path)"},
    };
    return rows;
}

namespace {

// Matches a request path against a table path, segment by segment. A "{param}" segment matches
// one non-empty segment, which goes to `param`; a path with two has both, joined by '/' (a
// segment never holds one).
bool path_matches(std::string_view pattern, std::string_view target, std::string &param) {
    if (pattern.find('{') == std::string_view::npos) {
        return pattern == target;
    }
    size_t p = 0;
    size_t t = 0;
    while (p < pattern.size() && t < target.size()) {
        if (pattern[p] == '{') {
            const auto close = pattern.find('}', p);
            const auto slash = target.find('/', t);
            const auto seg   = target.substr(t, slash == std::string_view::npos ? std::string_view::npos : slash - t);
            if (seg.empty() || close == std::string_view::npos) {
                return false;
            }
            param = param.empty() ? std::string(seg) : param + "/" + std::string(seg);
            p     = close + 1;
            t += seg.size();
            continue;
        }
        if (pattern[p] != target[t]) {
            return false;
        }
        ++p;
        ++t;
    }
    return p == pattern.size() && t == target.size();
}

struct route_lookup {
    const route_entry *found      = nullptr; // the row for this path and method
    bool               path_known = false;
    std::string        methods; // what the path allows ("GET, HEAD", "POST")
    std::string        param;
};

route_lookup find_route(std::string_view target, http::verb method) {
    route_lookup out;
    for (const auto &r : api_router::routes()) {
        std::string param;
        if (!path_matches(r.path, target, param)) {
            continue;
        }
        out.path_known = true;
        out.methods += std::string(out.methods.empty() ? "" : ", ") +
                       (r.verb == http::verb::get ? "GET, HEAD" : std::string(http::to_string(r.verb)));
        if (method == r.verb || (method == http::verb::head && r.verb == http::verb::get)) {
            out.found = &r;
            out.param = std::move(param);
        }
    }
    return out;
}

// The key a request presents: "Authorization: Bearer KEY" (what the OpenAI SDKs send), or
// "api-key: KEY" / "x-api-key: KEY" for clients of other APIs.
std::string_view presented_key(const http::request<http::string_body> &req) {
    const auto auth = req[http::field::authorization];
    if (auth.size() > 7 && ascii_iequals(std::string_view(auth.data(), 7), "Bearer ")) {
        auto k = auth.substr(7);
        while (!k.empty() && k.front() == ' ') {
            k.remove_prefix(1);
        }
        return {k.data(), k.size()};
    }
    for (const char *name : {"api-key", "x-api-key"}) {
        if (auto it = req.find(name); it != req.end()) {
            return {it->value().data(), it->value().size()};
        }
    }
    return {};
}

} // namespace

std::string api_router::routes_markdown() {
    std::string out = "| method | path | access | rate limit | what it does |\n|---|---|---|---|---|\n";
    for (const auto &r : routes()) {
        const char *access = r.access == route_access::open  ? "open"
                             : r.access == route_access::key ? "key"
                                                             : "key, or open with --metrics-public";
        out += "| " + std::string(http::to_string(r.verb)) + " | `" + r.path + "` | " + access + " | " +
               (r.rate_limited ? "per key" : "no") + " | " + r.summary + " |\n";
    }
    return out;
}

size_t api_router::body_limit_for(std::string_view target, http::verb verb, size_t fallback, size_t upload) {
    if (auto q = target.find('?'); q != std::string_view::npos) {
        target = target.substr(0, q);
    }
    const auto hit = find_route(target, verb);
    if (hit.found == nullptr || hit.found->max_body == 0) {
        return fallback;
    }
    if (hit.found->max_body == upload_body) {
        return upload > 0 ? upload : fallback;
    }
    return hit.found->max_body;
}

size_t api_router::body_limit(std::string_view target, http::verb verb, size_t fallback) const {
    const size_t upload =
        cfg_.files ? static_cast<size_t>(cfg_.files->limits().max_file_bytes + file_upload_overhead_bytes) : 0;
    return body_limit_for(target, verb, fallback, upload);
}

bool api_router::cors(const std::shared_ptr<http_exchange> &ex, const std::string &methods) {
    const auto &req    = ex->request();
    const auto  origin = req[http::field::origin];
    if (cfg_.cors_origins.empty() || origin.empty()) {
        return false;
    }
    const bool any     = std::find(cfg_.cors_origins.begin(), cfg_.cors_origins.end(), "*") != cfg_.cors_origins.end();
    const bool allowed = any || std::find(cfg_.cors_origins.begin(), cfg_.cors_origins.end(), std::string(origin)) !=
                                    cfg_.cors_origins.end();
    if (!allowed) {
        return false;
    }
    ex->add_response_header("Access-Control-Allow-Origin", any ? "*" : std::string(origin));
    ex->add_response_header("Vary", "Origin");
    ex->add_response_header("Access-Control-Expose-Headers", "X-Request-Id, traceparent, Retry-After");
    if (req.method() != http::verb::options) {
        return false;
    }
    // Preflight: answered here, before authentication (browsers send no credentials on it).
    ex->respond(http::status::no_content, "", "text/plain",
                {{"Access-Control-Allow-Methods", methods + ", OPTIONS"},
                 {"Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id, traceparent, api-key, "
                                                  "x-api-key, OpenAI-Organization, OpenAI-Project"},
                 {"Access-Control-Max-Age", "600"}});
    return true;
}

void api_router::handle(const std::shared_ptr<http_exchange> &ex) {
    const auto &req    = ex->request();
    std::string target = std::string(req.target());
    if (auto q = target.find('?'); q != std::string::npos) {
        target.resize(q);
    }
    const auto method = req.method();

    // Identity first, so every answer (errors included) carries it.
    const std::string rid = request_id_from(req["X-Request-Id"]);
    ex->add_response_header("X-Request-Id", rid);
    ex->log_field("request_id", rid);
    const auto trace = trace_from(req["traceparent"]);
    ex->add_response_header("traceparent", trace.header());
    ex->log_field("trace_id", trace.trace_id);
    if (!trace.parent_id.empty()) {
        ex->log_field("parent_span_id", trace.parent_id);
    }

    auto hit = find_route(target, method);
    if (hit.path_known && cors(ex, hit.methods)) {
        return;
    }
    if (!hit.path_known) {
        respond_error(*ex, error{error_kind::not_found,
                                 "no route for " + std::string(req.method_string()) + " " + target.substr(0, 200), "",
                                 "not_found"});
        return;
    }
    if (hit.found == nullptr) {
        respond_error(*ex,
                      error{error_kind::method_not_allowed,
                            "method " + std::string(req.method_string()) + " is not allowed on " +
                                target.substr(0, 200) + " (use " + hit.methods + ")",
                            "", "method_not_allowed"},
                      {{"Allow", hit.methods}});
        return;
    }
    const route_entry &r = *hit.found;
    route_call         call;
    call.key_index = keys_.size(); // the anonymous bucket when keys are off
    if (auto decoded = percent_decoded(hit.param)) {
        call.param = std::move(*decoded);
    } else {
        respond_error(
            *ex, error::invalid("the path segment '" + hit.param.substr(0, 200) + "' has a malformed percent-escape",
                                "", "invalid_path"));
        return;
    }

    // Authentication: every route but the probes (and metrics, when configured public).
    const bool needs_key = r.access == route_access::key || (r.access == route_access::metrics && !cfg_.metrics_public);
    if (keys_.enabled() && needs_key) {
        const auto presented = presented_key(req);
        const auto match     = presented.empty() ? std::nullopt : keys_.match(presented);
        if (!match) {
            respond_error(*ex, error{error_kind::unauthorized,
                                     presented.empty()
                                         ? "this server requires an API key: send \"Authorization: Bearer <key>\""
                                         : "the API key is not valid",
                                     "", "invalid_api_key"});
            return;
        }
        call.key_index = *match;
        ex->log_field("key", std::to_string(*match));
    }

    if (r.rate_limited && limiter_.enabled()) {
        if (const auto wait = limiter_.admit_request(call.key_index)) {
            const auto secs = std::to_string(static_cast<int64_t>(*wait));
            respond_error(*ex,
                          error{error_kind::overloaded,
                                "rate limit reached for this API key (" +
                                    std::to_string(static_cast<int64_t>(cfg_.rate.requests_per_minute)) +
                                    " requests and " +
                                    std::to_string(static_cast<int64_t>(cfg_.rate.tokens_per_minute)) +
                                    " tokens per minute; 0 = unlimited); retry in " + secs + " s",
                                "", "rate_limit_exceeded"},
                          {{"Retry-After", secs}});
            return;
        }
    }
    (this->*r.handler)(ex, call);
}

void api_router::handle_completions(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    handle_inference(ex, api_kind::completion, call.key_index);
}

void api_router::handle_chat(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    handle_inference(ex, api_kind::chat, call.key_index);
}

void api_router::handle_embeddings_call(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    handle_embedding_route(ex, false, call.key_index);
}

void api_router::handle_ranking_call(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    handle_embedding_route(ex, true, call.key_index);
}

void api_router::handle_live(const std::shared_ptr<http_exchange> &ex, const route_call & /*call*/) {
    respond_json(*ex, {{"object", "health.response"}, {"message", "live"}});
}

void api_router::handle_ready(const std::shared_ptr<http_exchange> &ex, const route_call & /*call*/) {
    auto host = current_host();
    bool ready;
    {
        std::lock_guard lock(mu_);
        ready = ready_;
    }
    bool healthy = true;
    if (host) {
        for (const auto &m : host->loaded()) {
            healthy = healthy && m->healthy();
        }
    }
    if (host && ready && healthy) {
        respond_json(*ex, {{"object", "health.response"}, {"message", "ready"}});
        return;
    }
    const char *why =
        !host || !ready ? "not ready: the model is loading or the server is draining" : "not ready: the engine failed";
    respond_error(*ex, error{error_kind::unavailable, why, "", "not_ready"});
}

void api_router::handle_version(const std::shared_ptr<http_exchange> &ex, const route_call & /*call*/) {
    respond_json(*ex, {{"version", cfg_.version}, {"release", cfg_.version}, {"api", "openai"}});
}

void api_router::handle_metrics(const std::shared_ptr<http_exchange> &ex, const route_call & /*call*/) {
    ex->respond(http::status::ok, cfg_.metrics_registry ? cfg_.metrics_registry->render() : std::string(),
                "text/plain; version=0.0.4; charset=utf-8");
}

void api_router::handle_metadata(const std::shared_ptr<http_exchange> &ex, const route_call & /*call*/) {
    handle_documents(ex, false);
}

void api_router::handle_manifest(const std::shared_ptr<http_exchange> &ex, const route_call & /*call*/) {
    handle_documents(ex, true);
}

void api_router::log_access(const access_record &r) {
    log_fields f;
    f.reserve(r.fields.size() + 8);
    f.emplace_back("method", r.method);
    f.emplace_back("path", r.target);
    f.emplace_back("status", static_cast<int64_t>(r.status));
    f.emplace_back("bytes", static_cast<int64_t>(r.bytes_sent));
    f.emplace_back("duration_ms", r.seconds * 1000.0);
    f.emplace_back("remote", r.remote);
    if (r.client_gone) {
        f.emplace_back("client_gone", true);
    }
    f.insert(f.end(), r.fields.begin(), r.fields.end());
    std::string path = r.target;
    if (auto q = path.find('?'); q != std::string::npos) {
        path.resize(q);
    }
    const auto hit   = find_route(path, http::verb::get);
    const bool probe = hit.found != nullptr && hit.found->probe;
    log_event(probe ? spdlog::level::debug : spdlog::level::info, "request", f);
}

json api_router::model_objects() const {
    auto host = current_host();
    json data = json::array();
    if (!host) {
        return data;
    }
    std::vector<hosted_model_info> info;
    {
        std::lock_guard lock(mu_);
        info = info_;
    }
    const auto views = host->snapshot();
    for (size_t i = 0; i < views.size(); ++i) {
        const auto &v     = views[i];
        json        model = {{"id", v.id},
                             {"object", "model"},
                             {"created", created_},
                             {"owned_by", "inferbox"},
                             {"root", v.id},
                             {"parent", nullptr},
                             {"ready", v.state == hosted_state::loaded},
                             {"status", hosted_state_name(v.state)},
                             {"memory_bytes", v.memory_bytes}};
        int32_t     n_ctx = i < info.size() ? info[i].n_ctx_slot : 0;
        if (auto inst = host->peek(i)) {
            n_ctx = inst->eng->n_ctx_slot();
        }
        if (n_ctx > 0) {
            model["max_model_len"] = n_ctx;
        }
        if (v.state == hosted_state::pulling) {
            // Start remote, move home: the download's progress; `error` says what it is doing.
            model["pull"] = {{"received_bytes", v.pull_received}};
            if (v.pull_total > 0) {
                model["pull"]["total_bytes"] = v.pull_total;
            }
        }
        if (!v.error.empty()) {
            model[v.state == hosted_state::pulling ? "status_detail" : "error"] = v.error;
        }
        data.push_back(std::move(model));
        if (i == 0 && cfg_.loras) {
            for (const auto &l : cfg_.loras->list()) {
                json a      = data.back();
                a["id"]     = l.name;
                a["parent"] = v.id;
                a["lora"]   = {{"file_bytes", l.file_size}, {"parameters", l.n_params}};
                a.erase("memory_bytes");
                data.push_back(std::move(a));
            }
        }
    }
    add_remote_models(data);
    // Teams (--team): a model id each, answered by the captain and its members.
    for (const auto &[name, t] : cfg_.teams) {
        json members = json::array();
        for (const auto &m : t.members) {
            members.push_back({{"name", m.name}, {"model", m.model}, {"tools", m.tools}});
        }
        data.push_back({{"id", "team/" + name},
                        {"object", "model"},
                        {"created", created_},
                        {"owned_by", "inferbox"},
                        {"root", "team/" + name},
                        {"parent", nullptr},
                        {"ready", true},
                        {"status", "team"},
                        {"team", {{"captain", {{"model", t.captain_model}}}, {"members", std::move(members)}}}});
    }
    return data;
}

void api_router::add_remote_models(json &data) const {
    // Where each model can run: "local" for what this server hosts, then each remote backend
    // that serves it with its state; models only remote backends serve are listed too.
    std::map<std::string, json> placements;
    std::vector<std::string>    remote_only;
    for (const auto &b : cfg_.backends) {
        const auto  st    = b->status();
        const char *state = !st.reachable                       ? "unreachable"
                            : st.circuit == circuit_state::open ? "circuit_open"
                            : st.cooldown_ms > 0                ? "cooling_down"
                                                                : "available";
        for (const auto &m : b->models()) {
            auto &p = placements[m.id];
            if (p.is_null()) {
                p               = json::array();
                const bool here = std::any_of(data.begin(), data.end(), [&](const json &d) { return d["id"] == m.id; });
                if (!here) {
                    remote_only.push_back(m.id);
                }
            }
            p.push_back({{"backend", b->name()}, {"state", state}, {"in_flight", st.in_flight}});
        }
    }
    if (placements.empty()) {
        return;
    }
    for (auto &d : data) {
        auto it = placements.find(d["id"].get<std::string>());
        json p  = json::array({{{"backend", "local"}, {"state", d.value("status", "loaded")}}});
        if (it != placements.end()) {
            for (const auto &r : it->second) {
                p.push_back(r);
            }
        }
        if (d.value("status", "") == "pulling") {
            p.front()["pull"] = d["pull"];
            // Servable now, remotely, while it downloads.
            d["ready"] = std::any_of(p.begin(), p.end(), [](const json &r) { return r["state"] == "available"; });
        }
        d["placements"] = std::move(p);
    }
    for (const auto &id : remote_only) {
        const auto &p     = placements[id];
        const bool  ready = std::any_of(p.begin(), p.end(), [](const json &r) { return r["state"] == "available"; });
        data.push_back({{"id", id},
                        {"object", "model"},
                        {"created", created_},
                        {"owned_by", p.front()["backend"]},
                        {"root", id},
                        {"parent", nullptr},
                        {"ready", ready},
                        {"status", "remote"},
                        {"placements", p}});
    }
}

void api_router::handle_models(const std::shared_ptr<http_exchange> &ex, const route_call & /*call*/) {
    respond_json(*ex, {{"object", "list"}, {"data", model_objects()}});
}

void api_router::handle_model(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    for (auto &m : model_objects()) {
        if (m["id"] == call.param) {
            respond_json(*ex, m);
            return;
        }
    }
    // Model ids may hold '/' (ORG/NAME): a client sends them percent-encoded in the path.
    respond_error(*ex, error{error_kind::not_found,
                             "the model '" + call.param.substr(0, 200) +
                                 "' does not exist; GET /v1/models lists what this server serves (an id with '/' "
                                 "is sent percent-encoded, as %2F)",
                             "model", "model_not_found"});
}

void api_router::handle_documents(const std::shared_ptr<http_exchange> &ex, bool manifest) {
    std::shared_ptr<served_models> host;
    std::vector<hosted_model_info> info;
    {
        std::lock_guard lock(mu_);
        host = host_;
        info = info_;
    }
    if (!host || info.empty()) {
        respond_error(
            *ex, error{error_kind::unavailable, "not ready: the model files are still being read", "", "not_ready"});
        return;
    }
    const auto views  = host->snapshot();
    auto       parsed = [](const std::string &s, const json &fallback) {
        return s.empty() ? fallback : json::parse(s, nullptr, false);
    };
    json models = json::array();
    for (size_t i = 0; i < views.size() && i < info.size(); ++i) {
        json m = {{"id", views[i].id},
                  {"architecture", info[i].architecture},
                  {"file_bytes", info[i].file_bytes},
                  {"status", hosted_state_name(views[i].state)},
                  {"memory_bytes", views[i].memory_bytes},
                  {"loads", views[i].loads},
                  {"unloads", views[i].unloads}};
        if (!views[i].error.empty()) {
            m["error"] = views[i].error;
        }
        if (manifest) {
            m["profiles"] = parsed(info[i].profiles_json, json::array());
        } else {
            m["profile"] = parsed(info[i].profile_json, nullptr);
        }
        models.push_back(std::move(m));
    }
    json doc;
    if (manifest) {
        doc = {{"object", "manifest"},
               {"model", views.front().id},
               {"budget_bytes", host->budget_bytes()},
               {"profiles", parsed(info.front().profiles_json, json::array())},
               {"models", std::move(models)}};
    } else {
        doc = {{"object", "metadata"},
               {"version", cfg_.version},
               {"llama_cpp", cfg_.llama_cpp_version},
               {"models", std::move(models)},
               {"profile", parsed(info.front().profile_json, nullptr)},
               {"memory_budget_bytes", host->budget_bytes()},
               {"resident_bytes", host->resident_bytes()},
               // What the engine takes from the profile (with --profile; otherwise the flags).
               {"applied_settings",
                {"threads", "parallel", "ctx_size", "batch_size", "kv_cache_type", "flash_attn", "mmap", "mlock",
                 "gpu_layers"}},
               {"builtin_tools", builtin_tools_json()}};
    }
    respond_json(*ex, doc);
}

json api_router::builtin_tools_json() const {
    json sql = json::array();
    for (const auto &[name, db] : cfg_.sql_databases) {
        json tables = json::array();
        for (const auto &t : db->schema()) {
            tables.push_back(t.name);
        }
        sql.push_back({{"database", name},
                       {"engine", sql_database::is_postgres_target(db->display()) ? "postgresql" : "sqlite"},
                       {"tables", std::move(tables)}});
    }
    json mcp = json::array();
    for (const auto &[label, client] : cfg_.mcp_servers) {
        json tools = json::array();
        for (const auto &t : client->tools()) {
            tools.push_back({{"name", t.name}, {"description", t.description}});
        }
        mcp.push_back({{"server_label", label}, {"tools", std::move(tools)}});
    }
    // file_search is the request's own ({"type": "file_search", "vector_store_ids": [...]}): here
    // only whether this server has vector stores at all.
    return {{"sql", std::move(sql)},
            {"mcp", std::move(mcp)},
            {"file_search", {{"enabled", cfg_.vector_stores != nullptr}}}};
}

void api_router::handle_embedding_route(const std::shared_ptr<http_exchange> &ex, bool ranking, size_t key_index) {
    // Parsed once here: the body's model decides which embedder answers.
    auto body = parse_json_body(ex->request().body(), cfg_.limits.max_json_depth);
    if (!body) {
        respond_error(*ex, body.err());
        return;
    }
    std::string requested;
    if (body->is_object() && body->contains("model") && (*body)["model"].is_string()) {
        requested = (*body)["model"].get<std::string>();
    }
    // A model only remote backends serve: the body goes to one of them as it is.
    if (!requested.empty()) {
        auto host = current_host();
        if (!(host && host->find(requested)) && requested != cfg_.model_id) {
            if (auto remotes = remotes_for(requested); !remotes.empty()) {
                relay_json(ex, remotes, ranking ? "/ranking" : "/embeddings", std::move(*body), requested);
                return;
            }
        }
    }
    auto       parsed = std::make_shared<const json>(std::move(*body));
    const auto index  = route_model(*ex, requested, false);
    if (!index) {
        return;
    }
    with_model(ex, *index, [this, ex, ranking, key_index, parsed](const leased &m) {
        embedding_route_context ec;
        ec.model_id       = model_id(m.index());
        ec.limits         = cfg_.embedding;
        ec.max_json_depth = cfg_.limits.max_json_depth;
        ec.metrics        = info_for(m.index()).embed_metrics;
        ec.limiter        = limiter_.enabled() ? &limiter_ : nullptr;
        ec.key_index      = key_index;
        ec.hold           = m.hold();
        (ranking ? handle_ranking : handle_embeddings)(ex, m->emb, ec, *parsed);
    });
}

void api_router::relay_json(const std::shared_ptr<http_exchange>               &ex,
                            const std::vector<std::shared_ptr<remote_backend>> &remotes, const std::string &path,
                            json body, const std::string &model) {
    // The least loaded backend with room; the others when it refuses at once.
    auto ordered = remotes;
    std::stable_sort(ordered.begin(), ordered.end(),
                     [](const auto &a, const auto &b) { return a->status().in_flight < b->status().in_flight; });
    std::optional<error> first;
    for (const auto &b : ordered) {
        body["model"] = b->remote_id_of(model);
        auto call     = b->relay(path, dump_json(body), [ex, name = b->name()](result<remote_backend::relayed> r) {
            boost::asio::post(ex->executor(), [ex, name, r = std::move(r)]() mutable {
                if (ex->disconnected()) {
                    return;
                }
                ex->add_response_header("X-Inferbox-Backend", name);
                ex->add_response_header("X-Inferbox-Route", "remote");
                ex->log_field("backend", name);
                if (!r) {
                    respond_error(*ex, r.err());
                    return;
                }
                ex->respond(static_cast<http::status>(r->status), std::move(r->body),
                            r->content_type.empty() ? std::string("application/json") : r->content_type);
            });
        });
        if (call) {
            ex->on_disconnect([c = *call] { c->cancel(); });
            return;
        }
        if (!first) {
            first = call.err();
        }
    }
    respond_error(*ex, *first);
}

namespace {

// A team request's tool_choice (the body's "model" is "team/NAME" of a configured team), taken out
// of the body for the captain's loop (api_request::builtin_choice): "auto", "none", "required",
// a member by name ({"type": "function", "name": MEMBER}, Responses' shape, or chat's
// {"type": "function", "function": {"name": MEMBER}}) as "team:NAME:MEMBER", or a client
// function as "function:NAME". Nothing for other requests.
std::optional<error> take_team_choice(json &body, const std::map<std::string, team_spec> &teams,
                                      std::optional<std::string> &choice) {
    if (!body.is_object() || !body.contains("model") || !body["model"].is_string()) {
        return std::nullopt;
    }
    const auto model = body["model"].get<std::string>();
    const auto it    = model.rfind("team/", 0) == 0 ? teams.find(model.substr(5)) : teams.end();
    if (it == teams.end() || !body.contains("tool_choice") || body["tool_choice"].is_null()) {
        return std::nullopt;
    }
    const json tc = body["tool_choice"];
    if (tc.is_object() && tc.value("type", std::string()) != "function") {
        return std::nullopt; // {"type": "sql"}, {"type": "mcp", ...}: the request's own built-in tools
    }
    body.erase("tool_choice");
    if (tc.is_string() && (tc == "auto" || tc == "none" || tc == "required")) {
        choice = tc.get<std::string>();
        return std::nullopt;
    }
    const json *name = nullptr;
    if (tc.is_object()) {
        if (tc.contains("name")) {
            name = &tc["name"];
        } else if (tc.contains("function") && tc["function"].is_object() && tc["function"].contains("name")) {
            name = &tc["function"]["name"];
        }
    }
    if (name == nullptr || !name->is_string()) {
        return error::invalid("tool_choice for a team must be \"auto\", \"none\", \"required\" or {\"type\": "
                              "\"function\", \"name\": MEMBER}",
                              "tool_choice");
    }
    const auto &n       = name->get_ref<const std::string &>();
    const auto &members = it->second.members;
    const bool  member  = std::any_of(members.begin(), members.end(), [&](const auto &m) { return m.name == n; });
    choice              = member ? "team:" + it->first + ":" + n : "function:" + n;
    return std::nullopt;
}

} // namespace

void api_router::handle_inference(const std::shared_ptr<http_exchange> &ex, api_kind kind, size_t key_index) {
    if (failpoint("INFERBOX_FAILPOINT_HANDLER_THROW")) {
        throw std::runtime_error("failpoint: the handler throws"); // test builds: the catch-all's test
    }
    key_order order;
    auto      body = parse_json_body(ex->request().body(), cfg_.limits.max_json_depth, &order);
    if (!body) {
        respond_error(*ex, body.err());
        return;
    }
    std::optional<std::string> team_choice;
    if (auto err = take_team_choice(*body, cfg_.teams, team_choice)) {
        respond_error(*ex, *err);
        return;
    }
    auto req = parse_request(kind, *body, cfg_.limits, &order);
    if (!req) {
        respond_error(*ex, req.err());
        return;
    }
    if (team_choice) {
        req->builtin_choice = *team_choice;
    }
    dispatch_inference(ex, std::move(*req), key_index, nullptr);
}

namespace {

// The 404 for a response id this caller has not stored (or a server that stores none).
error response_not_found(const std::string &id, const char *param, bool storing) {
    return error{error_kind::not_found,
                 "no stored response '" + id.substr(0, 64) + "'" +
                     (storing ? "" : " (this server stores none: --store-max-bytes off)"),
                 param, "response_not_found"};
}

} // namespace

std::string api_router::owner_of(size_t key_index) const {
    return keys_.enabled() && key_index < cfg_.api_keys.size() ? response_owner(cfg_.api_keys[key_index])
                                                               : std::string();
}

void api_router::handle_responses(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    key_order order;
    auto      body = parse_json_body(ex->request().body(), cfg_.limits.max_json_depth, &order);
    if (!body) {
        respond_error(*ex, body.err());
        return;
    }
    // previous_response_id: the stored run's input and output come before this input. Only
    // "input" is replaced, so the order recorded for the schemas elsewhere in the body holds.
    const std::string owner    = owner_of(call.key_index);
    const json       *previous = body->contains("previous_response_id") && !(*body)["previous_response_id"].is_null()
                                     ? &(*body)["previous_response_id"]
                                     : nullptr;
    std::string       previous_id;
    if (previous != nullptr) {
        if (!previous->is_string() || previous->get_ref<const std::string &>().size() > 256) {
            respond_error(
                *ex, error::invalid("previous_response_id must be a response id (a string)", "previous_response_id"));
            return;
        }
        previous_id = previous->get<std::string>();
        auto stored = cfg_.responses ? cfg_.responses->get(owner, previous_id) : std::nullopt;
        if (!stored) {
            respond_error(*ex, response_not_found(previous_id, "previous_response_id", cfg_.responses != nullptr));
            return;
        }
        (*body)["input"] = continued_input(*stored, body->contains("input") ? (*body)["input"] : json(nullptr));
    }
    if (auto err = resolve_item_references(*body, owner)) {
        respond_error(*ex, *err);
        return;
    }
    const json                 sent_choice = body->value("tool_choice", json("auto"));
    std::optional<std::string> team_choice;
    if (auto err = take_team_choice(*body, cfg_.teams, team_choice)) {
        respond_error(*ex, *err);
        return;
    }
    auto req = parse_responses_request(*body, cfg_.limits, &order);
    if (!req) {
        respond_error(*ex, req.err());
        return;
    }
    if (team_choice) {
        req->chat.builtin_choice = *team_choice;
        req->echo.tool_choice    = sent_choice;
    }
    if (!previous_id.empty()) {
        req->echo.previous_response_id = previous_id;
    }
    if (cfg_.responses && req->echo.store) {
        // Kept before the answer goes out, so a client may continue from it at once.
        req->echo.on_complete =
            [store = cfg_.responses, owner,
             items = input_items_of(body->contains("input") ? (*body)["input"] : json(nullptr))](const json &response) {
                if (auto err = store->put(owner, response, items)) {
                    spdlog::warn("response {} was not stored: {}", response.value("id", std::string()), err->message);
                }
            };
    }
    dispatch_inference(ex, std::move(req->chat), call.key_index, make_responses_writer(std::move(req->echo)));
}

std::optional<error> api_router::resolve_item_references(json &body, const std::string &owner) const {
    if (!body.contains("input") || !body["input"].is_array()) {
        return std::nullopt;
    }
    auto &input = body["input"];
    for (size_t i = 0; i < input.size(); ++i) {
        auto &item = input[i];
        if (!item.is_object() || item.value("type", std::string()) != "item_reference") {
            continue;
        }
        const std::string param = "input[" + std::to_string(i) + "].id";
        if (!item.contains("id") || !item["id"].is_string()) {
            return error::invalid(param + " must be the id of a stored item", param);
        }
        auto stored = cfg_.responses ? cfg_.responses->item(owner, item["id"].get<std::string>()) : std::nullopt;
        if (!stored) {
            return error{error_kind::not_found,
                         "no stored item '" + item["id"].get<std::string>().substr(0, 64) + "'" +
                             (cfg_.responses ? "" : " (this server stores none: --store-max-bytes off)"),
                         param, "item_not_found"};
        }
        item = std::move(*stored);
    }
    return std::nullopt;
}

void api_router::handle_response_get(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto stored = cfg_.responses ? cfg_.responses->get(owner_of(call.key_index), call.param) : std::nullopt;
    if (!stored) {
        respond_error(*ex, response_not_found(call.param, "id", cfg_.responses != nullptr));
        return;
    }
    respond_json(*ex, stored->response);
}

void api_router::handle_response_delete(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    if (!cfg_.responses || !cfg_.responses->remove(owner_of(call.key_index), call.param)) {
        respond_error(*ex, response_not_found(call.param, "id", cfg_.responses != nullptr));
        return;
    }
    respond_json(*ex, {{"id", call.param}, {"object", "response"}, {"deleted", true}});
}

void api_router::handle_response_input_items(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto stored = cfg_.responses ? cfg_.responses->get(owner_of(call.key_index), call.param) : std::nullopt;
    if (!stored) {
        respond_error(*ex, response_not_found(call.param, "id", cfg_.responses != nullptr));
        return;
    }
    // OpenAI lists them newest first by default (order=desc); ?order=asc gives the input's order.
    json       items = stored->input_items;
    const auto query = ex->request().target();
    if (query.find("order=asc") == boost::beast::string_view::npos) {
        std::reverse(items.begin(), items.end());
    }
    json page        = {{"object", "list"}, {"data", items}, {"has_more", false}};
    page["first_id"] = items.empty() ? json(nullptr) : items.front().value("id", json(nullptr));
    page["last_id"]  = items.empty() ? json(nullptr) : items.back().value("id", json(nullptr));
    respond_json(*ex, page);
}

std::optional<error> api_router::apply_request_headers(const http_exchange &ex, api_request &req) const {
    // The placement pin: the header wins over nvext.placement.
    if (auto h = ex.request().find("X-Inferbox-Placement"); h != ex.request().end()) {
        auto pin = parse_placement(std::string(h->value()), "X-Inferbox-Placement");
        if (!pin) {
            return pin.err();
        }
        req.placement = *pin;
    }
    // The deadline: the header wins over nvext.timeout_ms, which wins over --request-timeout-ms.
    if (auto h = ex.request().find("X-Inferbox-Timeout-Ms"); h != ex.request().end()) {
        const std::string v(h->value());
        int64_t           ms = 0;
        const auto        rc = std::from_chars(v.data(), v.data() + v.size(), ms);
        if (rc.ec != std::errc() || rc.ptr != v.data() + v.size() || ms < 1 || ms > 3'600'000) {
            return error::invalid("X-Inferbox-Timeout-Ms must be an integer from 1 to 3600000, got '" +
                                      v.substr(0, 32) + "'",
                                  "X-Inferbox-Timeout-Ms");
        }
        req.timeout = std::chrono::milliseconds(ms);
    }
    if (!req.timeout && cfg_.request_timeout.count() > 0) {
        req.timeout = cfg_.request_timeout;
    }
    if (req.timeout) {
        req.deadline = ex.received() + *req.timeout;
    }
    return std::nullopt;
}

std::optional<api_router::model_target> api_router::find_target(http_exchange &ex, api_request &req) {
    // A hosted model's id, a LoRA adapter of the default model, a model only remote backends
    // serve, or none (the default).
    model_target t;
    t.wanted  = req.model.empty() ? cfg_.model_id : req.model;
    t.remotes = remotes_for(t.wanted);
    t.served  = cfg_.model_id;
    if (!req.model.empty() && req.model != cfg_.model_id) {
        auto host    = current_host();
        auto hosted  = host ? host->find(req.model) : std::nullopt;
        auto adapter = !hosted && cfg_.loras ? cfg_.loras->find(req.model) : std::nullopt;
        if (hosted) {
            t.index  = *hosted;
            t.served = req.model;
        } else if (adapter) {
            req.lora = lora_choice{adapter->name, adapter->path.string(), req.lora_scale.value_or(1.0f)};
            t.served = adapter->name;
            t.remotes.clear(); // an adapter of this server's model runs here
        } else if (!t.remotes.empty()) {
            t.local  = false;
            t.served = req.model;
        } else {
            route_model(ex, req.model, true); // answers 404 naming what is served
            return std::nullopt;
        }
    }
    if (req.lora_scale && !req.lora) {
        respond_error(
            ex, error::invalid("lora_scale applies to a LoRA adapter's model id; '" + t.served + "' is a base model",
                               "lora_scale"));
        return std::nullopt;
    }
    return t;
}

void api_router::dispatch_inference(const std::shared_ptr<http_exchange> &ex, api_request request, size_t key_index,
                                    std::shared_ptr<answer_writer> writer) {
    if (auto err = apply_request_headers(*ex, request)) {
        respond_error(*ex, *err);
        return;
    }
    if (auto err = apply_team(request)) {
        respond_error(*ex, *err);
        return;
    }
    auto target = find_target(*ex, request);
    if (!target) {
        return;
    }
    if (!request.team.empty()) {
        target->served = "team/" + request.team; // what the answer names; the captain's model runs it
    }
    if (!target->remotes.empty()) {
        dispatch_routed(ex, std::move(request), std::move(*target), key_index, std::move(writer));
        return;
    }
    if (request.placement == placement_pin::remote_only) {
        respond_error(*ex, error{error_kind::unavailable,
                                 "the request is pinned remote-only, but no remote backend serves the model '" +
                                     target->served + "'",
                                 "model", "no_backend"});
        return;
    }
    // No routing: the local model answers, as a single backend.
    auto shared_req = std::make_shared<api_request>(std::move(request));
    with_model(ex, target->index,
               [this, ex, shared_req, served = target->served, key_index, writer = std::move(writer)](const leased &m) {
                   auto backend = std::make_shared<local_backend>(m->eng, cfg_.limits.guided);
                   run_inference(ex, std::move(backend), info_for(m.index()).metrics, m.hold(), std::move(*shared_req),
                                 served, key_index, writer);
               });
}

void api_router::dispatch_routed(const std::shared_ptr<http_exchange> &ex, api_request request, model_target target,
                                 size_t key_index, std::shared_ptr<answer_writer> writer) {
    request.model        = target.wanted;
    const auto policy_it = cfg_.routes.find(target.wanted);
    const auto policy    = policy_it == cfg_.routes.end() ? route_policy::automatic : policy_it->second;
    const bool local_excluded =
        !target.local || request.placement == placement_pin::remote_only || policy == route_policy::remote_only;
    auto host = current_host();
    if (local_excluded || !host) {
        route_request(ex, std::nullopt, target.remotes, std::move(request), target.served, key_index,
                      std::move(writer));
        return;
    }
    if (auto now = host->try_acquire(target.index)) {
        // Loaded: a lease. A recent load failure, or a pull in progress: the remote backends
        // only, unless the request may not leave this box: then why it cannot run here.
        if (!*now && (request.placement == placement_pin::local_only || policy == route_policy::local_only)) {
            respond_error(*ex, now->err());
            return;
        }
        std::optional<leased> lease;
        if (*now) {
            lease = std::move(**now);
        }
        route_request(ex, std::move(lease), target.remotes, std::move(request), target.served, key_index,
                      std::move(writer));
        return;
    }
    // The local model is not loaded. Policies that put it first wait for it (a load that fails
    // leaves the remote backends); the others go remote now.
    const bool wait = policy == route_policy::automatic || policy == route_policy::local_first ||
                      policy == route_policy::local_only || request.placement == placement_pin::local_only;
    if (!wait) {
        route_request(ex, std::nullopt, target.remotes, std::move(request), target.served, key_index,
                      std::move(writer));
        return;
    }
    ex->log_field("model_load_wait", true);
    auto shared_req = std::make_shared<api_request>(std::move(request));
    host->acquire_async(target.index, [this, ex, shared_req, remotes = std::move(target.remotes),
                                       served = std::move(target.served), key_index,
                                       writer = std::move(writer)](result<leased> r) mutable {
        boost::asio::post(ex->executor(), [this, ex, shared_req, remotes = std::move(remotes), served, key_index,
                                           writer = std::move(writer), r = std::move(r)]() mutable {
            if (ex->disconnected()) {
                return;
            }
            std::optional<leased> lease;
            if (r) {
                lease = std::move(*r);
            }
            route_request(ex, std::move(lease), remotes, std::move(*shared_req), served, key_index, std::move(writer));
        });
    });
}

std::shared_ptr<std::atomic<int32_t>> api_router::local_counter(size_t index) {
    std::lock_guard lock(mu_);
    auto           &c = local_routed_[index];
    if (!c) {
        c = std::make_shared<std::atomic<int32_t>>(0);
    }
    return c;
}

std::shared_ptr<std::atomic<int32_t>> api_router::remote_counter(const std::string &name) {
    std::lock_guard lock(mu_);
    auto           &c = remote_routed_[name];
    if (!c) {
        c = std::make_shared<std::atomic<int32_t>>(0);
    }
    return c;
}

std::vector<std::shared_ptr<remote_backend>> api_router::remotes_for(const std::string &id) const {
    std::vector<std::shared_ptr<remote_backend>> out;
    for (const auto &b : cfg_.backends) {
        if (b->serves(id)) {
            out.push_back(b);
        }
    }
    return out;
}

namespace {

// The text a request's prompt begins with, for prefix affinity: the first messages (chat) or the
// first prompt (completions), at least `bytes` of it when the prompt is that long.
std::string prompt_head(const api_request &req, size_t bytes) {
    std::string head;
    for (const auto &m : req.messages) {
        head += m.role;
        head += '\n';
        head += m.content.substr(0, bytes);
        if (head.size() >= bytes) {
            break;
        }
    }
    if (!req.prompts.empty()) {
        if (const auto *s = std::get_if<std::string>(&req.prompts.front())) {
            head += s->substr(0, bytes);
        }
    }
    return head;
}

} // namespace

void api_router::route_request(const std::shared_ptr<http_exchange> &ex, std::optional<leased> local,
                               const std::vector<std::shared_ptr<remote_backend>> &remotes, api_request req,
                               std::string served, size_t key_index, std::shared_ptr<answer_writer> writer) {
    const auto policy_it = cfg_.routes.find(req.model);
    const auto policy    = policy_it == cfg_.routes.end() ? route_policy::automatic : policy_it->second;
    const auto n_sequences =
        static_cast<int32_t>(std::max<size_t>(1, req.kind == api_kind::chat ? 1 : req.prompts.size())) * req.n;
    std::vector<candidate_load>  loads;
    std::vector<route_candidate> all;
    // Per candidate, the router's own count of what it routed there whose jobs have not ended:
    // the engine's and a remote's counts miss requests still being prepared, so a burst would
    // otherwise see the same loads for all of its requests and send them all to one place.
    std::vector<std::shared_ptr<std::atomic<int32_t>>> routed;
    std::shared_ptr<serving_metrics>                   metrics;
    std::shared_ptr<void>                              hold;
    if (local) {
        auto       lb    = std::make_shared<local_backend>((*local)->eng, cfg_.limits.guided);
        const auto stats = (*local)->eng->stats();
        routed.push_back(local_counter(local->index())); // sequences
        const auto busy = std::max(stats.n_running + stats.n_waiting, routed.back()->load());
        const auto cap  = (*local)->eng->config().parallel + cfg_.overflow_after;
        const bool room = !lb->over_capacity(n_sequences) && busy + n_sequences <= cap;
        loads.push_back({"local", true, room, busy});
        all.push_back({lb, "local"});
        metrics = info_for(local->index()).metrics;
        hold    = local->hold();
    }
    for (const auto &r : remotes) {
        routed.push_back(remote_counter(r->name())); // requests
        loads.push_back(
            {r->name(), false, !r->over_capacity(1), std::max(r->status().in_flight, routed.back()->load())});
        all.push_back({r, r->name()});
    }
    // Prefix affinity (balanced only; --route-affinity-bytes 0 turns it off).
    const auto     affinity_bytes = static_cast<size_t>(std::max(0, cfg_.affinity_bytes));
    const bool     affine         = policy == route_policy::balanced && affinity_bytes > 0;
    const uint64_t prefix         = affine ? prefix_key(prompt_head(req, affinity_bytes), affinity_bytes) : 0;
    auto order = order_candidates(policy, req.placement, loads, affine ? affinity_.find(prefix) : "", req.model);
    if (order.err) {
        respond_error(*ex, *order.err);
        return;
    }
    std::vector<route_candidate> ordered;
    for (const size_t i : order.order) {
        ordered.push_back(all[i]);
    }
    if (affine) {
        affinity_.remember(prefix, ordered.front().name);
    }
    {
        // Counted until the job ends (the hold lives as long as the job).
        const size_t  first = order.order.front();
        const int32_t n     = loads[first].local ? n_sequences : 1;
        routed[first]->fetch_add(n);
        hold = std::shared_ptr<void>(nullptr,
                                     [lease = std::move(hold), c = routed[first], n](void *) { c->fetch_sub(n); });
    }
    retry_policy retry;
    retry.max_retries = cfg_.route_retries;
    retry.backoff     = cfg_.route_retry_backoff;
    retry.max_backoff = cfg_.route_retry_backoff * 8;
    retry.schedule    = [exec = ex->executor()](std::chrono::milliseconds delay, std::function<void()> fn) {
        auto timer = std::make_shared<boost::asio::steady_timer>(exec, delay);
        timer->async_wait([timer, fn = std::move(fn)](const boost::system::error_code &ec) {
            if (!ec) { // aborted only when the server stops: the host's shutdown ends the request
                fn();
            }
        });
    };
    run_inference(ex, std::make_shared<failover_backend>(std::move(ordered), order.reason, std::move(retry)),
                  std::move(metrics), std::move(hold), std::move(req), std::move(served), key_index, std::move(writer),
                  /*routed=*/true);
}

std::function<void(const server_tool_call &, double)> api_router::tool_call_metrics() const {
    if (!cfg_.metrics_registry) {
        return {};
    }
    return [reg = cfg_.metrics_registry](const server_tool_call &c, double seconds) {
        if (c.type == "team_member_call") {
            return; // a team's member calls have metrics of their own (add_team_tools)
        }
        static const std::vector<double> buckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                    0.5,   1.0,    2.5,   5.0,  10.0,  30.0, 60.0};
        // An extraction's item carries a record in `server` (agent/extract.h): its label is the model.
        const std::string server = c.type == "extract_call" ? extract_call_item(c).value("model", "") : c.server;
        const label_list  l      = {{"type", c.type}, {"server", server}, {"tool", c.name}};
        auto              with   = l;
        with.emplace_back("outcome", c.error.empty() ? "ok" : "error");
        reg->add_counter("inferbox_tool_calls_total", "Built-in tool calls the server ran (tool loop), by outcome.",
                         with)
            .inc();
        reg->add_histogram("inferbox_tool_call_seconds", "Time of built-in tool calls the server ran.", buckets, l)
            .observe(seconds);
    };
}

std::function<void(double)> api_router::tool_step_metrics() const {
    if (!cfg_.metrics_registry) {
        return {};
    }
    return [reg = cfg_.metrics_registry](double seconds) {
        static const std::vector<double> buckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
        reg->add_histogram("inferbox_tool_loop_overhead_seconds",
                           "The tool loop's own time per step change: from a step's last event to the next step's "
                           "submission, less the tools' time.",
                           buckets)
            .observe(seconds);
    };
}

namespace {

// `owner`'s files as text, for extractions (agent/extract.h); empty when the Files API is off.
// Another key's file is file_not_found, exactly as a missing one.
file_text_source file_text_of(std::shared_ptr<file_store> store, std::string owner) {
    if (!store) {
        return {};
    }
    return [store = std::move(store), owner = std::move(owner)](const std::string &id,
                                                                size_t             max_bytes) -> result<file_text> {
        auto rec = store->get(owner, id);
        if (!rec) {
            return file_not_found(id);
        }
        auto bytes = store->content(owner, id);
        if (!bytes) {
            return bytes.err();
        }
        auto text = extract_text(*bytes, rec->filename, max_bytes);
        if (!text) {
            return text.err();
        }
        return file_text{rec->filename, std::move(*text)};
    };
}

} // namespace

result<builtin_toolbox> api_router::resolve_builtin_tools(const api_request &request, size_t key_index) const {
    builtin_toolbox                            box;
    std::vector<std::shared_ptr<sql_database>> dbs;
    const auto                                 known = [](const auto &map) {
        std::string names;
        for (const auto &[name, v] : map) {
            names += (names.empty() ? "" : ", ") + name;
        }
        return names;
    };
    for (size_t i = 0; i < request.builtin_tools.size(); ++i) {
        const auto       &t     = request.builtin_tools[i];
        const std::string param = "tools[" + std::to_string(i) + "]";
        if (t.type == "file_search") {
            // The caller's own stores only: another key's store is as unknown as a missing one.
            if (!cfg_.vector_stores) {
                return error::invalid("file_search needs vector stores, which are off on this server", param + ".type",
                                      "vector_stores_off");
            }
            const std::string owner = owner_of(key_index);
            for (const auto &id : t.allowed) {
                if (auto store = cfg_.vector_stores->get(owner, id); !store || store->expired) {
                    auto err  = store ? retrieval::vector_store_expired(*store) : retrieval::vector_store_not_found(id);
                    err.param = param + ".vector_store_ids";
                    return err;
                }
            }
            file_search_spec spec;
            spec.catalog                 = cfg_.vector_stores;
            spec.owner                   = owner;
            spec.store_ids               = t.allowed;
            spec.max_num_results         = std::clamp<size_t>(t.max_results, 1, 50); // checked 1..50 by the parser
            spec.options.filter          = t.filter;
            spec.options.score_threshold = t.score_threshold;
            spec.embed                   = retrieval_query_embedder();
            box.tools.push_back(make_file_search_tool(std::move(spec)));
            continue;
        }
        if (t.type == "extract") {
            auto tool = extract_tool_for(t, param, request.model, key_index);
            if (!tool) {
                return tool.err();
            }
            box.tools.push_back(std::move(*tool));
            continue;
        }
        if (t.type == "sql") {
            auto it = cfg_.sql_databases.find(t.server);
            if (it == cfg_.sql_databases.end()) {
                const auto names = known(cfg_.sql_databases);
                return error::invalid(
                    "no SQL database '" + t.server + "' on this server" +
                        (names.empty() ? std::string(" (it has none: --sql-database)") : " (it has: " + names + ")"),
                    param + ".database", "unknown_database");
            }
            if (std::find(dbs.begin(), dbs.end(), it->second) == dbs.end()) {
                dbs.push_back(it->second);
            }
            continue;
        }
        auto it = cfg_.mcp_servers.find(t.server);
        if (it == cfg_.mcp_servers.end()) {
            const auto names = known(cfg_.mcp_servers);
            return error::invalid(
                "no MCP server '" + t.server + "' on this server" +
                    (names.empty() ? std::string(" (it has none: --mcp-server)") : " (it has: " + names + ")"),
                param + ".server_label", "unknown_mcp_server");
        }
        const auto tools = it->second->tools();
        for (const auto &name : t.allowed) {
            if (std::none_of(tools.begin(), tools.end(), [&](const auto &x) { return x.name == name; })) {
                return error::invalid("the MCP server '" + t.server + "' offers no tool '" + name + "' here",
                                      param + ".allowed_tools", "unknown_tool");
            }
        }
        for (const auto &tool : tools) {
            if (t.allowed.empty() || std::find(t.allowed.begin(), t.allowed.end(), tool.name) != t.allowed.end()) {
                box.tools.push_back(make_mcp_tool(it->second, tool));
            }
        }
    }
    for (const auto &db : dbs) {
        box.tools.push_back(make_sql_tool(db, dbs.size() > 1 ? "sql_" + db->name() : "sql"));
    }
    std::set<std::string> names;
    for (const auto &t : box.tools) {
        if (auto name = t->function().name; !names.insert(name).second) {
            return error::invalid("two enabled tools are named '" + name + "' (narrow them with allowed_tools)",
                                  "tools", "duplicate_tool");
        }
    }
    return box;
}

result<std::shared_ptr<builtin_tool>> api_router::extract_tool_for(const builtin_tool_use &t, const std::string &param,
                                                                   const std::string &request_model,
                                                                   size_t             key_index) const {
    const auto served = [this](const std::string &m) {
        auto host = current_host();
        return m.rfind("team/", 0) != 0 && ((host && host->find(m)) || !remotes_for(m).empty());
    };
    extract_spec spec;
    // The request's model when it is one a backend serves (not a LoRA adapter), else the default.
    spec.model = !t.server.empty() ? t.server : served(request_model) ? request_model : cfg_.model_id;
    if (!served(spec.model)) {
        return error::invalid("the extraction's model '" + spec.model +
                                  "' is not served or routed by this server (name a model of /v1/models; not a "
                                  "team or an adapter)",
                              param + ".model", "model_not_found");
    }
    const std::string owner = owner_of(key_index);
    if (!t.allowed.empty() && !cfg_.files) {
        return error::invalid("file_ids needs the Files API, which is off on this server", param + ".file_ids",
                              "files_off");
    }
    for (const auto &id : t.allowed) {
        // The caller's own files only: another key's file is as unknown as a missing one.
        if (!cfg_.files->get(owner, id)) {
            auto err  = file_not_found(id);
            err.param = param + ".file_ids";
            return err;
        }
    }
    spec.name         = t.name;
    spec.description  = t.description;
    spec.schema       = t.schema;
    spec.schema_param = param + ".schema";
    spec.instructions = t.instructions;
    spec.file_ids     = t.allowed;
    spec.max_tokens   = t.max_output_tokens;
    extract_runtime rt;
    rt.resolve = [this](const std::string &model) { return member_backend_for(model); };
    rt.files   = file_text_of(cfg_.files, owner);
    return make_extract_tool(std::move(spec), std::move(rt));
}

task_poster api_router::prep_poster() {
    return [this](std::function<void()> task) {
        boost::asio::post(prep_pool_, [task = std::move(task)] {
            try {
                task();
            } catch (const std::exception &e) {
                spdlog::error("unexpected exception in a tool loop step: {}", e.what());
            }
        });
    };
}

task_poster api_router::team_poster() {
    return [pool = std::weak_ptr<boost::asio::thread_pool>(team_pool_)](std::function<void()> task) {
        if (auto p = pool.lock()) {
            boost::asio::post(*p, [task = std::move(task)] {
                try {
                    task();
                } catch (const std::exception &e) {
                    spdlog::error("unexpected exception in a team member's call: {}", e.what());
                }
            });
        }
    };
}

std::optional<error> api_router::apply_team(api_request &req) const {
    const auto it = req.model.rfind("team/", 0) == 0 ? cfg_.teams.find(req.model.substr(5)) : cfg_.teams.end();
    if (it == cfg_.teams.end()) {
        return std::nullopt; // not a team of this server: the model's lookup answers
    }
    if (req.kind != api_kind::chat) {
        return error::invalid("the team '" + req.model +
                                  "' answers chat requests (/v1/chat/completions, /v1/responses), not completions",
                              "model");
    }
    if (req.n != 1) {
        return error::invalid("a team answers with one choice (n must be 1)", "n");
    }
    const auto &team = it->second;
    req.team         = team.name;
    req.model        = team.captain_model;
    if (!team.captain_instructions.empty()) {
        if (!req.messages.empty() && req.messages.front().role == "system") {
            req.messages.front().content = team.captain_instructions + "\n\n" + req.messages.front().content;
        } else {
            req.messages.insert(req.messages.begin(), chat_message{"system", team.captain_instructions, {}, ""});
        }
    }
    return std::nullopt;
}

std::optional<error> api_router::add_team_tools(const team_spec &team, builtin_toolbox &box, size_t key_index) {
    team_runtime rt;
    rt.files        = file_text_of(cfg_.files, owner_of(key_index));
    rt.resolve      = [this](const std::string &model) { return member_backend_for(model); };
    rt.post         = prep_poster();
    rt.on_tool_call = tool_call_metrics();
    if (cfg_.metrics_registry) {
        rt.on_member_call = [reg = cfg_.metrics_registry, name = team.name](const std::string &member,
                                                                            const std::string &outcome, double s) {
            static const std::vector<double> buckets = {0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0};
            reg->add_counter("inferbox_team_member_calls_total",
                             "Team member calls (a captain's call to a member), by outcome (ok, error, budget, "
                             "timeout, cancelled).",
                             {{"team", name}, {"member", member}, {"outcome", outcome}})
                .inc();
            reg->add_histogram("inferbox_team_member_call_seconds", "Time of team member calls, start to answer.",
                               buckets, {{"team", name}, {"member", member}})
                .observe(s);
        };
    }
    for (const auto &m : team.members) {
        builtin_toolbox                            own;
        std::vector<std::shared_ptr<sql_database>> dbs;
        for (const auto &t : m.tools) {
            const auto name = t.substr(t.find(':') + 1);
            if (t.rfind("sql:", 0) == 0) {
                if (auto db = cfg_.sql_databases.find(name); db != cfg_.sql_databases.end()) {
                    dbs.push_back(db->second);
                }
            } else if (auto mcp = cfg_.mcp_servers.find(name); mcp != cfg_.mcp_servers.end()) {
                for (const auto &tool : mcp->second->tools()) {
                    own.tools.push_back(make_mcp_tool(mcp->second, tool));
                }
            }
        }
        for (const auto &db : dbs) {
            own.tools.push_back(make_sql_tool(db, dbs.size() > 1 ? "sql_" + db->name() : "sql"));
        }
        std::set<std::string> names;
        own.tools.erase(std::remove_if(own.tools.begin(), own.tools.end(),
                                       [&](const auto &t) { return !names.insert(t->function().name).second; }),
                        own.tools.end());
        for (const auto &t : box.tools) {
            if (t->function().name == m.name) {
                return error::invalid("a built-in tool of the request is named '" + m.name +
                                          "', the name of a member of the team '" + team.name + "'",
                                      "tools", "duplicate_tool");
            }
        }
        box.tools.push_back(make_team_member_tool(team.name, m, std::move(own), rt));
    }
    return std::nullopt;
}

result<member_backend> api_router::member_backend_for(const std::string &model) const {
    auto                         host    = current_host();
    const auto                   index   = host ? host->find(model) : std::nullopt;
    const auto                   remotes = remotes_for(model);
    std::vector<route_candidate> candidates;
    member_backend               out;
    if (index) {
        auto lease = host->acquire_blocking(*index); // bounded: the host's load wait
        if (lease) {
            candidates.push_back({std::make_shared<local_backend>((*lease)->eng, cfg_.limits.guided), "local"});
            out.hold = lease->hold();
        } else if (remotes.empty()) {
            return lease.err();
        }
    }
    for (const auto &r : remotes) {
        candidates.push_back({r, r->name()});
    }
    if (candidates.empty()) {
        return error{error_kind::not_found, "the model '" + model + "' is not served here", "model", "model_not_found"};
    }
    out.where = candidates.front().name;
    if (candidates.size() == 1 && index) {
        out.backend = candidates.front().backend;
        return out;
    }
    out.backend = std::make_shared<failover_backend>(std::move(candidates), index ? "local" : "remote");
    return out;
}

void api_router::run_inference(const std::shared_ptr<http_exchange> &ex, std::shared_ptr<generation_backend> backend,
                               std::shared_ptr<serving_metrics> metrics, std::shared_ptr<void> hold,
                               api_request request, std::string served, size_t key_index,
                               std::shared_ptr<answer_writer> writer, bool routed) {
    // Built-in tools (Responses): the tool loop runs them around whatever backend was chosen, each
    // of its steps a generation there; its own work runs on the preparation pool.
    if (!request.builtin_tools.empty() || !request.team.empty()) {
        auto box = resolve_builtin_tools(request, key_index);
        if (!box) {
            respond_error(*ex, box.err());
            return;
        }
        tool_loop_limits limits{std::chrono::milliseconds(120'000), tool_call_metrics(), tool_step_metrics()};
        if (auto team = cfg_.teams.find(request.team); team != cfg_.teams.end()) {
            // A team's captain: its members are its tools, and they run on the team pool.
            if (auto err = add_team_tools(team->second, *box, key_index)) {
                respond_error(*ex, *err);
                return;
            }
            limits.max_parallel = std::max(1, cfg_.team_threads);
            limits.run_calls    = team_poster();
        } else if (std::any_of(request.builtin_tools.begin(), request.builtin_tools.end(),
                               [](const builtin_tool_use &t) { return t.type == "extract"; })) {
            // An extraction waits for a whole generation: never on the preparation pool.
            limits.run_calls = team_poster();
        }
        backend = std::make_shared<tool_loop_backend>(std::move(backend), std::move(*box), prep_poster(), limits);
    }
    // An invalid request is a 400 whatever the load: the checks that need the backend but no
    // preparation come before the capacity check.
    if (auto err = backend->check(request)) {
        respond_error(*ex, *err);
        return;
    }
    // Full slots and queue refuse before tokenization and grammar compilation: under overload
    // the excess costs as little as possible (submit still decides for the ones that pass).
    const auto n_sequences =
        static_cast<int32_t>(std::max<size_t>(1, request.kind == api_kind::chat ? 1 : request.prompts.size())) *
        request.n;
    if (auto full = backend->over_capacity(n_sequences)) {
        if (metrics) {
            metrics->requests_started.inc();
            metrics->failure(failure_reason::overloaded).inc();
        }
        ex->log_field("error", full->code);
        respond_error(*ex, *full);
        return;
    }

    job_context jc;
    jc.metrics   = std::move(metrics);
    jc.limiter   = limiter_.enabled() ? &limiter_ : nullptr;
    jc.key_index = key_index;
    jc.hold      = std::move(hold); // keeps the local model loaded while the pool works on it
    if (routed && cfg_.metrics_registry) {
        jc.on_route = [reg = cfg_.metrics_registry](const route_info &r) {
            reg->add_counter("inferbox_routed_requests_total",
                             "Routed requests by where they ran and why (local, remote, overflow, fallback, affinity, "
                             "balanced, pinned).",
                             {{"backend", r.backend}, {"route", r.reason}})
                .inc();
        };
        static const std::vector<double> seconds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                    0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   2.5,
                                                    5.0,    10.0,    30.0,   60.0,  120.0,  300.0};
        jc.on_success = [reg = cfg_.metrics_registry](const route_info &r, double ttft, double e2e) {
            const label_list l = {{"backend", r.backend}};
            reg->add_histogram("inferbox_backend_time_to_first_token_seconds",
                               "Time to first token of routed requests, by the backend they finished on.", seconds, l)
                .observe(ttft);
            reg->add_histogram("inferbox_backend_e2e_request_latency_seconds",
                               "End-to-end latency of routed requests, by the backend they finished on.", seconds, l)
                .observe(e2e);
        };
        // The router's own time is a fraction of a millisecond: buckets fine enough there to tell
        // 0.2 from 0.4 ms (docs/benchmarks.md, "Routing").
        static const std::vector<double> overhead_seconds = {0.00005, 0.0001, 0.00015, 0.0002, 0.00025, 0.0003,
                                                             0.0004,  0.0005, 0.00075, 0.001,  0.0025,  0.005,
                                                             0.01,    0.025,  0.05,    0.1,    0.25,    1.0};

        jc.on_submit = [reg = cfg_.metrics_registry](double s) {
            reg->add_histogram("inferbox_router_overhead_seconds",
                               "Time from a routed request's arrival until a backend has it (parsing, routing, "
                               "preparation).",
                               overhead_seconds)
                .observe(s);
        };
    }
    preparing_.fetch_add(1);
    // Preparation (template, tokenizer, grammar) runs on the pool: its cost grows with the prompt
    // (and, for some inputs, faster), and an I/O thread must stay free for probes and other
    // connections. The job then starts on the exchange's executor.
    auto shared_req = std::make_shared<api_request>(std::move(request));
    boost::asio::post(prep_pool_, [this, ex, shared_req, backend, jc = std::move(jc), served = std::move(served),
                                   writer = std::move(writer)]() mutable {
        std::optional<result<backend_request>> prepared;
        try {
            prepared.emplace(backend->prepare(std::move(*shared_req)));
        } catch (const std::exception &e) {
            // llama.cpp's chat and tokenizer code may throw on inputs (or models) it cannot handle.
            prepared.emplace(error{error_kind::internal, std::string("preparing the request failed: ") + e.what(), "",
                                   "internal_error"});
        }
        preparing_.fetch_sub(1);
        boost::asio::post(ex->executor(), [ex, backend = std::move(backend), prepared = std::move(*prepared),
                                           jc = std::move(jc), served = std::move(served),
                                           writer = std::move(writer)]() mutable {
            if (ex->disconnected()) {
                return;
            }
            if (!prepared) {
                respond_error(*ex, prepared.err());
                return;
            }
            ex->log_field("model", served);
            run_completion(ex, std::move(backend), std::move(*prepared), served, std::move(jc), std::move(writer));
        });
    });
}

} // namespace inferbox

// The console's routes (api_router's handle_console_* and handle_conversation_*): the embedded
// page and its files, the conversations the page keeps on the server, and the dashboard's series.
// Everything here is an ordinary API route: the page calls it with the user's key like any client.

#include "api/errors.h"
#include "api/json_body.h"
#include "api/query_string.h"
#include "api/routes.h"
#include "console/assets.h"

#include <charconv>
#include <optional>

namespace inferbox {

using json = nlohmann::json;

namespace {

// The page runs only its own bundled script and style; it talks only to this server; nothing may
// frame it. Model output is rendered as text nodes by the page, and this policy is the second
// wall should markup ever slip through.
constexpr const char *console_csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
                                    "frame-ancestors 'none'; form-action 'self'";

void serve_asset(http_exchange &ex, std::string_view path, bool enabled) {
    const console_asset *found = nullptr;
    if (enabled) {
        for (const auto &a : console_assets()) {
            if (a.path == path) {
                found = &a;
                break;
            }
        }
    }
    if (found == nullptr) {
        respond_error(ex, error{error_kind::not_found,
                                !enabled ? "the web console is turned off on this server (--no-console)"
                                : console_assets().empty() ? "this build has no web console (-DINFERBOX_CONSOLE=OFF)"
                                                           : "no console file " + std::string(path.substr(0, 200)),
                                "", "not_found"});
        return;
    }
    // The encoding is chosen first: each encoding is a representation of its own, with its own
    // strong validator (a cache must never revalidate the gzip bytes for a client without gzip).
    const bool  gz   = !found->gzip.empty() && accepts_gzip(ex.request()[http::field::accept_encoding]);
    std::string etag = std::string(found->etag);
    if (gz && etag.size() >= 2 && etag.back() == '"') {
        etag.insert(etag.size() - 1, "-gzip");
    }
    header_list headers = {
        {"Cache-Control", found->immutable ? "public, max-age=31536000, immutable" : "no-cache"},
        {"ETag", etag},
        {"Vary", "Accept-Encoding"},
        {"X-Content-Type-Options", "nosniff"},
        {"Referrer-Policy", "no-referrer"},
        {"Content-Security-Policy", console_csp},
        {"X-Frame-Options", "DENY"},
    };
    const auto inm = ex.request()[http::field::if_none_match];
    if (!inm.empty() && (inm == "*" || if_none_match_lists(inm, etag))) {
        ex.respond(http::status::not_modified, "", std::string(found->content_type), headers);
        return;
    }
    if (gz) {
        headers.emplace_back("Content-Encoding", "gzip");
    }
    ex.respond(http::status::ok, std::string(gz ? found->gzip : found->body), std::string(found->content_type),
               headers);
}

void respond_object(http_exchange &ex, const json &j, http::status status = http::status::ok) {
    ex.respond(status, j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// A store call's outcome: its object, or its error.
void respond_outcome(http_exchange &ex, const result<json> &r) {
    if (!r) {
        respond_error(ex, r.err());
        return;
    }
    respond_object(ex, *r);
}

json sample_json(const timeline_sample &s) {
    const auto opt = [](const std::optional<double> &v) { return v ? json(*v) : json(nullptr); };
    return json{{"t", s.t_ms},
                {"output_tokens_per_s", s.output_tokens_per_s},
                {"prompt_tokens_per_s", s.prompt_tokens_per_s},
                {"requests_running", s.requests_running},
                {"requests_waiting", s.requests_waiting},
                {"kv_cache_usage", s.kv_cache_usage},
                {"ttft_ms", opt(s.ttft_ms)},
                {"itl_ms", opt(s.itl_ms)}};
}

} // namespace

void api_router::handle_console_page(const std::shared_ptr<http_exchange> &ex, const route_call & /*call*/) {
    serve_asset(*ex, "/", cfg_.console);
}

void api_router::handle_console_asset(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    serve_asset(*ex, "/assets/" + call.param, cfg_.console);
}

conversation_store *api_router::conversations_or_404(http_exchange &ex) const {
    if (!cfg_.conversations) {
        respond_error(ex, error{error_kind::not_found,
                                "conversation storage is off on this server (--conversations-max-bytes off, or "
                                "no data directory)",
                                "", "conversations_off"});
    }
    return cfg_.conversations.get();
}

void api_router::handle_conversation_list(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *store = conversations_or_404(*ex);
    if (store == nullptr) {
        return;
    }
    auto params = query_params(ex->request().target());
    if (!params) {
        respond_error(*ex, params.err());
        return;
    }
    int32_t limit = 50;
    if (auto it = params->find("limit"); it != params->end()) {
        const auto &v  = it->second;
        auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), limit);
        if (ec != std::errc() || end != v.data() + v.size()) {
            respond_error(
                *ex, error::invalid("limit must be an integer from 1 to 100, got '" + v.substr(0, 50) + "'", "limit"));
            return;
        }
    }
    const auto q    = params->count("q") != 0 ? params->at("q") : std::string();
    auto       rows = store->list(owner_of(call.key_index), q, limit);
    if (!rows) {
        respond_error(*ex, rows.err());
        return;
    }
    json data = json::array();
    for (const auto &r : *rows) {
        data.push_back(to_json(r));
    }
    respond_object(*ex, {{"object", "list"}, {"data", std::move(data)}});
}

void api_router::handle_conversation_create(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *store = conversations_or_404(*ex);
    if (store == nullptr) {
        return;
    }
    auto body = parse_json_body(ex->request().body(), cfg_.limits.max_json_depth);
    if (!body) {
        respond_error(*ex, body.err());
        return;
    }
    respond_outcome(*ex, store->create(owner_of(call.key_index), *body));
}

void api_router::handle_conversation_get(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *store = conversations_or_404(*ex);
    if (store == nullptr) {
        return;
    }
    auto found = store->get(owner_of(call.key_index), call.param);
    if (!found) {
        respond_error(*ex, conversation_not_found(call.param));
        return;
    }
    respond_object(*ex, *found);
}

void api_router::handle_conversation_update(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *store = conversations_or_404(*ex);
    if (store == nullptr) {
        return;
    }
    auto body = parse_json_body(ex->request().body(), cfg_.limits.max_json_depth);
    if (!body) {
        respond_error(*ex, body.err());
        return;
    }
    respond_outcome(*ex, store->update(owner_of(call.key_index), call.param, *body));
}

void api_router::handle_conversation_delete(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *store = conversations_or_404(*ex);
    if (store == nullptr) {
        return;
    }
    if (!store->remove(owner_of(call.key_index), call.param)) {
        respond_error(*ex, conversation_not_found(call.param));
        return;
    }
    respond_object(*ex, {{"id", call.param}, {"object", "console.conversation.deleted"}, {"deleted", true}});
}

void api_router::handle_console_stats(const std::shared_ptr<http_exchange> &ex, const route_call & /*call*/) {
    auto params = query_params(ex->request().target());
    if (!params) {
        respond_error(*ex, params.err());
        return;
    }
    int64_t since = 0;
    if (auto it = params->find("since"); it != params->end()) {
        const auto &v  = it->second;
        auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), since);
        if (ec != std::errc() || end != v.data() + v.size() || since < 0) {
            respond_error(
                *ex,
                error::invalid("since must be a time in unix milliseconds, got '" + v.substr(0, 50) + "'", "since"));
            return;
        }
    }
    json samples = json::array();
    for (const auto &s : timeline_.since(since)) {
        samples.push_back(sample_json(s));
    }
    json backends = json::array();
    for (const auto &b : cfg_.backends) {
        const auto st     = b->status();
        json       models = json::array();
        for (const auto &m : b->models()) {
            models.push_back(m.id);
        }
        backends.push_back({{"name", b->name()},
                            {"url", b->spec().url},
                            {"labels", b->spec().labels},
                            {"state", !st.reachable ? "unreachable" : circuit_name(st.circuit)},
                            {"in_flight", st.in_flight},
                            {"requests", st.requests},
                            {"failures", st.failures},
                            {"models", std::move(models)}});
    }
    auto hardware = cfg_.hardware_json.empty() ? json::object() : json::parse(cfg_.hardware_json, nullptr, false);
    respond_object(*ex, {{"object", "console.stats"},
                         {"interval_ms", timeline_.interval().count()},
                         {"window_s", static_cast<int64_t>(timeline_.capacity()) * timeline_.interval().count() / 1000},
                         {"samples", std::move(samples)},
                         {"hardware", hardware.is_discarded() ? json::object() : std::move(hardware)},
                         {"backends", std::move(backends)}});
}

} // namespace inferbox

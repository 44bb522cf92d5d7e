// The Vector Stores API's routes (api_router's handle_vector_store_*): stores, their files and
// search, as OpenAI shapes them. Each key sees only its own stores (owner_of), and adds only its
// own files (/v1/files). Adding a file answers at once with status in_progress; the file is read,
// its text extracted, chunked and embedded by the retrieval embedding model
// (--retrieval-embedding-model, else the default model) on the ingestion thread, which then marks
// it completed or failed with the error. A search embeds its query on the embedder without
// blocking a thread and runs the hybrid search on the preparation pool.

#include "api/vector_stores.h"

#include "api/errors.h"
#include "api/json_body.h"
#include "api/query_string.h"
#include "api/routes.h"
#include "files/extract.h"
#include "retrieval/chunker.h"
#include "retrieval/query_rewrite.h"

#include <boost/asio/post.hpp>

#include <charconv>
#include <chrono>
#include <future>
#include <thread>

namespace inferbox {

using json = nlohmann::json;
using retrieval::chunking_strategy;
using retrieval::store_file_status;

json vector_store_json(const retrieval::vector_store_record &s) {
    json metadata = json::parse(s.metadata_json, nullptr, false);
    if (!metadata.is_object()) {
        metadata = json::object();
    }
    return json{{"id", s.id},
                {"object", "vector_store"},
                {"created_at", s.created_at},
                {"name", s.name},
                {"usage_bytes", s.usage_bytes},
                {"file_counts",
                 {{"in_progress", s.n_in_progress},
                  {"completed", s.n_completed},
                  {"failed", s.n_failed},
                  {"cancelled", 0},
                  {"total", s.n_in_progress + s.n_completed + s.n_failed}}},
                {"status", s.expired ? "expired" : (s.n_in_progress > 0 ? "in_progress" : "completed")},
                {"expires_after",
                 s.expires_days > 0 ? json{{"anchor", "last_active_at"}, {"days", s.expires_days}} : json(nullptr)},
                {"expires_at", s.expires_at > 0 ? json(s.expires_at) : json(nullptr)},
                {"last_active_at", s.last_active_at},
                {"metadata", metadata}};
}

json vector_store_file_json(const retrieval::vector_store_file_record &f) {
    json last_error = nullptr;
    if (f.status == store_file_status::failed) {
        last_error = {{"code", f.error_code}, {"message", f.error_message}};
    }
    return json{
        {"id", f.file_id},
        {"object", "vector_store.file"},
        {"usage_bytes", f.usage_bytes},
        {"created_at", f.created_at},
        {"vector_store_id", f.store_id},
        {"status", retrieval::status_name(f.status)},
        {"last_error", last_error},
        {"chunking_strategy",
         {{"type", "static"},
          {"static",
           {{"max_chunk_size_tokens", f.chunking.max_tokens}, {"chunk_overlap_tokens", f.chunking.overlap_tokens}}}}},
        {"attributes", attributes_object(f.attributes_json)}};
}

json search_page_json(const std::string &query, const std::vector<retrieval::store_hit> &hits) {
    json data = json::array();
    for (const auto &h : hits) {
        data.push_back({{"file_id", h.file_id},
                        {"filename", h.filename},
                        {"score", h.score},
                        {"attributes", attributes_object(h.attributes_json)},
                        {"content", json::array({{{"type", "text"}, {"text", h.text}}})}});
    }
    return json{{"object", "vector_store.search_results.page"},
                {"search_query", json::array({query})},
                {"data", data},
                {"has_more", false},
                {"next_page", nullptr}};
}

result<chunking_strategy> parse_chunking_strategy(const json &j) {
    chunking_strategy c;
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
        return error::invalid("chunking_strategy must be an object with a type (auto or static)", "chunking_strategy");
    }
    const auto type = j["type"].get<std::string>();
    for (const auto &[k, v] : j.items()) {
        if (k != "type" && k != "static") {
            return error::invalid("chunking_strategy has an unknown field '" + k.substr(0, 100) + "'",
                                  "chunking_strategy." + k.substr(0, 100));
        }
    }
    if (type == "auto") {
        if (j.contains("static")) {
            return error::invalid("chunking_strategy of type auto takes no static settings",
                                  "chunking_strategy.static");
        }
        return c;
    }
    if (type != "static") {
        return error::invalid("chunking_strategy.type must be auto or static", "chunking_strategy.type");
    }
    if (!j.contains("static") || !j["static"].is_object()) {
        return error::invalid("chunking_strategy of type static needs static: {max_chunk_size_tokens, "
                              "chunk_overlap_tokens}",
                              "chunking_strategy.static");
    }
    c.is_static = true;
    for (const auto &[k, v] : j["static"].items()) {
        if (k != "max_chunk_size_tokens" && k != "chunk_overlap_tokens") {
            return error::invalid("chunking_strategy.static has an unknown field '" + k.substr(0, 100) + "'",
                                  "chunking_strategy.static." + k.substr(0, 100));
        }
        if (!v.is_number_integer()) {
            return error::invalid("chunking_strategy.static." + k + " must be an integer",
                                  "chunking_strategy.static." + k);
        }
        (k == "max_chunk_size_tokens" ? c.max_tokens : c.overlap_tokens) = v.get<int64_t>();
    }
    if (!j["static"].contains("max_chunk_size_tokens") || !j["static"].contains("chunk_overlap_tokens")) {
        return error::invalid("chunking_strategy.static needs max_chunk_size_tokens and chunk_overlap_tokens",
                              "chunking_strategy.static");
    }
    if (auto err = retrieval::check_chunking(c)) {
        return *err;
    }
    return c;
}

result<std::string> parse_attributes(const json &j, const std::string &param) {
    if (j.is_null()) {
        return std::string("{}");
    }
    if (!j.is_object()) {
        return error::invalid(param + " must be an object of strings, numbers and booleans", param);
    }
    if (j.size() > retrieval::max_attributes) {
        return error::invalid(param + " has " + std::to_string(j.size()) + " keys; at most " +
                                  std::to_string(retrieval::max_attributes) + " are allowed",
                              param);
    }
    for (const auto &[k, v] : j.items()) {
        if (k.empty() || k.size() > retrieval::max_attribute_key_bytes) {
            return error::invalid(param + " keys must have 1 to " + std::to_string(retrieval::max_attribute_key_bytes) +
                                      " bytes, got " + std::to_string(k.size()),
                                  param);
        }
        const std::string field = param + "." + k;
        if (v.is_string()) {
            if (v.get_ref<const std::string &>().size() > retrieval::max_attribute_value_bytes) {
                return error::invalid(field + " has " + std::to_string(v.get_ref<const std::string &>().size()) +
                                          " bytes; a string attribute has at most " +
                                          std::to_string(retrieval::max_attribute_value_bytes),
                                      field);
            }
        } else if (!v.is_number() && !v.is_boolean()) {
            return error::invalid(field + " must be a string, a number or a boolean", field);
        }
    }
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json attributes_object(const std::string &attributes_json) {
    json j = json::parse(attributes_json, nullptr, false);
    return j.is_object() ? j : json::object();
}

namespace {

// A filter value: a string (at most max_attribute_value_bytes), a finite number or a boolean.
std::optional<retrieval::attribute_value> filter_value(const json &v) {
    if (v.is_string() && v.get_ref<const std::string &>().size() <= retrieval::max_attribute_value_bytes) {
        return retrieval::attribute_value{v.get<std::string>()};
    }
    if (v.is_number()) {
        return retrieval::attribute_value{v.get<double>()};
    }
    if (v.is_boolean()) {
        return retrieval::attribute_value{v.get<bool>()};
    }
    return std::nullopt;
}

std::optional<error> read_filter(const json &j, const std::string &param, size_t depth, size_t &n_nodes,
                                 retrieval::attribute_filter &out) {
    using retrieval::filter_op;
    if (depth > retrieval::max_filter_depth) {
        return error::invalid(
            param + " nests filters more than " + std::to_string(retrieval::max_filter_depth) + " levels deep", param);
    }
    if (++n_nodes > retrieval::max_filter_nodes) {
        return error::invalid(param + ": a filter holds at most " + std::to_string(retrieval::max_filter_nodes) +
                                  " comparison and compound filters in all",
                              param);
    }
    if (!j.is_object()) {
        return error::invalid(param + " must be a comparison filter {type, key, value} or a compound filter "
                                      "{type: and | or, filters}",
                              param);
    }
    const auto type = j.find("type");
    if (type == j.end() || !type->is_string() || !retrieval::filter_op_from_name(type->get<std::string>(), out.op)) {
        return error::invalid(param + ".type must be eq, ne, gt, gte, lt, lte, in, nin, and or or", param + ".type");
    }
    const bool compound = out.op == filter_op::all_of || out.op == filter_op::any_of;
    for (const auto &[k, v] : j.items()) {
        if (k != "type" && (compound ? k != "filters" : (k != "key" && k != "value"))) {
            return error::invalid(param + " has an unknown field '" + k.substr(0, 64) + "' (a " +
                                      (compound ? "compound filter takes type and filters"
                                                : "comparison filter takes type, key and value") +
                                      ")",
                                  param + "." + k.substr(0, 64));
        }
    }
    if (compound) {
        const auto filters = j.find("filters");
        if (filters == j.end() || !filters->is_array() || filters->empty()) {
            return error::invalid(param + ".filters must be a non-empty array of filters", param + ".filters");
        }
        out.children.resize(filters->size());
        for (size_t i = 0; i < filters->size(); ++i) {
            if (auto err = read_filter((*filters)[i], param + ".filters[" + std::to_string(i) + "]", depth + 1, n_nodes,
                                       out.children[i])) {
                return err;
            }
        }
        return std::nullopt;
    }
    const auto key = j.find("key");
    if (key == j.end() || !key->is_string() || key->get_ref<const std::string &>().empty() ||
        key->get_ref<const std::string &>().size() > retrieval::max_attribute_key_bytes) {
        return error::invalid(param + ".key must be a string of 1 to " +
                                  std::to_string(retrieval::max_attribute_key_bytes) + " bytes",
                              param + ".key");
    }
    out.key           = key->get<std::string>();
    const auto  value = j.find("value");
    const auto &name  = type->get_ref<const std::string &>();
    if (value == j.end()) {
        return error::invalid(param + ".value is required", param + ".value");
    }
    if (out.op == filter_op::in || out.op == filter_op::nin) {
        if (!value->is_array() || value->empty() || value->size() > retrieval::max_filter_list_values) {
            return error::invalid(param + ".value must be an array of 1 to " +
                                      std::to_string(retrieval::max_filter_list_values) + " strings or numbers for " +
                                      name,
                                  param + ".value");
        }
        for (size_t i = 0; i < value->size(); ++i) {
            const json &v = (*value)[i];
            auto        x = filter_value(v);
            if (!x || v.is_boolean()) {
                const std::string at = param + ".value[" + std::to_string(i) + "]";
                return error::invalid(at + " must be a string of at most " +
                                          std::to_string(retrieval::max_attribute_value_bytes) + " bytes or a number",
                                      at);
            }
            out.values.push_back(std::move(*x));
        }
        return std::nullopt;
    }
    const bool ordered = out.op != filter_op::eq && out.op != filter_op::ne;
    auto       x       = filter_value(*value);
    if (!x || (ordered && value->is_boolean())) {
        return error::invalid(param + ".value must be " +
                                  (ordered ? std::string("a string or a number") : "a string, a number or a boolean") +
                                  " for " + name + " (a string of at most " +
                                  std::to_string(retrieval::max_attribute_value_bytes) + " bytes)",
                              param + ".value");
    }
    out.values.push_back(std::move(*x));
    return std::nullopt;
}

} // namespace

result<retrieval::attribute_filter> parse_attribute_filter(const json &j, const std::string &param) {
    retrieval::attribute_filter f;
    size_t                      n_nodes = 0;
    if (auto err = read_filter(j, param, 1, n_nodes, f)) {
        return *err;
    }
    return f;
}

result<double> parse_ranking_options(const json &j, const std::string &param) {
    if (j.is_null()) {
        return 0.0;
    }
    if (!j.is_object()) {
        return error::invalid(param + " must be an object {ranker?, score_threshold?}", param);
    }
    double threshold = 0;
    for (const auto &[k, v] : j.items()) {
        if (k == "ranker") {
            if (!v.is_string() || (v != "auto" && v != "none" && v != "default-2024-11-15")) {
                return error::invalid(param + ".ranker must be auto, default-2024-11-15 or none", param + ".ranker");
            }
        } else if (k == "score_threshold") {
            if (!v.is_number() || !(v.get<double>() >= 0 && v.get<double>() <= 1)) {
                return error::invalid(param + ".score_threshold must be a number from 0 to 1",
                                      param + ".score_threshold");
            }
            threshold = v.get<double>();
        } else if (k == "hybrid_search") {
            return error::invalid(param + ".hybrid_search is not supported: this server fuses the vector and "
                                          "keyword rankings with equal weights",
                                  param + ".hybrid_search");
        } else {
            return error::invalid(param + " has an unknown field '" + k.substr(0, 64) +
                                      "' (it takes ranker and score_threshold)",
                                  param + "." + k.substr(0, 64));
        }
    }
    return threshold;
}

result<int64_t> parse_expires_after(const json &j, bool nullable) {
    if (j.is_null() && nullable) {
        return int64_t{0};
    }
    const char *shape = "expires_after must be {anchor: \"last_active_at\", days: 1 to 365}";
    if (!j.is_object()) {
        return error::invalid(shape, "expires_after");
    }
    for (const auto &[k, v] : j.items()) {
        if (k != "anchor" && k != "days") {
            return error::invalid(std::string(shape) + "; unknown field '" + k.substr(0, 64) + "'",
                                  "expires_after." + k.substr(0, 64));
        }
    }
    if (!j.contains("anchor") || j["anchor"] != "last_active_at") {
        return error::invalid("expires_after.anchor must be \"last_active_at\"", "expires_after.anchor");
    }
    const auto days = j.find("days");
    if (days == j.end() || !days->is_number_integer() || days->get<int64_t>() < 1 ||
        days->get<int64_t>() > retrieval::max_expiry_days) {
        return error::invalid("expires_after.days must be an integer from 1 to " +
                                  std::to_string(retrieval::max_expiry_days),
                              "expires_after.days");
    }
    return days->get<int64_t>();
}

result<vector_store_search_request> parse_search_request(const json &body, size_t max_query_bytes) {
    if (!body.is_object()) {
        return error::invalid("the body must be a JSON object", "");
    }
    vector_store_search_request req;
    bool                        has_query = false;
    bool                        rewrite   = false;
    for (const auto &[k, v] : body.items()) {
        if (k == "query") {
            has_query = true;
            if (v.is_string()) {
                req.query = v.get<std::string>();
            } else if (v.is_array() && !v.empty() && v.size() <= 10) {
                for (const auto &q : v) {
                    if (!q.is_string()) {
                        return error::invalid("query must be a string or an array of 1 to 10 strings", "query");
                    }
                    req.query += (req.query.empty() ? "" : " ") + q.get<std::string>();
                }
            } else {
                return error::invalid("query must be a string or an array of 1 to 10 strings", "query");
            }
        } else if (k == "max_num_results") {
            if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 50) {
                return error::invalid("max_num_results must be an integer from 1 to 50", "max_num_results");
            }
            req.max_num_results = v.get<size_t>();
        } else if (k == "filters") {
            if (!v.is_null()) {
                auto f = parse_attribute_filter(v, "filters");
                if (!f) {
                    return f.err();
                }
                req.options.filter = std::move(*f);
            }
        } else if (k == "ranking_options") {
            auto threshold = parse_ranking_options(v, "ranking_options");
            if (!threshold) {
                return threshold.err();
            }
            req.options.score_threshold = *threshold;
        } else if (k == "rewrite_query") {
            if (!v.is_boolean()) {
                return error::invalid("rewrite_query must be a boolean", "rewrite_query");
            }
            rewrite = v.get<bool>();
        } else {
            return error::invalid("unknown field '" + k.substr(0, 100) +
                                      "' (search takes query, max_num_results, filters, ranking_options, "
                                      "rewrite_query)",
                                  k.substr(0, 100));
        }
    }
    if (!has_query || req.query.empty()) {
        return error::invalid("query is required and must not be empty", "query");
    }
    if (req.query.size() > max_query_bytes) {
        return error::invalid("query has " + std::to_string(req.query.size()) + " bytes; at most " +
                                  std::to_string(max_query_bytes) + " are allowed",
                              "query", "query_too_long");
    }
    if (rewrite) {
        // Empty only for a whitespace-only query, which is then searched as given.
        if (std::string rewritten = retrieval::rewrite_query(req.query); !rewritten.empty()) {
            req.query = std::move(rewritten);
        }
    }
    return req;
}

result<std::vector<std::vector<float>>> embed_blocking(embedder &emb, const std::vector<std::string> &texts) {
    std::vector<std::vector<float>> out;
    out.reserve(texts.size());
    const size_t n_batch = static_cast<size_t>(std::max(1, std::min(emb.config().n_batch_inputs, 64)));
    const auto   n_max   = static_cast<size_t>(emb.n_input_max());
    for (size_t begin = 0; begin < texts.size(); begin += n_batch) {
        auto task = std::make_shared<embedding_task>();
        for (size_t i = begin; i < std::min(texts.size(), begin + n_batch); ++i) {
            auto t = emb.tokenize(texts[i]);
            if (t.tokens.empty()) {
                return error::invalid("chunk " + std::to_string(i) + " is empty after tokenization", "file_id");
            }
            truncate_tokens(t.tokens, n_max, truncate_mode::end, t.framing);
            task->inputs.push_back(std::move(t.tokens));
        }
        auto promise = std::make_shared<std::promise<result<embedding_task::outputs>>>();
        auto done    = promise->get_future();
        task->done   = [promise](result<embedding_task::outputs> r) { promise->set_value(std::move(r)); };
        std::optional<error> refused;
        for (int attempt = 0; attempt < 150; ++attempt) {
            refused = emb.submit(task);
            if (!refused || refused->kind != error_kind::overloaded) {
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        if (refused) {
            return *refused;
        }
        auto vectors = done.get();
        if (!vectors) {
            return vectors.err();
        }
        for (auto &v : *vectors) {
            out.push_back(std::move(v));
        }
    }
    return out;
}

std::string ingest_error_code(const error &e) {
    if (e.code == "unsupported_file_type") {
        return "unsupported_file";
    }
    if (e.kind == error_kind::invalid_request || e.kind == error_kind::payload_too_large) {
        return "invalid_file";
    }
    return "server_error";
}

namespace {

void respond_vs_json(http_exchange &ex, const json &j) {
    ex.respond(http::status::ok, j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// The opening of a handler that takes a body: `catalog` is vector_stores_or_404's (null when it
// has answered 404); then the request's JSON body, or its error answered. Nothing when an answer
// was sent.
std::optional<json> vs_json_body(http_exchange &ex, const retrieval::vector_store_catalog *catalog, int32_t max_depth) {
    if (catalog == nullptr) {
        return std::nullopt;
    }
    auto body = parse_json_body(ex.request().body(), max_depth);
    if (!body) {
        respond_error(ex, body.err());
        return std::nullopt;
    }
    return std::move(*body);
}

// The bytes of extracted text one file may give (what the chunker takes at most).
constexpr size_t max_text_bytes = size_t{32} << 20;

// One file into one store: its text, chunks, their embeddings, the index. Runs on the ingestion
// thread; the caller marks the file failed with the error.
std::optional<error> ingest(file_store &files, retrieval::vector_store_catalog &catalog, embedder &emb,
                            const std::string &owner, const std::string &store_id, const std::string &file_id,
                            const chunking_strategy &chunking) {
    auto record = files.get(owner, file_id);
    if (!record) {
        return file_not_found(file_id);
    }
    auto bytes = files.content(owner, file_id);
    if (!bytes) {
        return bytes.err();
    }
    auto text = extract_text(*bytes, record->filename, max_text_bytes);
    if (!text) {
        return text.err();
    }
    retrieval::chunking_options co;
    co.max_tokens         = static_cast<size_t>(chunking.max_tokens);
    co.overlap_tokens     = static_cast<size_t>(chunking.overlap_tokens);
    co.max_document_bytes = max_text_bytes;
    co.max_chunks         = catalog.limits().max_chunks_per_file;
    auto chunks           = retrieval::chunk_text(*text, co);
    if (!chunks) {
        return chunks.err();
    }
    std::vector<std::string> texts;
    texts.reserve(chunks->size());
    for (const auto &c : *chunks) {
        texts.push_back(c.text);
    }
    auto vectors = embed_blocking(emb, texts);
    if (!vectors) {
        return vectors.err();
    }
    std::vector<retrieval::chunk_input> inputs(chunks->size());
    for (size_t i = 0; i < inputs.size(); ++i) {
        inputs[i].text      = std::move((*chunks)[i].text);
        inputs[i].embedding = std::move((*vectors)[i]);
        inputs[i].offset    = static_cast<int64_t>((*chunks)[i].offset);
    }
    return catalog.add_chunks(store_id, file_id, record->filename, inputs);
}

// GET list queries: limit (1..100, default 20), order (asc|desc, default desc), after, and for
// a store's files filter (in_progress|completed|failed|cancelled).
struct vs_list_query {
    page_query                       page{20, false, {}};
    std::optional<store_file_status> status;
    bool                             none_cancelled = false; // filter=cancelled: no file ever is
};

result<vs_list_query> read_vs_list_query(std::string_view target, bool files) {
    auto params = query_params(target);
    if (!params) {
        return params.err();
    }
    vs_list_query q;
    for (const auto &[name, value] : *params) {
        auto paging = read_page_param(name, value, 100, q.page);
        if (!paging) {
            return paging.err();
        }
        if (*paging) {
            continue;
        }
        if (files && name == "filter") {
            if (value == "in_progress") {
                q.status = store_file_status::in_progress;
            } else if (value == "completed") {
                q.status = store_file_status::completed;
            } else if (value == "failed") {
                q.status = store_file_status::failed;
            } else if (value == "cancelled") {
                q.none_cancelled = true;
            } else {
                return error::invalid("filter must be in_progress, completed, failed or cancelled", "filter");
            }
        } else {
            return error::invalid("unknown query parameter '" + name.substr(0, 100) + "' (this list takes limit, " +
                                      "order, after" + (files ? ", filter)" : ")"),
                                  name.substr(0, 100));
        }
    }
    return q;
}

template <typename T, typename F> json list_json(const retrieval::catalogue_page<T> &page, F to_json) {
    json data = json::array();
    for (const auto &x : page.data) {
        data.push_back(to_json(x));
    }
    auto id_of = [](const T &x) {
        if constexpr (std::is_same_v<T, retrieval::vector_store_record>) {
            return x.id;
        } else {
            return x.file_id;
        }
    };
    return json{{"object", "list"},
                {"data", data},
                {"has_more", page.has_more},
                {"first_id", page.data.empty() ? json(nullptr) : json(id_of(page.data.front()))},
                {"last_id", page.data.empty() ? json(nullptr) : json(id_of(page.data.back()))}};
}

// "vs_x/file-y" (the route's two parameters) into its halves.
std::pair<std::string, std::string> split_params(const std::string &param) {
    const auto slash = param.find('/');
    if (slash == std::string::npos) {
        return {param, ""};
    }
    return {param.substr(0, slash), param.substr(slash + 1)};
}

} // namespace

retrieval::vector_store_catalog *api_router::vector_stores_or_404(http_exchange &ex) const {
    if (!cfg_.vector_stores) {
        respond_error(ex, error{error_kind::not_found,
                                "vector stores are off on this server (the Files API is off, "
                                "--vector-stores-max-count 0, or no data directory)",
                                "", "vector_stores_off"});
    }
    return cfg_.vector_stores.get();
}

void api_router::with_retrieval_embedder(const std::shared_ptr<http_exchange> &ex, embedder_fn use) {
    const auto index = route_model(*ex, cfg_.retrieval_embedding_model, false);
    if (!index) {
        return;
    }
    with_model(ex, *index, [this, ex, use = std::move(use)](const leased &m) {
        const std::string id = model_id(m.index());
        if (!m->emb || !m->emb->enabled() || m->emb->is_reranker()) {
            const std::string why = !m->emb                 ? std::string("it has no embedder")
                                    : m->emb->is_reranker() ? std::string("it is a reranker")
                                                            : m->emb->disabled_reason();
            respond_error(*ex, error::invalid("the retrieval embedding model '" + id + "' cannot embed (" + why +
                                                  "); serve one that can and name it with "
                                                  "--retrieval-embedding-model",
                                              "", "embeddings_disabled"));
            return;
        }
        use(m->emb, m.hold());
    });
}

void api_router::start_ingest(const std::string &owner, const retrieval::vector_store_file_record &rec,
                              std::shared_ptr<embedder> emb, std::shared_ptr<void> hold) {
    boost::asio::post(*ingest_pool_, [files = cfg_.files, catalog = cfg_.vector_stores, emb = std::move(emb),
                                      hold = std::move(hold), owner, rec] {
        if (auto err = ingest(*files, *catalog, *emb, owner, rec.store_id, rec.file_id, rec.chunking)) {
            error marked = *err;
            marked.code  = ingest_error_code(*err);
            catalog->fail_file(rec.store_id, rec.file_id, marked);
        }
    });
}

void api_router::handle_vector_store_create(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *catalog = vector_stores_or_404(*ex);
    auto  body    = vs_json_body(*ex, catalog, cfg_.limits.max_json_depth);
    if (!body) {
        return;
    }
    std::string              name, metadata = "{}";
    std::vector<std::string> file_ids;
    chunking_strategy        chunking;
    int64_t                  expires_days = 0;
    for (const auto &[k, v] : body->items()) {
        if (k == "name") {
            if (!v.is_string()) {
                respond_error(*ex, error::invalid("name must be a string", "name"));
                return;
            }
            name = v.get<std::string>();
        } else if (k == "metadata") {
            if (!v.is_null() && !v.is_object()) {
                respond_error(*ex, error::invalid("metadata must be an object", "metadata"));
                return;
            }
            metadata = v.is_null() ? "{}" : v.dump();
        } else if (k == "file_ids") {
            if (!v.is_array() || v.size() > static_cast<size_t>(catalog->limits().max_files_per_store)) {
                respond_error(*ex,
                              error::invalid("file_ids must be an array of at most " +
                                                 std::to_string(catalog->limits().max_files_per_store) + " file ids",
                                             "file_ids"));
                return;
            }
            for (const auto &id : v) {
                if (!id.is_string()) {
                    respond_error(*ex, error::invalid("file_ids must hold strings", "file_ids"));
                    return;
                }
                file_ids.push_back(id.get<std::string>());
            }
        } else if (k == "chunking_strategy") {
            auto c = parse_chunking_strategy(v);
            if (!c) {
                respond_error(*ex, c.err());
                return;
            }
            chunking = *c;
        } else if (k == "expires_after") {
            auto days = parse_expires_after(v, true);
            if (!days) {
                respond_error(*ex, days.err());
                return;
            }
            expires_days = *days;
        } else {
            respond_error(*ex, error::invalid("unknown field '" + k.substr(0, 100) +
                                                  "' (a vector store takes name, file_ids, chunking_strategy, "
                                                  "metadata, expires_after)",
                                              k.substr(0, 100)));
            return;
        }
    }
    const std::string owner = owner_of(call.key_index);
    for (const auto &id : file_ids) {
        if (!cfg_.files->get(owner, id)) {
            respond_error(*ex, file_not_found(id));
            return;
        }
    }
    auto create = [this, ex, owner, name, metadata, chunking, file_ids,
                   expires_days](const std::shared_ptr<embedder> &emb, const std::shared_ptr<void> &hold) {
        auto made = cfg_.vector_stores->create(owner, name, metadata, chunking, expires_days);
        if (!made) {
            respond_error(*ex, made.err());
            return;
        }
        for (const auto &id : file_ids) {
            auto rec = cfg_.vector_stores->add_file(owner, made->id, id, std::nullopt);
            if (!rec) {
                continue; // the same file twice in file_ids: it is in the store once
            }
            start_ingest(owner, *rec, emb, hold);
        }
        ex->log_field("vector_store_id", made->id);
        auto now = cfg_.vector_stores->get(owner, made->id);
        respond_vs_json(*ex, vector_store_json(now ? *now : *made));
    };
    if (file_ids.empty()) {
        create(nullptr, nullptr);
        return;
    }
    with_retrieval_embedder(ex, std::move(create));
}

void api_router::handle_vector_store_list(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *catalog = vector_stores_or_404(*ex);
    if (catalog == nullptr) {
        return;
    }
    auto q = read_vs_list_query(ex->request().target(), false);
    if (!q) {
        respond_error(*ex, q.err());
        return;
    }
    auto page = catalog->list(owner_of(call.key_index), q->page.limit, q->page.ascending, q->page.after);
    if (!page) {
        respond_error(*ex, page.err());
        return;
    }
    respond_vs_json(*ex, list_json(*page, vector_store_json));
}

void api_router::handle_vector_store_get(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *catalog = vector_stores_or_404(*ex);
    if (catalog == nullptr) {
        return;
    }
    auto found = catalog->get(owner_of(call.key_index), call.param);
    if (!found) {
        respond_error(*ex, retrieval::vector_store_not_found(call.param));
        return;
    }
    respond_vs_json(*ex, vector_store_json(*found));
}

void api_router::handle_vector_store_modify(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *catalog = vector_stores_or_404(*ex);
    auto  body    = vs_json_body(*ex, catalog, cfg_.limits.max_json_depth);
    if (!body) {
        return;
    }
    std::optional<std::string> name, metadata;
    std::optional<int64_t>     expires_days;
    for (const auto &[k, v] : body->items()) {
        if (k == "expires_after") {
            auto days = parse_expires_after(v, true);
            if (!days) {
                respond_error(*ex, days.err());
                return;
            }
            expires_days = *days;
        } else if (k == "name" && (v.is_string() || v.is_null())) {
            if (v.is_string()) {
                name = v.get<std::string>();
            }
        } else if (k == "metadata" && (v.is_object() || v.is_null())) {
            if (v.is_object()) {
                metadata = v.dump();
            }
        } else {
            respond_error(*ex, error::invalid("'" + k.substr(0, 100) +
                                                  "' cannot be modified here (modify takes name, a string, "
                                                  "metadata, an object, and expires_after)",
                                              k.substr(0, 100)));
            return;
        }
    }
    auto changed = catalog->modify(owner_of(call.key_index), call.param, name, metadata, expires_days);
    if (!changed) {
        respond_error(*ex, changed.err());
        return;
    }
    respond_vs_json(*ex, vector_store_json(*changed));
}

void api_router::handle_vector_store_delete(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *catalog = vector_stores_or_404(*ex);
    if (catalog == nullptr) {
        return;
    }
    // The folder's removal touches the disk: off the I/O thread.
    boost::asio::post(prep_pool_,
                      [ex, catalog = cfg_.vector_stores, owner = owner_of(call.key_index), id = call.param] {
                          const bool had = catalog->remove(owner, id);
                          boost::asio::post(ex->executor(), [ex, had, id] {
                              if (!had) {
                                  respond_error(*ex, retrieval::vector_store_not_found(id));
                                  return;
                              }
                              respond_vs_json(*ex, {{"id", id}, {"object", "vector_store.deleted"}, {"deleted", true}});
                          });
                      });
}

void api_router::handle_vector_store_file_add(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *catalog = vector_stores_or_404(*ex);
    auto  body    = vs_json_body(*ex, catalog, cfg_.limits.max_json_depth);
    if (!body) {
        return;
    }
    std::string                      file_id;
    std::optional<chunking_strategy> chunking;
    std::string                      attributes = "{}";
    for (const auto &[k, v] : body->items()) {
        if (k == "file_id" && v.is_string()) {
            file_id = v.get<std::string>();
        } else if (k == "chunking_strategy") {
            auto c = parse_chunking_strategy(v);
            if (!c) {
                respond_error(*ex, c.err());
                return;
            }
            chunking = *c;
        } else if (k == "attributes") {
            auto a = parse_attributes(v, "attributes");
            if (!a) {
                respond_error(*ex, a.err());
                return;
            }
            attributes = std::move(*a);
        } else {
            respond_error(*ex, error::invalid("unknown or malformed field '" + k.substr(0, 100) +
                                                  "' (adding a file takes file_id, a string, chunking_strategy and "
                                                  "attributes)",
                                              k.substr(0, 100)));
            return;
        }
    }
    const std::string owner    = owner_of(call.key_index);
    const std::string store_id = call.param;
    if (file_id.empty()) {
        respond_error(*ex, error::invalid("file_id is required", "file_id"));
        return;
    }
    if (auto store = catalog->get(owner, store_id); !store || store->expired) {
        respond_error(*ex,
                      store ? retrieval::vector_store_expired(*store) : retrieval::vector_store_not_found(store_id));
        return;
    }
    if (!cfg_.files->get(owner, file_id)) {
        respond_error(*ex, file_not_found(file_id));
        return;
    }
    with_retrieval_embedder(ex, [this, ex, owner, store_id, file_id, chunking,
                                 attributes](std::shared_ptr<embedder> emb, std::shared_ptr<void> hold) {
        auto rec = cfg_.vector_stores->add_file(owner, store_id, file_id, chunking, attributes);
        if (!rec) {
            respond_error(*ex, rec.err());
            return;
        }
        start_ingest(owner, *rec, std::move(emb), std::move(hold));
        respond_vs_json(*ex, vector_store_file_json(*rec));
    });
}

void api_router::handle_vector_store_file_update(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *catalog = vector_stores_or_404(*ex);
    auto  body    = vs_json_body(*ex, catalog, cfg_.limits.max_json_depth);
    if (!body) {
        return;
    }
    std::optional<std::string> attributes;
    for (const auto &[k, v] : body->items()) {
        if (k != "attributes") {
            respond_error(*ex, error::invalid("unknown field '" + k.substr(0, 100) +
                                                  "' (updating a vector store file takes attributes)",
                                              k.substr(0, 100)));
            return;
        }
        auto a = parse_attributes(v, "attributes");
        if (!a) {
            respond_error(*ex, a.err());
            return;
        }
        attributes = std::move(*a);
    }
    if (!attributes) {
        respond_error(*ex, error::invalid("attributes is required (an object, or null to clear them)", "attributes"));
        return;
    }
    const auto [store_id, file_id] = split_params(call.param);
    auto updated = catalog->set_file_attributes(owner_of(call.key_index), store_id, file_id, *attributes);
    if (!updated) {
        respond_error(*ex, updated.err());
        return;
    }
    respond_vs_json(*ex, vector_store_file_json(*updated));
}

void api_router::handle_vector_store_file_list(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *catalog = vector_stores_or_404(*ex);
    if (catalog == nullptr) {
        return;
    }
    auto q = read_vs_list_query(ex->request().target(), true);
    if (!q) {
        respond_error(*ex, q.err());
        return;
    }
    auto page = catalog->list_files(owner_of(call.key_index), call.param, q->page.limit, q->page.ascending,
                                    q->page.after, q->status);
    if (!page) {
        respond_error(*ex, page.err());
        return;
    }
    if (q->none_cancelled) {
        page->data.clear();
        page->has_more = false;
    }
    respond_vs_json(*ex, list_json(*page, vector_store_file_json));
}

void api_router::handle_vector_store_file_get(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *catalog = vector_stores_or_404(*ex);
    if (catalog == nullptr) {
        return;
    }
    const auto [store_id, file_id] = split_params(call.param);
    auto found                     = catalog->get_file(owner_of(call.key_index), store_id, file_id);
    if (!found) {
        respond_error(
            *ex, error{error_kind::not_found,
                       "no file '" + file_id.substr(0, 100) + "' in vector store '" + store_id.substr(0, 100) + "'",
                       "file_id", "file_not_found"});
        return;
    }
    respond_vs_json(*ex, vector_store_file_json(*found));
}

void api_router::handle_vector_store_file_delete(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    if (vector_stores_or_404(*ex) == nullptr) {
        return;
    }
    const auto [store_id, file_id] = split_params(call.param);
    // Removing a document rewrites part of the index: off the I/O thread.
    boost::asio::post(prep_pool_, [ex, catalog = cfg_.vector_stores, owner = owner_of(call.key_index),
                                   store_id = store_id, file_id = file_id] {
        auto had = catalog->remove_file(owner, store_id, file_id);
        boost::asio::post(ex->executor(), [ex, had = std::move(had), store_id, file_id] {
            if (!had) {
                respond_error(*ex, had.err());
                return;
            }
            if (!*had) {
                respond_error(*ex, error{error_kind::not_found,
                                         "no file '" + file_id.substr(0, 100) + "' in vector store '" +
                                             store_id.substr(0, 100) + "'",
                                         "file_id", "file_not_found"});
                return;
            }
            respond_vs_json(*ex, {{"id", file_id}, {"object", "vector_store.file.deleted"}, {"deleted", true}});
        });
    });
}

void api_router::handle_vector_store_search(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *catalog = vector_stores_or_404(*ex);
    auto  body    = vs_json_body(*ex, catalog, cfg_.limits.max_json_depth);
    if (!body) {
        return;
    }
    auto req = parse_search_request(*body, catalog->limits().max_query_bytes);
    if (!req) {
        respond_error(*ex, req.err());
        return;
    }
    const std::string owner = owner_of(call.key_index);
    if (!catalog->get(owner, call.param)) {
        respond_error(*ex, retrieval::vector_store_not_found(call.param));
        return;
    }
    search_vector_stores(owner, {call.param}, req->query, req->max_num_results, req->options, ex->executor(),
                         [ex, query = req->query](result<std::vector<retrieval::store_hit>> hits) {
                             if (ex->disconnected()) {
                                 return;
                             }
                             if (!hits) {
                                 respond_error(*ex, hits.err());
                                 return;
                             }
                             ex->log_field("results", static_cast<int64_t>(hits->size()));
                             respond_vs_json(*ex, search_page_json(query, *hits));
                         });
}

void api_router::search_vector_stores(const std::string &owner, const std::vector<std::string> &store_ids,
                                      const std::string &query, size_t k,
                                      const retrieval::store_search_options &options, const executor_t &exec,
                                      search_done_fn done) {
    auto host = current_host();
    if (!host) {
        done(error{error_kind::unavailable, "the server is not ready (starting or draining); retry shortly", "",
                   "not_ready"});
        return;
    }
    std::optional<size_t> index = 0;
    if (!cfg_.retrieval_embedding_model.empty()) {
        index = host->find(cfg_.retrieval_embedding_model);
    }
    if (!index) {
        done(error{error_kind::not_found,
                   "the retrieval embedding model '" + cfg_.retrieval_embedding_model + "' is not served", "", ""});
        return;
    }
    // The search itself (SQLite, the graph) runs on the preparation pool; the answer on `exec`.
    auto run = [this, owner, store_ids, query, k, options, exec, done](std::vector<float> vector) {
        boost::asio::post(prep_pool_, [catalog = cfg_.vector_stores, owner, store_ids, query, k, options, exec, done,
                                       vector  = std::move(vector)] {
            auto hits = catalog->search(owner, store_ids, query, vector, k, options);
            boost::asio::post(exec, [done, hits = std::move(hits)]() mutable { done(std::move(hits)); });
        });
    };
    auto embed = [run, done = std::move(done), exec, query](result<served_models::lease> m) {
        if (!m) {
            done(m.err());
            return;
        }
        auto emb = (*m)->emb;
        if (!emb || !emb->enabled() || emb->is_reranker()) {
            done(error::invalid("the retrieval embedding model cannot embed; serve one that can and name it with "
                                "--retrieval-embedding-model",
                                "", "embeddings_disabled"));
            return;
        }
        auto t = emb->tokenize(query);
        if (t.tokens.empty()) {
            run({}); // nothing to embed: keyword ranking alone
            return;
        }
        truncate_tokens(t.tokens, static_cast<size_t>(emb->n_input_max()), truncate_mode::end, t.framing);
        auto task = std::make_shared<embedding_task>();
        task->inputs.push_back(std::move(t.tokens));
        // Runs on the embedder thread: the lease is held until the vector is back.
        task->done = [run, done, exec, hold = m->hold()](result<embedding_task::outputs> r) {
            if (!r || r->empty()) {
                boost::asio::post(exec, [done, err = r ? error{error_kind::internal, "no query embedding", "", ""}
                                                       : r.err()] { done(err); });
                return;
            }
            run(std::move(r->front()));
        };
        if (auto err = emb->submit(task)) {
            done(*err);
        }
    };
    if (auto now = host->try_acquire(*index)) {
        embed(std::move(*now));
        return;
    }
    host->acquire_async(*index, [exec, embed](result<served_models::lease> r) {
        boost::asio::post(exec, [embed, r = std::move(r)]() mutable { embed(std::move(r)); });
    });
}

query_embedder api_router::retrieval_query_embedder() const {
    auto                  host  = current_host();
    std::optional<size_t> index = 0;
    if (host && !cfg_.retrieval_embedding_model.empty()) {
        index = host->find(cfg_.retrieval_embedding_model);
    }
    return [host, index](const std::string &query) -> result<std::vector<float>> {
        if (!host || !index) {
            return error{error_kind::unavailable, "the retrieval embedding model is not served now", "", "not_ready"};
        }
        using lease_result = result<served_models::lease>;
        std::optional<lease_result> lease;
        if (auto now = host->try_acquire(*index)) {
            lease.emplace(std::move(*now));
        } else {
            auto promise = std::make_shared<std::promise<lease_result>>();
            auto loaded  = promise->get_future();
            host->acquire_async(*index, [promise](lease_result r) { promise->set_value(std::move(r)); });
            if (loaded.wait_for(std::chrono::minutes(2)) != std::future_status::ready) {
                return error{error_kind::timeout, "the retrieval embedding model did not load within 2 minutes", "",
                             ""};
            }
            lease.emplace(loaded.get());
        }
        if (!*lease) {
            return lease->err();
        }
        auto emb = (**lease)->emb;
        if (!emb || !emb->enabled() || emb->is_reranker()) {
            return error::invalid("the retrieval embedding model cannot embed; serve one that can and name it with "
                                  "--retrieval-embedding-model",
                                  "", "embeddings_disabled");
        }
        auto vectors = embed_blocking(*emb, {query});
        if (!vectors) {
            return vectors.err();
        }
        if (vectors->empty()) {
            return error{error_kind::internal, "no query embedding", "", ""};
        }
        return std::move(vectors->front());
    };
}

} // namespace inferbox

#pragma once
// The Vector Stores API's JSON shapes and request readers (OpenAI's vector_store,
// vector_store.file and search results page). The routes are api_router's handle_vector_store_*
// (api/vector_stores.cpp); the catalogue and the indexes are retrieval/vector_store_catalog.h.

#include "common/status.h"
#include "engine/embedder.h"
#include "retrieval/attribute_filter.h"
#include "retrieval/vector_store_catalog.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace inferbox {

// {id, object: "vector_store", created_at, name, usage_bytes, file_counts, status, ...}
nlohmann::json vector_store_json(const retrieval::vector_store_record &s);
// {id, object: "vector_store.file", vector_store_id, status, last_error, chunking_strategy, ...}
nlohmann::json vector_store_file_json(const retrieval::vector_store_file_record &f);
// {object: "vector_store.search_results.page", search_query, data: [{file_id, filename, score,
// attributes, content: [{type: "text", text}]}], has_more: false, next_page: null}
nlohmann::json search_page_json(const std::string &query, const std::vector<retrieval::store_hit> &hits);

// chunking_strategy as OpenAI takes it: {type: "auto"} or {type: "static", static:
// {max_chunk_size_tokens, chunk_overlap_tokens}}; an error names the field.
result<retrieval::chunking_strategy> parse_chunking_strategy(const nlohmann::json &j);

// A file's attributes as OpenAI takes them: an object of at most 16 keys (each 1..64 bytes), each
// value a string of at most 512 bytes, a number or a boolean; null is no attributes ("{}"). The
// object's JSON text, as the catalogue keeps it; an error names `param` or the key
// ("attributes.author").
result<std::string> parse_attributes(const nlohmann::json &j, const std::string &param);
// The stored text back as the object (an empty object for anything else).
nlohmann::json attributes_object(const std::string &attributes_json);

// A search filter (retrieval/attribute_filter.h) from OpenAI's JSON: a comparison {type: eq | ne |
// gt | gte | lt | lte | in | nin, key, value} or a compound {type: and | or, filters: [...]}, nested
// at most 8 levels deep, at most 64 filters in all. eq and ne take a string, number or boolean;
// gt, gte, lt and lte a string or a number; in and nin an array of 1..64 strings or numbers. An
// error names the field ("filters.filters[1].value") and the bound.
result<retrieval::attribute_filter> parse_attribute_filter(const nlohmann::json &j, const std::string &param);

// ranking_options {ranker?: "auto" | "default-2024-11-15" | "none", score_threshold?: 0..1}: the
// threshold (0 when absent). This server ranks a store search one way, reciprocal rank fusion of
// the vector and keyword rankings with no reranker, so the three rankers give the same order;
// "none" is accepted as there is no reranker to skip. hybrid_search weights are refused (400).
result<double> parse_ranking_options(const nlohmann::json &j, const std::string &param);

// expires_after {anchor: "last_active_at", days: 1..365}: the days. null (when `nullable`, as
// modify allows to remove the policy) is 0.
result<int64_t> parse_expires_after(const nlohmann::json &j, bool nullable);

// POST /v1/vector_stores/{id}/search's body.
struct vector_store_search_request {
    std::string                     query; // what is searched (and answered as search_query): rewritten when asked
    size_t                          max_num_results = 10;
    retrieval::store_search_options options; // filters and ranking_options.score_threshold
};

// query (a string, or an array of 1..10 strings searched together), max_num_results (1..50),
// filters (parse_attribute_filter), ranking_options (parse_ranking_options), rewrite_query (a
// boolean). Any other field is an error. The query's length bound (max_query_bytes) applies to the
// query as sent. With rewrite_query true, `query` is retrieval::rewrite_query's keyword query
// (retrieval/query_rewrite.h: lexical, no model), which both the embedding and the keyword ranking
// search and the answer's search_query carries; a whitespace-only query has no rewrite and stays as
// sent. Without it, or false, the query is searched as sent.
result<vector_store_search_request> parse_search_request(const nlohmann::json &body, size_t max_query_bytes);

// Embeds `texts` on the embedder, blocking the calling thread (a worker's, never an I/O thread)
// until each batch of at most 64 is done. Each text is cut to what the model embeds at once. A
// full embedder queue (API traffic) is waited out for up to 30 s.
result<std::vector<std::vector<float>>> embed_blocking(embedder &emb, const std::vector<std::string> &texts);

// The last_error code OpenAI's vector_store.file carries for an ingestion error:
// unsupported_file, invalid_file or server_error.
std::string ingest_error_code(const error &e);

} // namespace inferbox

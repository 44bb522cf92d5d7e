#pragma once
// The Vector Stores API's JSON shapes and request readers (OpenAI's vector_store,
// vector_store.file and search results page). The routes are api_router's handle_vector_store_*
// (api/vector_stores.cpp); the catalogue and the indexes are retrieval/vector_store_catalog.h.

#include "common/status.h"
#include "engine/embedder.h"
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

// POST /v1/vector_stores/{id}/search's body.
struct vector_store_search_request {
    std::string              query;
    size_t                   max_num_results = 10;
    std::vector<std::string> file_ids; // from `filters`; empty: all files
};

// query (a string, or an array of 1..10 strings searched together), max_num_results (1..50),
// filters ({type: "eq", key: "file_id", value} or {type: "in", key: "file_id", value: [...]}, or
// {type: "or", filters: [eq ...]}), rewrite_query (false only). Any other field is an error.
result<vector_store_search_request> parse_search_request(const nlohmann::json &body, size_t max_query_bytes);

// Embeds `texts` on the embedder, blocking the calling thread (a worker's, never an I/O thread)
// until each batch of at most 64 is done. Each text is cut to what the model embeds at once. A
// full embedder queue (API traffic) is waited out for up to 30 s.
result<std::vector<std::vector<float>>> embed_blocking(embedder &emb, const std::vector<std::string> &texts);

// The last_error code OpenAI's vector_store.file carries for an ingestion error:
// unsupported_file, invalid_file or server_error.
std::string ingest_error_code(const error &e);

} // namespace inferbox

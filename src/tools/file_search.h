#pragma once
// The `file_search` tool (OpenAI's, on /v1/responses): the model calls it with {query}; it runs a
// hybrid search (retrieval/vector_store_catalog.h) over the vector stores the request named, all
// the caller's own, with the request's filters and score threshold, and returns the best chunks
// as a JSON array of {file_id, filename, score, attributes, text}, capped in bytes before it reaches the prompt. Its
// output item is a file_search_call (api/responses.cpp reads the array back for the item's results).

#include "common/status.h"
#include "retrieval/vector_store_catalog.h"
#include "tools/builtin_tool.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace inferbox {

// A query's embedding, computed by the caller's embedding model; blocks the calling (worker)
// thread and bounds its own wait. An error fails the call (the model reads it).
using query_embedder = std::function<result<std::vector<float>>(const std::string &query)>;

struct file_search_spec {
    std::shared_ptr<retrieval::vector_store_catalog> catalog;
    std::string                                      owner;     // the caller's key (the stores' owner)
    std::vector<std::string>                         store_ids; // checked to be the owner's when the call runs
    size_t                                           max_num_results = 10;        // 1..50
    retrieval::store_search_options                  options;                     // filters, score_threshold
    size_t                                           max_output_bytes = 16 << 10; // the chunks' text, all together
    query_embedder                                   embed;
};

// At most this many vector stores per file_search tool (as OpenAI allows: 2).
inline constexpr size_t max_file_search_stores = 2;

std::shared_ptr<builtin_tool> make_file_search_tool(file_search_spec spec);

// The JSON text run() returns, from hits: each chunk's text cut (at a UTF-8 boundary) so that all
// texts together stay within max_bytes; a hit that would get no text is left out. Pure.
std::string file_search_output(const std::vector<retrieval::store_hit> &hits, size_t max_bytes);

} // namespace inferbox

#pragma once
// The request schema of /v1/embeddings (OpenAI's, with NIM's input_type and truncate) and
// /v1/ranking (NIM's), and the response encodings that need no model: base64 vectors and the
// embeddings body. Bodies become typed requests here; nothing past this point looks at JSON.
// Like schema.h, no HTTP and no llama.cpp: the fuzz target links it alone.

#include "common/status.h"
#include "engine/embedding.h"
#include "engine/types.h"

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace inferbox {

struct embedding_limits {
    int32_t max_inputs = 256; // inputs per /v1/embeddings request, passages per /v1/ranking request
};

enum class embedding_encoding { float32, base64 };

using embedding_input = std::variant<std::string, std::vector<token_id>>;

struct embedding_request {
    std::string                  model;  // empty = the default model
    std::vector<embedding_input> inputs; // non-empty; no empty string, no empty token array
    embedding_encoding           encoding = embedding_encoding::float32;
    std::optional<int32_t>       dimensions; // >= 1 when set
    truncate_mode                truncate = truncate_mode::none;
    std::string                  input_type; // "", "query" or "passage" (NIM): recorded
    std::string                  user;
};

struct ranking_request {
    std::string              model;
    std::string              query;    // non-empty
    std::vector<std::string> passages; // non-empty, each non-empty
    truncate_mode            truncate = truncate_mode::none;
};

// Errors are invalid_request naming the field ("param") and, for limits, the limit.
result<embedding_request> parse_embedding_request(const nlohmann::json &body, const embedding_limits &limits);
result<ranking_request>   parse_ranking_request(const nlohmann::json &body, const embedding_limits &limits);

// Standard base64 (RFC 4648, with padding).
std::string base64_encode(const unsigned char *data, size_t n);
// OpenAI's base64 embedding: the vector's float32 values, little-endian, base64-encoded.
std::string embedding_base64(const std::vector<float> &v);

// The /v1/embeddings response body: {object:"list", data:[{object:"embedding", index,
// embedding}], model, usage:{prompt_tokens, total_tokens}}. Floats are written in their shortest
// form that reads back as the same float32. Every value must be finite.
std::string embedding_response_body(const std::string &model, const std::vector<std::vector<float>> &vectors,
                                    embedding_encoding encoding, int64_t n_prompt_tokens);

} // namespace inferbox

// Untrusted request bytes -> the typed embedding and ranking requests, exactly as
// handle_embeddings / handle_ranking do it up to the point where a model is needed: parse_json_body,
// then parse_embedding_request and parse_ranking_request, then error_body for any error. Nothing
// may throw or crash; an accepted request must satisfy every limit the schema promises the
// embedder (inputs non-empty and within the count limit, token ids in [0, 2^31), dimensions >= 1);
// the response encoder must produce valid JSON for what it is given.

#include "api/embeddings_schema.h"
#include "api/errors.h"
#include "api/schema.h"
#include "common/utf8.h"
#include "fuzz_check.h"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

using namespace inferbox;
using json = nlohmann::json;

namespace {

void check_error(const error &e) {
    FUZZ_CHECK(e.kind == error_kind::invalid_request);
    FUZZ_CHECK(!e.message.empty());
    FUZZ_CHECK(!e.param.empty() || e.code == "invalid_json");
    const std::string body = error_body(e);
    FUZZ_CHECK(utf8_valid(body));
    const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    FUZZ_CHECK(j.is_object() && j.contains("error") && j["error"].is_object());
    FUZZ_CHECK(j["error"]["type"] == "invalid_request_error");
}

void check_embedding(const embedding_request &r, const embedding_limits &limits) {
    FUZZ_CHECK(!r.inputs.empty() && r.inputs.size() <= static_cast<size_t>(limits.max_inputs));
    for (const auto &in : r.inputs) {
        if (const auto *text = std::get_if<std::string>(&in)) {
            FUZZ_CHECK(!text->empty() && utf8_valid(*text));
        } else {
            const auto &toks = std::get<std::vector<token_id>>(in);
            FUZZ_CHECK(!toks.empty());
            for (token_id t : toks) {
                FUZZ_CHECK(t >= 0);
            }
        }
    }
    FUZZ_CHECK(!r.dimensions || (*r.dimensions >= 1 && *r.dimensions <= (1 << 20)));
    FUZZ_CHECK(r.input_type.empty() || r.input_type == "query" || r.input_type == "passage");
    FUZZ_CHECK(r.model.size() <= 1024 && utf8_valid(r.model));

    // The response for this request's shape (one small vector per input) is valid JSON.
    std::vector<std::vector<float>> vectors(r.inputs.size(), std::vector<float>{0.6f, -0.8f});
    const std::string               body = embedding_response_body(r.model, vectors, r.encoding, 3);
    const json                      j    = json::parse(body, nullptr, /*allow_exceptions=*/false);
    FUZZ_CHECK(!j.is_discarded() && j["data"].size() == r.inputs.size() && j["model"] == r.model);
}

void check_ranking(const ranking_request &r, const embedding_limits &limits) {
    FUZZ_CHECK(!r.query.empty() && utf8_valid(r.query));
    FUZZ_CHECK(!r.passages.empty() && r.passages.size() <= static_cast<size_t>(limits.max_inputs));
    for (const auto &p : r.passages) {
        FUZZ_CHECK(!p.empty() && utf8_valid(p));
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const embedding_limits limits{8}; // small, so that the count limit is reachable
    const std::string      bytes(reinterpret_cast<const char *>(data), size);

    auto body = parse_json_body(bytes, 64);
    if (!body) {
        check_error(body.err());
        return 0;
    }
    if (auto r = parse_embedding_request(*body, limits)) {
        check_embedding(*r, limits);
    } else {
        check_error(r.err());
    }
    if (auto r = parse_ranking_request(*body, limits)) {
        check_ranking(*r, limits);
    } else {
        check_error(r.err());
    }
    return 0;
}

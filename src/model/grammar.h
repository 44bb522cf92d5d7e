#pragma once
// Grammars, on the engine's side of the typed boundary but called by the API layer before it
// submits (on an I/O thread, never the engine thread): JSON Schema to GBNF with llama.cpp
// common's converter, and the check that a grammar is one the engine can sample with on this
// model. Neither throws; both are safe on hostile input once the API layer's bounds hold
// (schema size and repetition counts, grammar size and nesting: api/guided.h).

#include "common/status.h"
#include "engine/types.h"
#include "model/model.h"

#include <optional>
#include <string>

namespace inferbox {

// GBNF for a JSON Schema given as JSON text (nested objects, arrays, enums, const, required,
// $ref/$defs, anyOf/oneOf/allOf, string formats and patterns, numeric bounds). An unsupported
// or invalid schema is an invalid_request carrying the converter's message, with `param`.
result<std::string> json_schema_to_gbnf(const std::string &schema_json, const std::string &param);

// GBNF for any JSON object (response_format {"type":"json_object"}).
result<std::string> json_object_gbnf();

// Builds, then frees, the same grammar sampler the engine builds for `params` on `m`: an error
// (invalid_request with `param`) when llama.cpp's parser rejects the grammar or the model has
// no end-of-generation token (a constrained output could then never end). nullopt when fine
// or when there is no grammar.
std::optional<error> check_grammar(const model &m, const sampling_params &params, const std::string &param);

} // namespace inferbox

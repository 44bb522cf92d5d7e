#pragma once
// Engine-internal: how a sampling_params grammar becomes llama.cpp common sampling parameters,
// shared by the engine (engine.cpp) and the API-side check (grammar.cpp) so both build exactly
// the same grammar sampler.

#include "engine/types.h"

#include "sampling.h"

namespace inferbox {

void apply_grammar(common_params_sampling &out, const sampling_params &in);

} // namespace inferbox

#pragma once

#include "server/serve_options.h"

namespace inferbox {

// `inferbox serve`: checks the options, resolves (and pulls) the models, listens, loads the first
// model, serves until SIGTERM/SIGINT or an engine that cannot go on, drains, and returns the exit
// code (0 after a requested stop, 1 for a configuration or start-up failure, 2 for a lost engine).
int run_serve(const serve_options &opts);

} // namespace inferbox

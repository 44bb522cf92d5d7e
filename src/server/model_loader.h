#pragma once

// Turning serve's plans (server/serve_plan.h) into running models: the host that loads each on
// its first request (and unloads the least recently used under the memory budget), and the load
// itself (weights, draft model, engine, embedder). Runs on the host's loader thread.

#include "backend/served_model.h"
#include "common/status.h"
#include "host/model_host.h"
#include "server/serve_plan.h"

#include <memory>
#include <string>
#include <vector>

namespace inferbox {

// Loads `p`: its weights, the draft model at `draft_path` (empty: none; the first model's only),
// an engine and an embedder. `with_rpc`: layers live on RPC workers, so the draft stays here. An
// error names the model by id and its files by name only.
result<std::shared_ptr<served_model>> load_hosted_model(const hosted_plan &p, const std::string &draft_path,
                                                        bool with_rpc);

// The host over `plans` (entry i is plans[i]; the first gets `draft_path`). A refused model other
// than the first is marked failed, so its requests get its reason; the first model's refusal is
// the caller's to report, since the server does not start without it. A model being pulled has a
// placeholder plan until its file is here: its puller writes plans[i] once, before it tells the
// host (model_host::pulled), which orders that write before the loader's read.
std::shared_ptr<served_models> make_model_host(const std::shared_ptr<std::vector<hosted_plan>> &plans,
                                               const host_options &opts, const std::string &draft_path, bool with_rpc);

} // namespace inferbox

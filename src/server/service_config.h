#pragma once

// The api layer's configuration (api/routes.h api_config) from serve's checked options: API keys,
// the stores in the data directory, the built-in tools' databases and MCP servers, and the remote
// backends with their routing policies.

#include "api/routes.h"
#include "common/status.h"
#include "server/serve_plan.h"
#include "store/hardware.h"

#include <boost/asio/any_io_executor.hpp>

#include <optional>

namespace inferbox {

// Everything but the models and the backends; `machine` is what the dashboard shows of this host.
// Opens the SQL databases and starts the MCP servers (an error names the flag); a store that
// cannot be opened (a read-only file system) only turns its feature off, with a warning.
result<api_config> make_api_config(const serve_options &opts, const serve_settings &settings,
                                   const hardware_info &machine);

// The remote backends (--backend) and routing policies (--route): every entry checked, its API key
// read, its TLS set up, its state on /metrics; an error names the entry. The backends run their
// calls and probes on `exec`.
std::optional<error> configure_routing(const serve_options &opts, const boost::asio::any_io_executor &exec,
                                       api_config &cfg);

} // namespace inferbox

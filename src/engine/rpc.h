#pragma once
// Remote layers over ggml's RPC backend (`serve --rpc HOST:PORT,...`): worker machines run
// `ggml-rpc-server` from the same llama.cpp source, each exposes its devices (CPU or GPU) to
// this process, and llama.cpp places the offloaded layers on them in proportion to their free
// memory. This file owns everything inferbox adds around ggml's client:
//
//   - the endpoint list is parsed and bounded here, with errors naming the entry and the limit;
//   - each worker is probed with our own connection and the protocol's HELLO under a timeout
//     before ggml touches it: ggml's client connects without a timeout and aborts the process on
//     any failure, so an unreachable, busy (a worker serves one client at a time) or
//     wrong-version worker would otherwise hang start-up or crash it without a useful message;
//   - ggml's abort callback is routed to a handler the server installs: a worker that dies
//     mid-request makes ggml abort inside llama_decode, and the handler turns that into error
//     events for every in-flight request and a prompt, non-zero exit (the orchestrator restarts
//     the leader, and the workers accept the new connection).
//
// Thread safety: parse_rpc_endpoints and probe_rpc_worker are reentrant; attach_rpc_workers and
// set_fatal_handler are called once at start-up, before any engine runs.

#include "common/status.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

// ggml's client keeps at most this many servers (GGML_RPC_MAX_SERVERS).
inline constexpr size_t max_rpc_workers = 16;

struct rpc_endpoint {
    std::string host; // a name or an address; IPv6 without the brackets
    uint16_t    port = 0;
    // "host:port" as ggml's client parses it (it splits at the first ':', so IPv6 addresses are
    // refused by parse_rpc_endpoints rather than misread here).
    std::string text() const { return host + ":" + std::to_string(port); }
};

// "HOST:PORT[,HOST:PORT...]": at most max_rpc_workers entries, no duplicates, ports 1..65535,
// host names of letters, digits, '-', '.' and '_' (at most 253 characters). An error (code
// "invalid_rpc_endpoint", param "rpc") names the offending entry.
result<std::vector<rpc_endpoint>> parse_rpc_endpoints(std::string_view list);

// What a worker answered to HELLO.
struct rpc_worker_version {
    int major = 0, minor = 0, patch = 0;
};

// Connects to `ep`, sends HELLO and reads the reply, all within `timeout`. The error (kind
// unavailable, code "rpc_worker_unreachable") says which step failed and why: name resolution,
// connection refused, no answer within the timeout, a closed connection, or a protocol version
// this build cannot talk to.
result<rpc_worker_version> probe_rpc_worker(const rpc_endpoint &ep, std::chrono::milliseconds timeout);

// A device a worker exposes, as ggml's registry lists it.
struct rpc_device {
    std::string name;        // "RPC0", "RPC1", ... (ggml's names)
    std::string endpoint;    // "host:port"
    std::string description; // the worker's own description of the device
    uint64_t    free_bytes  = 0;
    uint64_t    total_bytes = 0;
};

// Probes every worker (probe_rpc_worker, `timeout` each), then hands them to ggml's RPC client
// and registers their devices so that llama.cpp's model loader offloads layers to them. Returns
// the remote devices. Errors: a probe's, or "rpc_unsupported" when this build has no RPC backend.
result<std::vector<rpc_device>> attach_rpc_workers(const std::vector<rpc_endpoint> &eps,
                                                   std::chrono::milliseconds        timeout);

// Whether this build links ggml's RPC backend.
bool rpc_supported();

// `inferbox rpc-worker`: this machine's devices served to a leader's `serve --rpc`, by ggml's own
// RPC server (the one llama.cpp's ggml-rpc-server runs), so one binary and one image play both
// roles. The server answers one leader at a time and has no authentication: bind it to a private
// network only (docs/deploy.md).
struct rpc_worker_options {
    std::string host      = "127.0.0.1";
    uint16_t    port      = 50052;
    int32_t     n_threads = 0; // CPU device threads; 0 = the physical cores (ggml's count)
    std::string cache_dir;     // where the worker caches tensors a leader sent before (empty: none)
    // ggml device names to serve ("CUDA0,CUDA1"); empty: every GPU, or the CPU when there is none.
    std::string devices;
};

// Runs the worker until the process is signalled. Returns non-zero (after logging why) when it
// cannot start: an unknown device, a port that cannot be bound, a build without RPC.
int run_rpc_worker(const rpc_worker_options &o);

// Installs `fn` as the receiver of ggml's fatal errors (GGML_ABORT, GGML_ASSERT): it gets ggml's
// message and must not return (ggml calls abort() after it). Replaces any earlier handler; an
// empty function restores ggml's default (print and abort).
void set_fatal_handler(std::function<void(const std::string &)> fn);

} // namespace inferbox

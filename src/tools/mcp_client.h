#pragma once
// A client of one MCP (Model Context Protocol) server the operator configured
// (`--mcp-server NAME=stdio:COMMAND ARGS...` or `--mcp-server NAME=http://HOST:PORT/PATH`), never
// one a request names. Two transports:
//
// - stdio: the server runs as a child process (its own process group, stderr discarded, a minimal
//   environment) and speaks newline-delimited JSON-RPC 2.0 on its stdin and stdout, which are one
//   socket pair (a server that exits is an error, never a SIGPIPE). A server that exits is started
//   again on the next call, at most once every 5 s.
// - streamable HTTP (MCP 2025-03-26 and later): each JSON-RPC message is POSTed to the one
//   endpoint URL (`Accept: application/json, text/event-stream`); the server answers with a JSON
//   body or an event stream that carries the answer. The `Mcp-Session-Id` initialize returned goes
//   with every later request (and `MCP-Protocol-Version`, the version agreed); a 404 to a request
//   that carried it means the session expired: the client runs initialize again and retries the
//   request once. The session is ended with DELETE when the client is destroyed. https verifies
//   certificates. Headers the operator names (`header.NAME=ENV:VAR`) are sent with every request,
//   their values read from inferbox's environment when the spec is parsed. Answers are bounded
//   (8 MiB per message) like the stdio transport's lines, and the timeout covers the whole exchange.
//
// start() connects (spawns the process), runs the initialize handshake and lists its tools (all
// pages, at most 256); the operator's allow-list, when given, keeps only the named ones.
// call_tool() sends tools/call and waits for the answer up to the server's timeout; past it the
// call is cancelled (notifications/cancelled) and fails. Requests the server sends us are answered
// (ping) or refused (method not found); its notifications are read and dropped. Thread-safe: calls
// from several requests share the one process or session.

#include "common/status.h"
#include "tools/builtin_tool.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace inferbox {

enum class mcp_transport_kind { stdio, http };

struct mcp_server_spec {
    std::string                                      name;
    mcp_transport_kind                               transport = mcp_transport_kind::stdio;
    std::vector<std::string>                         command;       // stdio: argv, the program, then its arguments
    std::string                                      url;           // http: the endpoint, http:// or https://
    std::vector<std::pair<std::string, std::string>> headers;       // http: sent with every request (name, value)
    std::vector<std::string>                         allowed_tools; // empty: every tool the server lists
    int32_t                                          timeout_ms = 10'000;
};

// NAME=stdio:PROGRAM ARG...[;allowed-tools=a,b][;timeout-ms=N], or
// NAME=http(s)://HOST[:PORT][/PATH][;allowed-tools=a,b][;timeout-ms=N][;header.NAME=ENV:VAR]...
// The command is split on blanks (no shell, no quoting); NAME is letters, digits, '_' and '-' (at
// most 64). A URL has no credentials (use a header), no blanks and at most 2048 bytes; a header's
// value is the environment variable VAR, which must be set (at most 16 headers, 8 KiB each, and
// not one the transport sets itself).
result<mcp_server_spec> parse_mcp_server_spec(const std::string &text);

struct mcp_tool_info {
    std::string name;
    std::string description;
    std::string input_schema; // JSON text
};

class mcp_client {
  public:
    static result<std::shared_ptr<mcp_client>> start(mcp_server_spec spec);
    ~mcp_client();
    mcp_client(const mcp_client &)            = delete;
    mcp_client &operator=(const mcp_client &) = delete;

    const std::string         &name() const;
    std::vector<mcp_tool_info> tools() const;

    // The tool's text content (joined; other content described in brackets), at most 16 KiB.
    // An error when the server reports one (isError), times out, or is gone.
    result<std::string> call_tool(const std::string &tool, const std::string &arguments_json);

    struct impl;

  private:
    explicit mcp_client(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

// One allowed tool of a server as a built-in tool (kind "mcp", item type "mcp_call"), offered to
// the model under the tool's own name with its input schema.
std::shared_ptr<builtin_tool> make_mcp_tool(std::shared_ptr<mcp_client> client, mcp_tool_info tool);

} // namespace inferbox

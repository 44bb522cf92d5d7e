#pragma once
// A tool the server runs itself for a model: agent/tool_loop.h offers it as a function, runs the
// model's calls to it between two steps, and shows each call to the client as an output item of
// the tool's own type. Implementations: the `sql` tool (tools/sql_database.h) and MCP servers'
// tools (tools/mcp_client.h).
//
// run() is called on a worker thread, possibly for several requests at once; it must bound its own
// time and output, and report failures as an error the model reads (never throw).

#include <string>

namespace inferbox {

// How the model sees the tool: the function it calls, and a JSON Schema (as JSON text) that the
// grammar holds its arguments to.
struct tool_function {
    std::string name;
    std::string description;
    std::string parameters;
};

struct tool_outcome {
    std::string output; // what the model is given back
    std::string error;  // non-empty when the call failed: the model is shown "error: " + this
};

class builtin_tool {
  public:
    virtual ~builtin_tool() = default;

    virtual tool_function function() const = 0;
    // The family, as tool_choice names it ("sql", "mcp"), and what it runs on (a database's name,
    // an MCP server's label).
    virtual std::string kind() const   = 0;
    virtual std::string server() const = 0;
    // The output item's type ("sql_call", "mcp_call").
    virtual std::string item_type() const = 0;

    virtual tool_outcome run(const std::string &arguments_json) const = 0;
};

} // namespace inferbox

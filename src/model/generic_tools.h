#pragma once
// Tool calls for models whose chat template has no tool-call format (ChatML, many community
// GGUFs): inferbox's own generic format. The tools are described to the model in a system turn,
// and a call is one JSON object generated under a grammar compiled from a schema built here:
//
//     {"tool_calls": [{"name": "<function>", "arguments": {<its parameters>}}, ...]}
//
// Under "required" (or a named function) the grammar holds from the first token; under "auto" it
// is lazy, triggered by the text `{"tool_calls"`, so the model may answer in prose instead. The
// reader below reads that object back, whole or while it is being generated (name first, then the
// arguments as raw text, so what it reports only ever grows). No llama.cpp here: unit-testable.

#include "model/model.h"

#include <string>
#include <vector>

namespace inferbox {

// The text that starts a call object in the output; the lazy grammar's trigger.
inline constexpr const char *generic_tools_trigger = "{\"tool_calls\"";

// The system-turn text that describes the tools and how to call them.
std::string generic_tools_prompt(const chat_inputs &in);

// The JSON Schema (as text) of the call object: name before arguments, each tool's parameters as
// given (their property order kept), at most one call unless parallel_tool_calls.
std::string generic_tools_schema(const chat_inputs &in);

// The conversation for a template without tool support: the tool description joins (or becomes)
// the first system message, an assistant turn's calls are written as the call object, and a tool
// result becomes a user turn naming the call it answers.
std::vector<chat_message> generic_tools_messages(const chat_inputs &in);

struct generic_read {
    std::string                 content;          // text before the call object
    std::vector<chat_tool_call> calls;            // complete calls; while partial, the last may be incomplete
    bool                        found    = false; // a call object started
    bool                        complete = false; // ... and ended (or: no call object, text whole)
    bool                        valid    = true;  // false: the object does not follow the format
};

// Reads `text`. partial: the text is still growing, so a tail that may be the start of the
// trigger is held back from `content`, and a call is reported once its name is complete, its
// arguments as far as they go.
generic_read read_generic_tools(const std::string &text, bool partial);

} // namespace inferbox

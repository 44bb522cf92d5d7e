#pragma once
// `inferbox run MODEL [PROMPT...]`: chat with a model in the terminal, on the same engine as
// `serve` and with no HTTP in between.
//
// With a prompt (or with stdin not a terminal: the whole of stdin is the prompt) it answers once
// on stdout and exits, so it can be piped. Otherwise it is interactive: tokens stream as they
// come, the conversation is kept (the oldest turns are dropped when it outgrows the context),
// Ctrl-C stops a reply without quitting, and Ctrl-D or /bye quits; /clear starts over. A model
// without a chat template continues the text it is given instead of chatting.

#include <functional>

namespace CLI { // NOLINT(readability-identifier-naming): CLI11's namespace
class App;
}

namespace inferbox {

// Adds `run` to `app`; when app.parse() picks it, `action` is set to run it.
void add_run_command(CLI::App &app, std::function<int()> &action);

} // namespace inferbox

#pragma once
// `inferbox team run NAME "TASK"`: runs the team team/NAME of a running inferbox (POST
// /v1/responses, stream: true) and prints its trace live in the terminal as the server streams it
// (docs/agents.md#teams): the team and its members (GET /v1/models), each captain step that calls
// members, each member call as it starts (member, sub-task) and ends (status, model, where it ran,
// tokens, time, its output or error), each tool call a member made (tool, arguments, result), the
// captain's own text as it is written, then the answer and the run's status and usage.
//
// Talks to the server with --url (default http://127.0.0.1:8000, serve's default) and the API key of --api-key or
// INFERBOX_API_KEY. Exit 0 when the run completed or ended at a budget (incomplete, named);
// 1 with the server's message on stderr when the server cannot be reached, answers an error (an
// unknown team, a bad key) or the run failed.

#include <functional>

namespace CLI { // NOLINT(readability-identifier-naming): CLI11's namespace
class App;
}

namespace inferbox {

// Adds `team run` to `app`; when app.parse() picks it, `action` is set to run it.
void add_team_commands(CLI::App &app, std::function<int()> &action);

} // namespace inferbox

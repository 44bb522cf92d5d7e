#pragma once
// What the CLI subcommands share for their output: one-line errors on stderr, JSON and aligned
// tables on stdout, and display-safe text from model files.

#include "fetch/pull.h"

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace inferbox {

// "inferbox COMMAND: message" on stderr, on one line; returns the exit code 1.
int cli_fail(const char *command, const std::string &message);

// Pretty JSON on stdout; invalid UTF-8 (strings from model files) is replaced.
void print_json(const nlohmann::json &j);

// Rows of cells in columns two spaces apart; the first row sets the column count.
void print_table(const std::vector<std::vector<std::string>> &table);

// A string from a model file or /proc, safe to print on one line, cut to `max_chars`.
std::string display_text(const std::string &s, size_t max_chars);

// Fills `opts.on_progress` and `opts.on_notice` to report a download on stderr: a redrawn bar
// when stderr is a terminal, otherwise a plain line every few seconds (for logs); both end with
// one summary line. `label` starts each line ("pull", "serve").
void report_pull_on_stderr(pull_options &opts, const std::string &label);

// "1.2 GiB of 3.4 GiB (35%) at 45.0 MiB/s" and, on a terminal, the bar: exposed for tests.
std::string format_progress(const download_progress &p, bool bar);

} // namespace inferbox

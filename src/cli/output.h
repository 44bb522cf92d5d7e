#pragma once
// What the CLI subcommands share for their output: one-line errors on stderr, JSON and aligned
// tables on stdout, and display-safe text from model files.

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

} // namespace inferbox

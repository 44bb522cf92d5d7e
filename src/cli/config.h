#pragma once
// Layered configuration for the command line: defaults < config file (YAML) < environment
// (INFERBOX_*) < command line.
//
// The config file is YAML: top-level keys are global options (log-format, log-level) and each
// subcommand has a section of its options, named as on the command line without the dashes
// ('_' may stand for '-'):
//
//   log-format: json
//   serve:
//     model: org/my-model
//     port: 8000
//     ctx-size: 4096
//     api-key: [key-one, key-two]
//     metrics-public: true
//
// Where it is: --config FILE or INFERBOX_CONFIG, else the first that exists of
// $XDG_CONFIG_HOME/inferbox/config.yaml (~/.config/inferbox/config.yaml) and
// /etc/inferbox/config.yaml. An unknown key, a nested section or a malformed file is an error
// naming the file and the key.
//
// Every configurable serve option also reads INFERBOX_<NAME> (upper case, '-' → '_'), e.g.
// INFERBOX_CTX_SIZE. CLI11 applies a config file before the environment and never lets a later
// source replace an earlier one, so the YAML reader drops settings whose variable is set: the
// environment then wins, as the layering says.

#include <CLI/CLI.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace inferbox {

// INFERBOX_<NAME> for an option's long name ("ctx-size" → "INFERBOX_CTX_SIZE").
std::string env_name_for(const std::string &option_name);

// Reads YAML into CLI11's config items (see above). `app` validates names; exceptions are
// CLI::ConfigError with a message naming `file` and the problem.
class yaml_config : public CLI::Config {
  public:
    explicit yaml_config(const CLI::App *app) : app_(app) {}
    std::string                  to_config(const CLI::App *app, bool default_also, bool write_description,
                                           std::string prefix) const override;
    std::vector<CLI::ConfigItem> from_config(std::istream &input) const override;

    // The items of a file as it is, before the environment filter; for `inferbox config`.
    std::vector<CLI::ConfigItem> read_all(std::istream &input) const;

  private:
    std::vector<CLI::ConfigItem> parse(std::istream &input, bool drop_env_overridden) const;
    const CLI::App              *app_;
};

// The default config file: the first existing one of the user's and the system's, else "".
std::string default_config_file();

// Wires the layers into `app`: the global --config option (INFERBOX_CONFIG), the YAML reader,
// and INFERBOX_* variables for every configurable option of `serve`.
void enable_layered_config(CLI::App &app, CLI::App &serve);

// `inferbox config [--json]`: the effective serve settings and where each came from. Adds the
// subcommand; when it runs, `action` is set.
void add_config_command(CLI::App &app, CLI::App &serve, std::function<int()> &action);

} // namespace inferbox

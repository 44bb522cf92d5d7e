#include "cli/config.h"

#include "cli/output.h"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace inferbox {

namespace {

namespace fs = std::filesystem;

std::string normalise_key(std::string key) {
    std::replace(key.begin(), key.end(), '_', '-');
    return key;
}

bool env_set(const std::string &name) {
    const char *v = std::getenv(name.c_str());
    return v != nullptr && *v != '\0';
}

// The subcommand called `name`, or null.
const CLI::App *find_subcommand(const CLI::App &app, const std::string &name) {
    for (const CLI::App *sub : app.get_subcommands([](const CLI::App *) { return true; })) {
        if (sub->get_name() == name) {
            return sub;
        }
    }
    return nullptr;
}

// The configurable option `--name` of `app`, or null.
const CLI::Option *config_option(const CLI::App &app, const std::string &name) {
    const CLI::Option *o = app.get_option_no_throw("--" + name);
    return (o != nullptr && o->get_configurable() && !o->get_lnames().empty()) ? o : nullptr;
}

std::string config_file_of(const CLI::App &app) {
    const CLI::Option *c = app.get_config_ptr();
    if (c == nullptr) {
        return "config file";
    }
    if (c->count() > 0 && !c->results().empty()) {
        return c->results().front();
    }
    return c->get_default_str().empty() ? std::string("config file") : c->get_default_str();
}

// A backend written as a mapping (serve's `backend:` list) in the one-line form --backend takes:
// name and url first, lists joined with ',', `labels:` as label.NAME keys (backend/backend_spec.h).
std::string backend_entry(const YAML::Node &m, const std::string &where) {
    if (!m["name"] || !m["url"] || !m["name"].IsScalar() || !m["url"].IsScalar()) {
        throw CLI::ConfigError(where + ": a backend entry needs a name and a url");
    }
    std::string out = m["name"].Scalar() + "=" + m["url"].Scalar();
    for (const auto &kv : m) {
        const std::string key = normalise_key(kv.first.as<std::string>());
        if (key == "name" || key == "url") {
            continue;
        }
        if (kv.second.IsScalar()) {
            out += ";" + key + "=" + kv.second.Scalar();
        } else if (kv.second.IsSequence()) {
            std::string joined;
            for (const auto &v : kv.second) {
                if (!v.IsScalar()) {
                    throw CLI::ConfigError(where + "." + key + ": a list of plain values");
                }
                joined += (joined.empty() ? "" : ",") + v.Scalar();
            }
            out += ";" + key + "=" + joined;
        } else if (kv.second.IsMap() && key == "labels") {
            for (const auto &label : kv.second) {
                out += ";label." + label.first.as<std::string>() + "=" + label.second.as<std::string>();
            }
        } else {
            throw CLI::ConfigError(where + "." + key + ": expected a value or a list of values");
        }
    }
    return out;
}

// A route written as a mapping (serve's `route:` list) in the one-line form --route takes:
// MODEL=POLICY then ;KEY=VALUE for the rest (pull, sha256; backend/routing.h).
std::string route_entry(const YAML::Node &m, const std::string &where) {
    if (!m["model"] || !m["model"].IsScalar()) {
        throw CLI::ConfigError(where + ": a route entry needs a model");
    }
    std::string out = m["model"].Scalar() + "=" + (m["policy"] ? m["policy"].as<std::string>() : std::string("auto"));
    for (const auto &kv : m) {
        const std::string key = normalise_key(kv.first.as<std::string>());
        if (key == "model" || key == "policy") {
            continue;
        }
        if (!kv.second.IsScalar()) {
            throw CLI::ConfigError(where + "." + key + ": expected a value");
        }
        out += ";" + key + "=" + kv.second.Scalar();
    }
    return out;
}

// A value of a --team entry: ';' and '\' escaped (agent/team.h).
std::string team_value(const YAML::Node &v, const std::string &where) {
    if (!v.IsScalar()) {
        throw CLI::ConfigError(where + ": expected a value");
    }
    std::string out;
    for (char c : v.Scalar()) {
        if (c == ';' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    return out;
}

// A YAML node as JSON text, keys in the file's order (a JSON Schema's property order is the order
// the model writes them in). Plain scalars that read as JSON literals (true, false, null, numbers)
// stay literals; quoted scalars are strings.
std::string yaml_json(const YAML::Node &v) {
    if (v.IsMap()) {
        std::string out = "{";
        for (const auto &kv : v) {
            out += (out.size() > 1 ? "," : "") + nlohmann::json(kv.first.Scalar()).dump() + ":" + yaml_json(kv.second);
        }
        return out + "}";
    }
    if (v.IsSequence()) {
        std::string out = "[";
        for (const auto &e : v) {
            out += (out.size() > 1 ? "," : "") + yaml_json(e);
        }
        return out + "]";
    }
    if (!v.IsScalar()) {
        return "null";
    }
    const std::string &s = v.Scalar();
    if (v.Tag() != "!" && (s == "true" || s == "false" || s == "null" ||
                           (!s.empty() && nlohmann::json::accept(s) && nlohmann::json::parse(s).is_number()))) {
        return s;
    }
    return nlohmann::json(s).dump();
}

// A team written as a mapping (serve's `team:` list) in the one-line form --team takes:
//   - name: crew
//     captain: {model: M, instructions: TEXT}   (or `captain: M` with `instructions:` beside it)
//     members:
//       - {name: analyst, model: M, instructions: TEXT, tools: [sql:shop], max-tool-calls: 4}
std::string team_entry(const YAML::Node &m, const std::string &where) {
    const YAML::Node captain = m["captain"];
    if (!m["name"] || !m["name"].IsScalar() || !captain || !m["members"] || !m["members"].IsSequence()) {
        throw CLI::ConfigError(where + ": a team entry needs a name, a captain and a list of members");
    }
    const YAML::Node model = captain.IsMap() ? captain["model"] : captain;
    if (!model || !model.IsScalar()) {
        throw CLI::ConfigError(where + "." + m["name"].Scalar() + ".captain: the captain's model");
    }
    std::string      out = m["name"].Scalar() + "=" + team_value(model, where);
    const YAML::Node instructions =
        captain.IsMap() && captain["instructions"] ? captain["instructions"] : m["instructions"];
    if (instructions) {
        out += ";instructions=" + team_value(instructions, where + ".instructions");
    }
    for (const auto &member : m["members"]) {
        if (!member.IsMap() || !member["name"] || !member["model"] || !member["name"].IsScalar()) {
            throw CLI::ConfigError(where + ".members: each member needs a name and a model");
        }
        const std::string k = ";member." + member["name"].Scalar();
        out += k + "=" + team_value(member["model"], where + ".members.model");
        for (const auto &kv : member) {
            const std::string key = normalise_key(kv.first.as<std::string>());
            if (key == "name" || key == "model") {
                continue;
            }
            std::string value;
            if (key == "schema" && !kv.second.IsScalar()) {
                // A JSON Schema written in YAML: its JSON text, escaped as any value.
                value = team_value(YAML::Node(yaml_json(kv.second)), where);
            } else if (kv.second.IsSequence()) {
                for (const auto &v : kv.second) {
                    value += (value.empty() ? "" : ",") + team_value(v, where + ".members." + key);
                }
            } else {
                value = team_value(kv.second, where + ".members." + key);
            }
            out += k + "." + key + "=" + value;
        }
    }
    return out;
}

// A value of an --mcp-server entry: ';' separates its options, so it cannot be in one.
std::string mcp_value(const YAML::Node &v, const std::string &where) {
    if (!v.IsScalar()) {
        throw CLI::ConfigError(where + ": expected a value");
    }
    if (v.Scalar().find(';') != std::string::npos) {
        throw CLI::ConfigError(where + ": a value cannot hold ';' (it separates the options of --mcp-server)");
    }
    return v.Scalar();
}

// An MCP server written as a mapping (serve's `mcp-server:` list) in the one-line form
// --mcp-server takes (tools/mcp_client.h): `url:` for streamable HTTP or `command:` (one string,
// or a list of words) for stdio; lists joined with ','; `headers:` as header.NAME keys:
//   - {name: tools, url: "https://mcp.example.com/mcp", allowed-tools: [echo], headers: {Authorization: ENV:MCP_TOKEN}}
//   - {name: files, command: [mcp-server-filesystem, /srv/data], timeout-ms: 5000}
std::string mcp_server_entry(const YAML::Node &m, const std::string &where) {
    const bool has_url = m["url"].IsDefined(), has_command = m["command"].IsDefined();
    if (!m["name"] || !m["name"].IsScalar() || has_url == has_command) {
        throw CLI::ConfigError(where + ": an MCP server entry needs a name and either a url or a command");
    }
    std::string out = mcp_value(m["name"], where + ".name") + "=";
    if (has_url) {
        out += mcp_value(m["url"], where + ".url");
    } else if (m["command"].IsSequence()) {
        std::string words;
        for (const auto &w : m["command"]) {
            const std::string word = mcp_value(w, where + ".command");
            if (word.empty() || word.find_first_of(" \t") != std::string::npos) {
                throw CLI::ConfigError(where + ".command: '" + word +
                                       "': each word must be non-empty and hold no blank (no shell, no quoting)");
            }
            words += (words.empty() ? "" : " ") + word;
        }
        out += "stdio:" + words;
    } else {
        out += "stdio:" + mcp_value(m["command"], where + ".command");
    }
    for (const auto &kv : m) {
        const std::string key = normalise_key(kv.first.as<std::string>());
        if (key == "name" || key == "url" || key == "command") {
            continue;
        }
        if (key == "headers") {
            if (!kv.second.IsMap()) {
                throw CLI::ConfigError(where + ".headers: a mapping of header names to ENV:VARIABLE");
            }
            for (const auto &h : kv.second) {
                out += ";header." + h.first.as<std::string>() + "=" + mcp_value(h.second, where + ".headers");
            }
        } else if (kv.second.IsSequence()) {
            std::string joined;
            for (const auto &v : kv.second) {
                joined += (joined.empty() ? "" : ",") + mcp_value(v, where + "." + key);
            }
            out += ";" + key + "=" + joined;
        } else {
            out += ";" + key + "=" + mcp_value(kv.second, where + "." + key);
        }
    }
    return out;
}

bool ends_with(const std::string &s, std::string_view tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::vector<std::string> inputs_of(const YAML::Node &value, const std::string &where) {
    std::vector<std::string> inputs;
    const bool               backends = ends_with(where, "backend");
    const bool               routes   = ends_with(where, "route");
    const bool               teams    = ends_with(where, "team");
    const bool               mcp      = ends_with(where, "mcp-server");
    if (value.IsScalar()) {
        inputs.push_back(value.Scalar());
    } else if (value.IsSequence()) {
        for (const YAML::Node &v : value) {
            if (backends && v.IsMap()) {
                inputs.push_back(backend_entry(v, where));
                continue;
            }
            if (routes && v.IsMap()) {
                inputs.push_back(route_entry(v, where));
                continue;
            }
            if (teams && v.IsMap()) {
                inputs.push_back(team_entry(v, where));
                continue;
            }
            if (mcp && v.IsMap()) {
                inputs.push_back(mcp_server_entry(v, where));
                continue;
            }
            if (!v.IsScalar()) {
                throw CLI::ConfigError(where + ": a list may only hold plain values");
            }
            inputs.push_back(v.Scalar());
        }
    } else {
        throw CLI::ConfigError(where + ": expected a value or a list of values, not a section");
    }
    return inputs;
}

// Every configurable long option of `app` with its value from the items, the environment or
// its default; for `inferbox config`.
struct setting {
    std::string name, value, source;
};

std::vector<setting> effective_settings(const CLI::App &app, const std::string &section,
                                        const std::vector<CLI::ConfigItem> &items, const std::string &file) {
    std::vector<setting> out;
    for (const CLI::Option *o : app.get_options()) {
        if (o->get_lnames().empty() || !o->get_configurable() || o == app.get_help_ptr() || o == app.get_config_ptr()) {
            continue;
        }
        setting s;
        s.name = (section.empty() ? "" : section + ".") + o->get_lnames().front();
        if (!o->get_envname().empty() && env_set(o->get_envname())) {
            s.value  = std::getenv(o->get_envname().c_str());
            s.source = "environment " + o->get_envname();
        } else {
            const auto it = std::find_if(items.begin(), items.end(), [&](const CLI::ConfigItem &i) {
                const std::string parent = i.parents.empty() ? "" : i.parents.front();
                return parent == section && i.name == o->get_lnames().front();
            });
            if (it != items.end()) {
                for (const std::string &v : it->inputs) {
                    s.value += (s.value.empty() ? "" : ",") + v;
                }
                s.source = file;
            } else {
                s.value  = o->get_default_str();
                s.source = "default";
            }
        }
        out.push_back(std::move(s));
    }
    return out;
}

} // namespace

std::string env_name_for(const std::string &option_name) {
    std::string out = "INFERBOX_";
    for (char c : option_name) {
        out += c == '-' ? '_' : char(std::toupper(static_cast<unsigned char>(c)));
    }
    return out;
}

std::string yaml_config::to_config(const CLI::App *app, bool default_also, bool, std::string) const {
    YAML::Emitter out;
    out << YAML::BeginMap;
    const auto emit = [&](const CLI::App &a) {
        for (const CLI::Option *o : a.get_options()) {
            if (o->get_lnames().empty() || !o->get_configurable() || o == a.get_help_ptr()) {
                continue;
            }
            std::vector<std::string> values = o->reduced_results();
            if (values.empty() && default_also && !o->get_default_str().empty()) {
                values = {o->get_default_str()};
            }
            if (values.empty()) {
                continue;
            }
            out << YAML::Key << o->get_lnames().front() << YAML::Value;
            if (values.size() == 1) {
                out << values.front();
            } else {
                out << YAML::Flow << values;
            }
        }
    };
    emit(*app);
    for (const CLI::App *sub : app->get_subcommands([](const CLI::App *) { return true; })) {
        out << YAML::Key << sub->get_name() << YAML::Value << YAML::BeginMap;
        emit(*sub);
        out << YAML::EndMap;
    }
    out << YAML::EndMap;
    return std::string(out.c_str()) + "\n";
}

std::vector<CLI::ConfigItem> yaml_config::from_config(std::istream &input) const {
    return parse(input, true);
}

std::vector<CLI::ConfigItem> yaml_config::read_all(std::istream &input) const {
    return parse(input, false);
}

std::vector<CLI::ConfigItem> yaml_config::parse(std::istream &input, bool drop_env_overridden) const {
    const std::string file = config_file_of(*app_);
    YAML::Node        root;
    try {
        root = YAML::Load(input);
    } catch (const YAML::Exception &e) {
        throw CLI::ConfigError(file + ": not valid YAML: " + e.what());
    }
    std::vector<CLI::ConfigItem> items;
    if (root.IsNull()) {
        return items; // an empty file
    }
    if (!root.IsMap()) {
        throw CLI::ConfigError(file + ": expected a mapping of settings at the top level");
    }
    const auto add = [&](const CLI::App &owner, const std::string &section, const std::string &key,
                         const YAML::Node &value) {
        const std::string  where = file + ": " + (section.empty() ? "" : section + ".") + key;
        const CLI::Option *o     = config_option(owner, key);
        if (o == nullptr) {
            throw CLI::ConfigError(where + " is not a setting (see inferbox " + (section.empty() ? "" : section + " ") +
                                   "--help)");
        }
        if (value.IsNull()) {
            return;
        }
        CLI::ConfigItem item;
        if (!section.empty()) {
            item.parents = {section};
        }
        item.name   = o->get_lnames().front();
        item.inputs = inputs_of(value, where);
        if (drop_env_overridden && !o->get_envname().empty() && env_set(o->get_envname())) {
            return; // the environment outranks the file
        }
        items.push_back(std::move(item));
    };
    for (const auto &kv : root) {
        const std::string key = normalise_key(kv.first.as<std::string>());
        if (kv.second.IsMap()) {
            const CLI::App *sub = find_subcommand(*app_, key);
            if (sub == nullptr) {
                throw CLI::ConfigError(file + ": " + key + " is not a command with settings (use e.g. serve:)");
            }
            for (const auto &inner : kv.second) {
                add(*sub, key, normalise_key(inner.first.as<std::string>()), inner.second);
            }
        } else {
            add(*app_, "", key, kv.second);
        }
    }
    return items;
}

std::string default_config_file() {
    std::vector<fs::path> candidates;
    if (const char *x = std::getenv("XDG_CONFIG_HOME"); x != nullptr && *x != '\0') {
        candidates.push_back(fs::path(x) / "inferbox" / "config.yaml");
    } else if (const char *h = std::getenv("HOME"); h != nullptr && *h != '\0') {
        candidates.push_back(fs::path(h) / ".config" / "inferbox" / "config.yaml");
    }
    candidates.emplace_back("/etc/inferbox/config.yaml");
    for (const fs::path &p : candidates) {
        std::error_code ec;
        if (fs::is_regular_file(p, ec)) {
            return p.string();
        }
    }
    return "";
}

void enable_layered_config(CLI::App &app, CLI::App &serve) {
    // CLI11 reads the config file before it looks at the environment, so INFERBOX_CONFIG is
    // applied here, as the default; naming a file that way makes it required, like --config.
    const char *from_env = std::getenv("INFERBOX_CONFIG");
    const bool  env_file = from_env != nullptr && *from_env != '\0';
    app.set_config("--config", env_file ? std::string(from_env) : default_config_file(),
                   "YAML configuration file (default: $INFERBOX_CONFIG, else ~/.config/inferbox/config.yaml, else "
                   "/etc/inferbox/config.yaml)",
                   env_file);
    app.config_formatter(std::make_shared<yaml_config>(&app));
    for (CLI::Option *o : serve.get_options()) {
        if (o->get_lnames().empty() || o == serve.get_help_ptr() || !o->get_configurable()) {
            continue;
        }
        if (o->get_envname().empty()) {
            o->envname(env_name_for(o->get_lnames().front()));
        }
    }
}

void add_config_command(CLI::App &app, CLI::App &serve, std::function<int()> &action) {
    auto as_json = std::make_shared<bool>(false);
    auto cmd = app.add_subcommand("config", "print the effective serve configuration and where each value comes from "
                                            "(default < config file < INFERBOX_* environment < command line)");
    cmd->add_flag("--json", *as_json, "print JSON");
    cmd->callback([&app, &serve, &action, as_json] {
        action = [&app, &serve, as_json] {
            const CLI::Option           *c    = app.get_config_ptr();
            std::string                  file = c != nullptr ? c->as<std::string>() : std::string();
            std::string                  how  = "none found";
            std::vector<CLI::ConfigItem> items;
            if (!file.empty()) {
                std::ifstream in(file);
                if (!in) {
                    return cli_fail("config", file + ": cannot open");
                }
                how = env_set("INFERBOX_CONFIG") ? "from INFERBOX_CONFIG" : "";
                try {
                    items = yaml_config(&app).read_all(in);
                } catch (const CLI::ConfigError &e) {
                    return cli_fail("config", e.what());
                }
            }
            std::vector<setting> all = effective_settings(app, "", items, file);
            std::vector<setting> sv  = effective_settings(serve, "serve", items, file);
            all.insert(all.end(), sv.begin(), sv.end());
            if (*as_json) {
                nlohmann::json j = {{"config_file", file.empty() ? nlohmann::json(nullptr) : nlohmann::json(file)},
                                    {"settings", nlohmann::json::array()}};
                for (const setting &s : all) {
                    j["settings"].push_back({{"name", s.name}, {"value", s.value}, {"source", s.source}});
                }
                print_json(j);
                return 0;
            }
            std::printf("config file: %s%s\n", file.empty() ? "(none)" : file.c_str(),
                        file.empty() ? "" : (how.empty() ? "" : (" (" + how + ")").c_str()));
            std::vector<std::vector<std::string>> table = {{"SETTING", "VALUE", "SOURCE"}};
            for (const setting &s : all) {
                table.push_back({s.name, s.value.empty() ? "-" : display_text(s.value, 60), s.source});
            }
            print_table(table);
            std::printf("command-line flags override all of these.\n");
            return 0;
        };
    });
}

} // namespace inferbox

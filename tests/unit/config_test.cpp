// Configuration layering (cli/config.h): YAML into CLI11, defaults < file < INFERBOX_* < flags.
#include "cli/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace inferbox {
namespace {

namespace fs = std::filesystem;

// A small command line shaped like inferbox's: a global option and a serve section.
struct cli_fixture {
    CLI::App                 app{"test"};
    CLI::App                *serve      = nullptr;
    std::string              log_format = "text", model, host = "127.0.0.1";
    int                      port           = 8000;
    bool                     metrics_public = false;
    std::vector<std::string> keys;
    std::vector<std::string> backends;
    std::vector<std::string> routes;

    cli_fixture() {
        app.add_option("--log-format", log_format)->envname("INFERBOX_LOG_FORMAT")->capture_default_str();
        serve = app.add_subcommand("serve");
        serve->add_option("-m,--model", model);
        serve->add_option("MODEL", model)->configurable(false);
        serve->add_option("--host", host)->capture_default_str();
        serve->add_option("--port", port)->capture_default_str();
        serve->add_flag("--metrics-public", metrics_public);
        serve->add_option("--api-key", keys);
        serve->add_option("--backend", backends);
        serve->add_option("--route", routes);
        enable_layered_config(app, *serve);
    }
    void parse(std::vector<std::string> args) {
        std::reverse(args.begin(), args.end());
        app.parse(args);
    }
};

class config_file : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("inferbox-config-test-" + std::to_string(::getpid()));
        fs::create_directories(dir_);
        for (const char *v : {"INFERBOX_PORT", "INFERBOX_HOST", "INFERBOX_LOG_FORMAT", "INFERBOX_CONFIG"}) {
            ::unsetenv(v);
        }
    }
    void TearDown() override {
        fs::remove_all(dir_);
        ::unsetenv("INFERBOX_PORT");
    }
    std::string write(const std::string &text) {
        const fs::path p = dir_ / "config.yaml";
        std::ofstream(p) << text;
        return p.string();
    }
    fs::path dir_;
};

TEST(config, env_names) {
    EXPECT_EQ(env_name_for("ctx-size"), "INFERBOX_CTX_SIZE");
    EXPECT_EQ(env_name_for("port"), "INFERBOX_PORT");
    cli_fixture f;
    EXPECT_EQ(f.serve->get_option("--port")->get_envname(), "INFERBOX_PORT");
    EXPECT_EQ(f.serve->get_option("--metrics-public")->get_envname(), "INFERBOX_METRICS_PUBLIC");
    EXPECT_TRUE(f.serve->get_option("MODEL")->get_envname().empty()); // positionals are not configurable
}

TEST_F(config_file, file_values_apply_and_flags_win) {
    const std::string file = write("log_format: json\nserve:\n  model: org/m\n  port: 9001\n  metrics-public: true\n"
                                   "  api_key: [one, two]\n  host: ~\n");
    cli_fixture       f;
    f.parse({"--config", file, "serve", "--port", "9100"});
    EXPECT_EQ(f.log_format, "json");
    EXPECT_EQ(f.model, "org/m");
    EXPECT_EQ(f.port, 9100); // the command line outranks the file
    EXPECT_TRUE(f.metrics_public);
    EXPECT_EQ(f.keys, (std::vector<std::string>{"one", "two"}));
    EXPECT_EQ(f.host, "127.0.0.1"); // null: the default stays
}

TEST_F(config_file, backends_may_be_written_as_mappings) {
    const std::string file = write("serve:\n  backend:\n"
                                   "    - name: cloud\n      url: https://api.example.com/v1\n"
                                   "      models: [big, small=vendor/small]\n      api_key_env: CLOUD_KEY\n"
                                   "      labels: {tier: cloud}\n"
                                   "    - edge=http://10.0.0.5:8000/v1;models=tiny\n");
    cli_fixture       f;
    f.parse({"--config", file, "serve"});
    EXPECT_EQ(f.backends, (std::vector<std::string>{"cloud=https://api.example.com/v1;models=big,small=vendor/small;"
                                                    "api-key-env=CLOUD_KEY;label.tier=cloud",
                                                    "edge=http://10.0.0.5:8000/v1;models=tiny"}));
    const std::string bad = write("serve:\n  backend:\n    - url: http://h\n");
    cli_fixture       g;
    try {
        g.parse({"--config", bad, "serve"});
        ADD_FAILURE() << "a backend without a name was accepted";
    } catch (const CLI::ConfigError &e) {
        EXPECT_NE(std::string(e.what()).find("a backend entry needs a name and a url"), std::string::npos) << e.what();
    }
}

TEST_F(config_file, routes_may_be_written_as_mappings) {
    const std::string file = write("serve:\n  route:\n"
                                   "    - model: tiny\n      policy: local-first\n      pull: hf://org/repo/tiny.gguf\n"
                                   "    - {model: big}\n"
                                   "    - far=remote-only\n");
    cli_fixture       f;
    f.parse({"--config", file, "serve"});
    EXPECT_EQ(f.routes, (std::vector<std::string>{"tiny=local-first;pull=hf://org/repo/tiny.gguf", "big=auto",
                                                  "far=remote-only"}));
    const std::string bad = write("serve:\n  route:\n    - policy: balanced\n");
    cli_fixture       g;
    try {
        g.parse({"--config", bad, "serve"});
        ADD_FAILURE() << "a route without a model was accepted";
    } catch (const CLI::ConfigError &e) {
        EXPECT_NE(std::string(e.what()).find("a route entry needs a model"), std::string::npos) << e.what();
    }
}

TEST_F(config_file, environment_outranks_the_file) {
    const std::string file = write("serve:\n  port: 9001\n  host: 0.0.0.0\n");
    ::setenv("INFERBOX_PORT", "9002", 1);
    cli_fixture f;
    f.parse({"--config", file, "serve"});
    EXPECT_EQ(f.port, 9002);
    EXPECT_EQ(f.host, "0.0.0.0");
    cli_fixture g;
    g.parse({"--config", file, "serve", "--port", "9003"});
    EXPECT_EQ(g.port, 9003);
}

TEST_F(config_file, config_comes_from_INFERBOX_CONFIG) {
    const std::string file = write("serve:\n  port: 9005\n");
    ::setenv("INFERBOX_CONFIG", file.c_str(), 1);
    cli_fixture f;
    f.parse({"serve"});
    ::unsetenv("INFERBOX_CONFIG");
    EXPECT_EQ(f.port, 9005);
}

TEST_F(config_file, errors_name_the_file_and_the_key) {
    const auto fails = [&](const std::string &text, const std::string &want) {
        const std::string file = write(text);
        cli_fixture       f;
        try {
            f.parse({"--config", file, "serve"});
            ADD_FAILURE() << "accepted: " << text;
        } catch (const CLI::ParseError &e) {
            const std::string what = e.what();
            EXPECT_NE(what.find(file), std::string::npos) << what;
            EXPECT_NE(what.find(want), std::string::npos) << what;
        }
    };
    fails("serve:\n  bogus: 1\n", "serve.bogus is not a setting");
    fails("bogus: 1\n", "bogus is not a setting");
    fails("serve:\n  MODEL: x\n", "serve.MODEL is not a setting"); // positionals are not settings
    fails("serve: [1\n", "not valid YAML");
    fails("- a\n- b\n", "expected a mapping of settings");
    fails("nothing:\n  port: 1\n", "nothing is not a command with settings");
    fails("serve:\n  port:\n    deeper: 1\n", "serve.port: expected a value or a list of values");
    fails("serve:\n  api-key: [[a]]\n", "a list may only hold plain values");
}

TEST_F(config_file, an_empty_file_changes_nothing) {
    const std::string file = write("");
    cli_fixture       f;
    f.parse({"--config", file, "serve"});
    EXPECT_EQ(f.port, 8000);
}

TEST_F(config_file, read_all_keeps_what_the_environment_overrides) {
    const std::string file = write("serve:\n  port: 9001\n");
    ::setenv("INFERBOX_PORT", "9002", 1);
    cli_fixture   f;
    std::ifstream in(file);
    const auto    all = yaml_config(&f.app).read_all(in);
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all[0].fullname(), "serve.port");
    EXPECT_EQ(all[0].inputs, (std::vector<std::string>{"9001"}));
    std::ifstream in2(file);
    EXPECT_TRUE(yaml_config(&f.app).from_config(in2).empty());
}

} // namespace
} // namespace inferbox

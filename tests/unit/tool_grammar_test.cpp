// The two rewrites of llama.cpp's tool-call grammar (engine/model.h, probe_tool_grammar), per
// template family, on the chat templates that ship with the linked llama.cpp's source: what
// `tool_choice: "required"` and `parallel_tool_calls: false` promise depends on llama.cpp writing
// its grammar in the shape the rewrites match. When an upgrade changes that shape, these fail.

#include "engine/model.h"

#include <gtest/gtest.h>

#include <regex>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace inferbox {
namespace {

std::string read_template(const std::string &name) {
    const auto        path = std::filesystem::path(INFERBOX_LLAMA_SOURCE) / "models" / "templates" / name;
    std::ifstream     in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

chat_inputs weather_request(tool_choice choice, bool parallel) {
    chat_inputs in;
    in.messages            = {{"user", "Weather in Oslo?", {}, ""}};
    in.tools               = {{"get_weather", "Weather for a city",
                               R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})"}};
    in.choice              = choice;
    in.parallel_tool_calls = parallel;
    return in;
}

struct family {
    const char *file;
    bool        calls_first;       // the rewrite applies: llama.cpp's root lets free text precede the calls
    bool        one_call;          // the rewrite applies: llama.cpp repeats the call rule regardless
    bool        text_before_calls; // known gap: after the rewrites, "required" still allows text first
    bool        repeats_calls;     // known gap: after the rewrites, parallel_tool_calls false still repeats
};

// The root rule of a GBNF grammar.
std::string root_of(const std::string &g) {
    const size_t at  = g.rfind("root ::= ", 0) == 0 ? 0 : g.find("\nroot ::= ") + 1;
    const size_t end = g.find('\n', at);
    return g.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

bool allows_text_first(const std::string &root) {
    static const std::regex optional_text(R"(until-[0-9]+\?|"all\\n" until-)");
    return std::regex_search(root, optional_text);
}

bool repeats_calls(const std::string &g) {
    static const std::regex repeated(R"((^|\n)(tool-calls|tools) ::= [^\n]*\)\+)");
    return std::regex_search(g, repeated);
}

class tool_grammar : public ::testing::TestWithParam<family> {}; // NOLINT(readability-identifier-naming)

TEST_P(tool_grammar, RequiredAndSingleCallAreWhatTheGrammarEnforces) {
    const auto &f   = GetParam();
    const auto  src = read_template(f.file);
    ASSERT_FALSE(src.empty()) << "no template " << f.file << " under " << INFERBOX_LLAMA_SOURCE;

    auto required = probe_tool_grammar(src, weather_request(tool_choice::required, /*parallel=*/false));
    ASSERT_TRUE(required) << required.err().message;
    ASSERT_FALSE(required->common_grammar.empty()) << f.file << " (" << required->format << ") has no tool grammar";
    const std::string where = std::string(f.file) + " (" + required->format + ")";
    const std::string shown = "\n--- llama.cpp's grammar ---\n" + required->common_grammar;
    EXPECT_EQ(required->calls_first, f.calls_first)
        << where << ": calls_first " << (f.calls_first ? "no longer applies" : "now applies") << shown;
    EXPECT_EQ(required->one_call, f.one_call)
        << where << ": one_call " << (f.one_call ? "no longer applies" : "now applies") << shown;
    EXPECT_EQ(allows_text_first(root_of(required->grammar)), f.text_before_calls)
        << where << ": under \"required\" the answer " << (f.text_before_calls ? "no longer" : "now")
        << " may begin with text"
        << "\n--- after the rewrites ---\n"
        << required->grammar;
    EXPECT_EQ(repeats_calls(required->grammar), f.repeats_calls)
        << where << ": with parallel_tool_calls false the grammar " << (f.repeats_calls ? "no longer" : "now")
        << " repeats calls\n--- after the rewrites ---\n"
        << required->grammar;

    // "auto" with parallel calls: llama.cpp's grammar is used as it is.
    auto automatic = probe_tool_grammar(src, weather_request(tool_choice::automatic, /*parallel=*/true));
    ASSERT_TRUE(automatic) << automatic.err().message;
    EXPECT_FALSE(automatic->calls_first);
    EXPECT_FALSE(automatic->one_call);
    EXPECT_EQ(automatic->grammar, automatic->common_grammar);
}

// What the linked llama.cpp (node-llama-cpp 3.22.1's) writes, per family. Functionary's format
// keeps a text channel ("all") before calls and repeats calls whatever parallel_tool_calls says:
// neither rewrite matches its shape, so neither promise holds for it (docs/api.md).
INSTANTIATE_TEST_SUITE_P(
    families, tool_grammar,
    ::testing::Values(family{"NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", true, true, false, false},
                      family{"Qwen-Qwen2.5-7B-Instruct.jinja", true, true, false, false},
                      family{"meta-llama-Llama-3.1-8B-Instruct.jinja", true, false, false, false},
                      family{"mistralai-Mistral-Nemo-Instruct-2407.jinja", true, false, false, false},
                      family{"meetkai-functionary-medium-v3.2.jinja", false, false, true, true}));

TEST(tool_grammar_probe, ATemplateThatDoesNotParseIsAnError) {
    auto r = probe_tool_grammar("{% if %}", weather_request(tool_choice::required, true));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().kind, error_kind::invalid_request);
}

} // namespace
} // namespace inferbox

// The two rewrites of llama.cpp's tool-call grammar (model/model.h, probe_tool_grammar), per
// template family, on the chat templates that ship with the linked llama.cpp's source: what
// `tool_choice: "required"` and `parallel_tool_calls: false` promise depends on llama.cpp writing
// its grammar in the shape the rewrites match. When an upgrade changes that shape, these fail.

#include "model/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <regex>
#include <vector>

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

// Every template in the linked llama.cpp's source, as it renders today: its format, whether it
// has a tool grammar (without one, inferbox's generic format takes over: generic_tools.h), which
// rewrite applies, and what the final grammar allows (text before calls under "required", calls
// repeated with parallel_tool_calls false) as far as these two shapes show it. A template added,
// removed or rendered differently by an upgrade fails here and must be looked at.
struct rendered_family {
    const char *file;
    const char *format;
    bool        grammar, calls_first, one_call, text_before_calls, repeats_calls;
};

TEST(tool_grammar_table, EveryTemplateOfTheLinkedLlamaCppRendersAsRecorded) {
    static const rendered_family expected[] = {
        {"Apertus-8B-Instruct.jinja", "peg-native", true, true, false, false, false},
        {"Apriel-1.6-15b-Thinker-fixed.jinja", "peg-native", true, true, false, false, false},
        {"Bielik-11B-v3.0-Instruct.jinja", "peg-native", true, true, true, false, false},
        {"ByteDance-Seed-OSS.jinja", "peg-native", true, true, false, false, false},
        {"Cohere2MoE.jinja", "peg-native", true, false, false, false, false},
        {"CohereForAI-c4ai-command-r-plus-tool_use.jinja", "peg-native", true, false, false, false, false},
        {"CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", "peg-native", true, false, false, false, false},
        {"GLM-4.6.jinja", "peg-native", true, true, false, false, false},
        {"GLM-4.7-Flash.jinja", "peg-native", true, true, false, false, false},
        {"GigaChat3-10B-A1.8B.jinja", "peg-native", true, false, false, false, false},
        {"GigaChat3.1-10B-A1.8B.jinja", "peg-native", true, true, false, false, false},
        {"HuggingFaceTB-SmolLM3-3B.jinja", "peg-native", false, false, false, false, false},
        {"Kimi-K2-Instruct.jinja", "peg-native", true, false, false, false, false},
        {"Kimi-K2-Thinking.jinja", "peg-native", true, false, false, false, false},
        {"Kimi-K3.jinja", "peg-native", true, false, false, false, false},
        {"LFM2-8B-A1B.jinja", "peg-native", true, false, false, false, false},
        {"LFM2.5-8B-A1B.jinja", "peg-native", true, false, false, false, false},
        {"LFM2.5-Instruct.jinja", "peg-native", true, false, false, false, false},
        {"MiMo-VL.jinja", "peg-native", true, true, true, false, false},
        {"MiniMax-M1.jinja", "peg-native", true, true, false, false, false},
        {"MiniMax-M2.jinja", "peg-native", true, true, false, false, false},
        {"MiniMax-M3.jinja", "peg-minimax-m3", true, false, false, false, false},
        {"Mistral-Small-3.2-24B-Instruct-2506.jinja", "peg-native", true, true, false, false, false},
        {"NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja", "peg-native", true, false, false, false, false},
        {"NVIDIA-Nemotron-Nano-v2.jinja", "peg-native", true, true, true, false, false},
        {"NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", "peg-native", true, true, true, false, false},
        {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "peg-native", true, true, true, false, false},
        {"Qwen-QwQ-32B.jinja", "peg-native", true, true, true, false, false},
        {"Qwen-Qwen2.5-7B-Instruct.jinja", "peg-native", true, true, true, false, false},
        {"Qwen-Qwen3-0.6B.jinja", "peg-native", true, true, true, false, false},
        {"Qwen3-Coder.jinja", "peg-native", true, false, false, false, false},
        {"Qwen3.5-4B.jinja", "peg-native", true, false, false, false, false},
        {"Reka-Edge.jinja", "peg-native", true, true, true, false, false},
        {"Spark2.5.jinja", "peg-native", true, true, false, false, false},
        {"StepFun3.5-Flash.jinja", "peg-native", true, false, false, false, false},
        {"deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", "peg-native", false, false, false, false, false},
        {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "peg-native", true, true, false, false, false},
        {"deepseek-ai-DeepSeek-V3.1.jinja", "peg-native", true, true, false, false, false},
        {"deepseek-ai-DeepSeek-V3.2.jinja", "peg-native", true, false, false, false, false},
        {"deepseek-ai-DeepSeek-V4-Flash-0731.jinja", "peg-native", true, false, false, false, false},
        {"deepseek-ai-DeepSeek-V4.jinja", "peg-native", true, false, false, false, false},
        {"fireworks-ai-llama-3-firefunction-v2.jinja", "peg-native", true, true, false, false, false},
        {"google-gemma-2-2b-it.jinja", "peg-native", false, false, false, false, false},
        {"google-gemma-4-31B-it-interleaved.jinja", "peg-gemma4", true, false, false, false, false},
        {"google-gemma-4-31B-it.jinja", "peg-gemma4", true, false, false, false, false},
        {"ibm-granite-granite-3.3-2B-Instruct.jinja", "peg-native", false, false, false, false, false},
        {"ibm-granite-granite-4.0.jinja", "peg-native", true, true, true, false, false},
        {"ibm-granite-granite-4.1.jinja", "peg-native", true, true, true, false, false},
        {"inclusionai-ling-3.0-flash.jinja", "peg-native", true, false, false, true, false},
        {"llama-cpp-deepseek-r1.jinja", "peg-native", true, true, false, false, false},
        {"llama-cpp-rwkv-world.jinja", "peg-native", false, false, false, false, false},
        {"meetkai-functionary-medium-v3.1.jinja", "peg-native", true, true, false, false, false},
        {"meetkai-functionary-medium-v3.2.jinja", "peg-native", true, false, false, true, true},
        {"meta-llama-Llama-3.1-8B-Instruct.jinja", "peg-native", true, true, false, false, false},
        {"meta-llama-Llama-3.2-3B-Instruct.jinja", "peg-native", true, true, false, false, false},
        {"meta-llama-Llama-3.3-70B-Instruct.jinja", "peg-native", true, true, false, false, false},
        {"microsoft-Phi-3.5-mini-instruct.jinja", "peg-native", false, false, false, false, false},
        {"mistralai-Ministral-3-14B-Reasoning-2512.jinja", "peg-native", true, false, false, false, false},
        {"mistralai-Mistral-Nemo-Instruct-2407.jinja", "peg-native", true, true, false, false, false},
        {"moonshotai-Kimi-K2.jinja", "peg-native", true, false, false, false, false},
        {"muse-glimmer.jinja", "peg-native", true, false, false, false, false},
        {"openai-gpt-oss-120b.jinja", "peg-native", true, false, false, false, false},
        {"openbmb-MiniCPM5-1B.jinja", "peg-native", true, false, false, false, false},
        {"poolside-Laguna-S-2.1.jinja", "peg-native", true, true, false, false, false},
        {"poolside-Laguna-XS-2.1.jinja", "peg-native", true, true, false, false, false},
        {"poolside-Laguna-XS.2.jinja", "peg-native", true, true, false, false, false},
        {"tencent-Hy3.jinja", "peg-native", true, true, false, false, false},
        {"unsloth-Apriel-1.5.jinja", "peg-native", true, true, false, false, false},
        {"unsloth-mistral-Devstral-Small-2507.jinja", "peg-native", true, false, false, false, false},
        {"upstage-Solar-Open-100B.jinja", "peg-native", true, true, false, false, false},
    };
    std::vector<std::string> files;
    for (const auto &e :
         std::filesystem::directory_iterator(std::filesystem::path(INFERBOX_LLAMA_SOURCE) / "models" / "templates")) {
        if (e.path().extension() == ".jinja") {
            files.push_back(e.path().filename().string());
        }
    }
    std::sort(files.begin(), files.end());
    std::vector<std::string> listed;
    for (const auto &f : expected) {
        listed.emplace_back(f.file);
    }
    EXPECT_EQ(files, listed) << "llama.cpp's template set changed: update the table (and look at each new one)";
    for (const auto &f : expected) {
        auto r = probe_tool_grammar(read_template(f.file), weather_request(tool_choice::required, false));
        ASSERT_TRUE(r) << f.file << ": " << r.err().message;
        const auto was = [&] {
            return std::string(f.file) + ": format " + r->format + ", grammar " +
                   (r->common_grammar.empty() ? "no" : "yes") + ", calls_first " + std::to_string(r->calls_first) +
                   ", one_call " + std::to_string(r->one_call) + ", text first " +
                   std::to_string(allows_text_first(root_of(r->grammar))) + ", repeats " +
                   std::to_string(repeats_calls(r->grammar));
        };
        EXPECT_EQ(r->format, f.format) << was();
        EXPECT_EQ(!r->common_grammar.empty(), f.grammar) << was();
        EXPECT_EQ(r->calls_first, f.calls_first) << was();
        EXPECT_EQ(r->one_call, f.one_call) << was();
        EXPECT_EQ(allows_text_first(root_of(r->grammar)), f.text_before_calls) << was();
        EXPECT_EQ(repeats_calls(r->grammar), f.repeats_calls) << was();
    }
}

TEST(tool_grammar_probe, ATemplateThatDoesNotParseIsAnError) {
    auto r = probe_tool_grammar("{% if %}", weather_request(tool_choice::required, true));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().kind, error_kind::invalid_request);
}

// Each rendering runs under limits (patches/llama.cpp/0002): a template whose recursion follows the
// request's length stops at the nesting limit with a 400 naming it, where it used to overflow the
// stack; the same thread then renders the next request normally (the limits start afresh).
TEST(tool_grammar_probe, RecursionThatFollowsTheRequestStopsAtTheNestingLimit) {
    const std::string tmpl   = "{%- macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro -%}"
                               "{%- for m in messages %}{{ f(m.content|length) }}<|im_start|>{{ m.role }}\n"
                               "{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n";
    auto              deep   = weather_request(tool_choice::automatic, true);
    deep.messages[0].content = std::string(100000, 'x');
    auto r                   = probe_tool_grammar(tmpl, deep);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.err().code, "template_limit_exceeded");
    EXPECT_NE(r.err().message.find("nesting deeper than 512"), std::string::npos) << r.err().message;
    auto shallow = weather_request(tool_choice::automatic, true);
    auto ok      = probe_tool_grammar(tmpl, shallow);
    EXPECT_TRUE(ok) << ok.err().message;
}

} // namespace
} // namespace inferbox

#include "model/grammar.h"

#include "model/sampler_setup.h"

#include "json-schema-to-grammar.h"
#include "llama.h"
#include "sampling.h"

#include <exception>

namespace inferbox {

namespace {

common_grammar_trigger_type trigger_type_of(grammar_trigger::kind k) {
    switch (k) {
    case grammar_trigger::kind::pattern:
        return COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN;
    case grammar_trigger::kind::pattern_full:
        return COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL;
    case grammar_trigger::kind::token:
        return COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN;
    case grammar_trigger::kind::word:
        break;
    }
    return COMMON_GRAMMAR_TRIGGER_TYPE_WORD;
}

} // namespace

void apply_grammar(common_params_sampling &out, const sampling_params &in) {
    if (in.grammar.empty()) {
        return;
    }
    if (!in.grammar_for_tools) {
        // USER: the grammar constrains from the first generated token on (no prompt prefill).
        out.grammar = common_grammar(COMMON_GRAMMAR_TYPE_USER, in.grammar);
        return;
    }
    // TOOL_CALLS: as llama-server sets it up from common_chat_templates_apply's result.
    out.grammar           = common_grammar(COMMON_GRAMMAR_TYPE_TOOL_CALLS, in.grammar);
    out.grammar_lazy      = in.grammar_lazy;
    out.generation_prompt = in.generation_prompt;
    for (const auto &t : in.grammar_triggers) {
        common_grammar_trigger c;
        c.type  = trigger_type_of(t.type);
        c.value = t.value;
        c.token = t.token;
        out.grammar_triggers.push_back(std::move(c));
    }
    out.preserved_tokens.insert(in.preserved_tokens.begin(), in.preserved_tokens.end());
}

result<std::string> json_schema_to_gbnf(const std::string &schema_json, const std::string &param) {
    try {
        const auto schema = common_json::parse(schema_json);
        // force_gbnf: never the llguidance syntax, which the engine's sampler does not take.
        std::string g = json_schema_to_grammar(schema, /*force_gbnf=*/true);
        if (g.empty()) {
            return error::invalid(param + ": the schema produced an empty grammar", param);
        }
        return g;
    } catch (const std::exception &e) {
        // The converter throws invalid_argument ("JSON schema conversion failed: ...") on what it
        // cannot convert; its message names the schema location.
        std::string msg = e.what();
        for (auto &c : msg) {
            if (c == '\n') {
                c = ' ';
            }
        }
        return error::invalid(param + ": " + msg, param);
    }
}

result<std::string> json_object_gbnf() {
    return json_schema_to_gbnf(R"({"type":"object"})", "response_format");
}

std::optional<error> check_grammar(const model &m, const sampling_params &params, const std::string &param) {
    if (params.grammar.empty()) {
        return std::nullopt;
    }
    if (!m.has_eog()) {
        return error::invalid("this model has no end-of-generation token, so a constrained output could never end",
                              param);
    }
    common_params_sampling sp;
    apply_grammar(sp, params);
    sp.no_perf = true;
    try {
        common_sampler *s = common_sampler_init(m.raw(), sp);
        if (s == nullptr) {
            return error::invalid(param + ": llama.cpp could not build a sampler for this grammar", param);
        }
        common_sampler_free(s);
    } catch (const std::exception &e) {
        // llama.cpp's GBNF parser reports the exact syntax error on stderr only; the common
        // causes are an undefined rule, left recursion, or repetitions beyond its limits.
        return error::invalid(param + ": llama.cpp rejected the grammar (" + e.what() +
                                  "; an undefined rule, left recursion, a syntax error or repetition counts beyond "
                                  "its limits are the usual causes)",
                              param);
    }
    return std::nullopt;
}

} // namespace inferbox

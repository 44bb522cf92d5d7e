#include "model/model.h"

#include "model/generic_tools.h"
#include "model/grammar.h"
#include "model/template_probe.h"

#include "build-info.h"
#include "chat.h"
#include "common.h"
#include "jinja/runtime.h"
#include "llama.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <regex>
#include <system_error>

namespace inferbox {

struct model::templates {
    common_chat_templates_ptr ptr;
};

result<std::shared_ptr<model>> model::load(const model_options &opts) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(opts.path, ec)) {
        return error{error_kind::not_found, "model file not found or not a regular file: " + opts.path, "model", ""};
    }
    auto params         = llama_model_default_params();
    params.n_gpu_layers = opts.n_gpu_layers;
    // mmap alone stays AUTO: llama.cpp maps the file unless a device cannot use mapped memory.
    params.load_mode = opts.use_mmap ? (opts.use_mlock ? LLAMA_LOAD_MODE_MMAP_MLOCK : LLAMA_LOAD_MODE_AUTO)
                                     : (opts.use_mlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE);
    llama_model *raw = llama_model_load_from_file(opts.path.c_str(), params);
    if (raw == nullptr) {
        return error{error_kind::invalid_request, "failed to load model " + opts.path + " (not a valid GGUF model?)",
                     "model", ""};
    }
    std::shared_ptr<model> m(new model());
    m->model_       = raw;
    m->vocab_       = llama_model_get_vocab(raw);
    m->n_vocab_     = llama_vocab_n_tokens(m->vocab_);
    m->n_ctx_train_ = llama_model_n_ctx_train(raw);
    m->path_        = opts.path;
    m->tmpl_        = std::make_unique<templates>();
    for (token_id t = 0; t < m->n_vocab_ && !m->has_eog_; ++t) {
        m->has_eog_ = llama_vocab_is_eog(m->vocab_, t);
    }
    // SPM and BPE never map several input bytes to fewer text bytes (SPM writes a space as the
    // 3-byte U+2581, byte-level BPE a byte as 1-2 UTF-8 bytes, a byte token is "<0xHH>"), so the
    // longest token text bounds the input bytes one token covers.
    const auto type = llama_vocab_type(m->vocab_);
    if (type == LLAMA_VOCAB_TYPE_SPM || type == LLAMA_VOCAB_TYPE_BPE) {
        size_t longest = 1;
        for (token_id t = 0; t < m->n_vocab_; ++t) {
            if (const char *text = llama_vocab_get_text(m->vocab_, t)) {
                longest = std::max(longest, std::strlen(text));
            }
        }
        m->max_token_bytes_ = static_cast<int32_t>(std::min<size_t>(longest, 1u << 20));
    }
    m->has_template_ = !opts.chat_template.empty() || llama_model_chat_template(raw, nullptr) != nullptr;
    if (m->has_template_) {
        if (auto why = probe_chat_template(opts.path, opts.chat_template)) {
            return error{error_kind::invalid_request, "refusing the chat template of " + opts.path + ": " + *why,
                         "chat_template", "unsafe_chat_template"};
        }
        try {
            m->tmpl_->ptr = common_chat_templates_init(raw, opts.chat_template);
        } catch (const std::exception &e) {
            return error{error_kind::invalid_request, std::string("invalid chat template: ") + e.what(),
                         "chat_template", ""};
        }
    }
    return m;
}

model::~model() {
    tmpl_.reset();
    if (model_ != nullptr) {
        llama_model_free(model_);
    }
}

std::vector<token_id> model::tokenize(const std::string &text, bool add_special) const {
    // parse_special: a rendered chat template carries control tokens such as <|im_start|>.
    return common_tokenize(vocab_, text, add_special, /*parse_special=*/true);
}

std::string model::token_piece(token_id tok, bool special) const {
    return common_token_to_piece(vocab_, tok, special);
}

std::string model::detokenize(const std::vector<token_id> &tokens) const {
    return common_detokenize(vocab_, tokens, /*special=*/false);
}

bool model::is_eog(token_id tok) const {
    return llama_vocab_is_eog(vocab_, tok);
}

result<std::string> model::apply_chat_template(const std::vector<chat_message> &messages) const {
    chat_inputs in;
    in.messages = messages;
    auto r      = render_chat(in);
    if (!r) {
        return r.err();
    }
    return std::move(r->prompt);
}

namespace {

grammar_trigger::kind trigger_kind_of(common_grammar_trigger_type t) {
    switch (t) {
    case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:
        return grammar_trigger::kind::pattern;
    case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL:
        return grammar_trigger::kind::pattern_full;
    case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:
        return grammar_trigger::kind::token;
    default:
        break;
    }
    return grammar_trigger::kind::word;
}

} // namespace

namespace {

// common's tool grammar lets free text come before the calls even under "required"
// (`root ::= "<generation prompt>" space until-N? tool-calls`); OpenAI's "required" means the
// answer is calls. This drops that optional text rule from the root rule, so the calls come
// first. A root rule of any other shape is left as it is.
std::string calls_first(const std::string &grammar) {
    const size_t start = grammar.rfind("root ::= ", 0) == 0 ? 0 : grammar.find("\nroot ::= ");
    if (start == std::string::npos) {
        return grammar;
    }
    const size_t            end  = grammar.find('\n', start + 1);
    const std::string       line = grammar.substr(start, end == std::string::npos ? std::string::npos : end - start);
    static const std::regex optional_text(R"( until-[0-9]+\?)");
    const auto n = std::distance(std::sregex_iterator(line.begin(), line.end(), optional_text), std::sregex_iterator());
    if (n != 1) {
        return grammar;
    }
    return grammar.substr(0, start) + std::regex_replace(line, optional_text, "") +
           (end == std::string::npos ? std::string() : grammar.substr(end));
}

// common's grammar repeats the call rule whatever parallel_tool_calls says (its parser then
// reads one); with parallel_tool_calls false this makes the grammar end after one call, so the
// output ends there too. Any other shape is left as it is.
std::string one_call(const std::string &grammar) {
    static const std::string repeated = "\ntool-calls ::= (tool-call space)+\n";
    const size_t             at       = grammar.find(repeated);
    if (at == std::string::npos) {
        return grammar;
    }
    return grammar.substr(0, at) + "\ntool-calls ::= tool-call space\n" + grammar.substr(at + repeated.size());
}

} // namespace

namespace {

// A request's chat inputs as llama.cpp's chat machinery takes them (jinja, with the generation
// prompt); render_chat and probe_tool_grammar both render through it.
common_chat_templates_inputs common_inputs_of(const chat_inputs &in) {
    common_chat_templates_inputs ci;
    ci.use_jinja             = true;
    ci.add_generation_prompt = true;
    for (const auto &m : in.messages) {
        common_chat_msg msg;
        msg.role         = m.role;
        msg.content      = m.content;
        msg.tool_call_id = m.tool_call_id;
        for (const auto &tc : m.tool_calls) {
            msg.tool_calls.push_back({tc.name, tc.arguments, tc.id});
        }
        ci.messages.push_back(std::move(msg));
    }
    for (const auto &t : in.tools) {
        ci.tools.push_back({t.name, t.description, t.parameters.empty() ? std::string("{}") : t.parameters});
    }
    ci.tool_choice         = in.choice == tool_choice::required ? COMMON_CHAT_TOOL_CHOICE_REQUIRED
                             : in.choice == tool_choice::none   ? COMMON_CHAT_TOOL_CHOICE_NONE
                                                                : COMMON_CHAT_TOOL_CHOICE_AUTO;
    ci.parallel_tool_calls = in.parallel_tool_calls;
    return ci;
}

// Bounds on rendering one request (patches/llama.cpp/0002-jinja-render-limits.patch). The load-time
// probe (template_probe.cpp) renders a fixed conversation in a child process; a template whose cost
// depends on its input (a loop over a message's characters, a macro recursing over a tool schema)
// could still hold a preparation thread for minutes or overflow its stack on one request. The
// stock templates render a long conversation with tools in a few thousand steps and nest a few
// dozen deep, so these limits stop only templates that misbehave.
constexpr jinja::render_limits request_render_limits{
    .max_steps = 20'000'000,
    .max_depth = 512,
    .max_ms    = 5'000,
};

// common_chat_templates_apply under request_render_limits. A limit crossed is a 400 naming it
// (however far up llama.cpp wrapped the exception); any other failure is the template's own error.
result<common_chat_params> apply_bounded(const common_chat_templates *tmpl, const common_chat_templates_inputs &in,
                                         const char *param) {
    struct scoped_limits {
        scoped_limits() { jinja::set_render_limits(request_render_limits); }
        ~scoped_limits() { jinja::clear_render_limits(); }
        scoped_limits(const scoped_limits &)            = delete;
        scoped_limits &operator=(const scoped_limits &) = delete;
    } limits;
    try {
        return common_chat_templates_apply(tmpl, in);
    } catch (const std::exception &e) {
        if (const auto &hit = jinja::render_limit_hit(); !hit.empty()) {
            return error::invalid("the chat template stopped rendering this request at a limit: " + hit +
                                      " (the limits are " + std::to_string(request_render_limits.max_steps) +
                                      " steps, nesting " + std::to_string(request_render_limits.max_depth) +
                                      " deep and " + std::to_string(request_render_limits.max_ms) + " ms)",
                                  param, "template_limit_exceeded");
        }
        return error::invalid(std::string("the chat template could not render this request: ") + e.what(), param, "");
    }
}

} // namespace

result<tool_grammar_probe> probe_tool_grammar(const std::string &template_src, const chat_inputs &in) {
    common_chat_templates_ptr tmpl;
    try {
        tmpl = common_chat_templates_init(nullptr, template_src, "<s>", "</s>");
    } catch (const std::exception &e) {
        return error::invalid(std::string("the chat template does not parse: ") + e.what());
    }
    auto rendered = apply_bounded(tmpl.get(), common_inputs_of(in), "tools");
    if (!rendered) {
        return rendered.err();
    }
    const common_chat_params &cp = rendered.value();
    tool_grammar_probe        p;
    p.format         = std::string(common_chat_format_name(cp.format));
    p.common_grammar = cp.grammar;
    p.grammar        = in.choice == tool_choice::required ? calls_first(cp.grammar) : cp.grammar;
    p.calls_first    = p.grammar != cp.grammar;
    if (!in.parallel_tool_calls) {
        const auto before = p.grammar;
        p.grammar         = one_call(p.grammar);
        p.one_call        = p.grammar != before;
    }
    return p;
}

result<chat_render> model::render_chat(const chat_inputs &in) const {
    if (!has_template_) {
        return error::invalid("this model has no chat template: use /v1/completions, or start the server with "
                              "--chat-template",
                              "messages", "no_chat_template");
    }
    auto rendered = apply_bounded(tmpl_->ptr.get(), common_inputs_of(in), in.tools.empty() ? "messages" : "tools");
    if (!rendered) {
        return rendered.err();
    }
    common_chat_params cp = std::move(rendered.value());
    if (!in.tools.empty() && in.choice != tool_choice::none && cp.grammar.empty()) {
        // The template has no tool-call format: common would render the conversation without the
        // tools and never produce a call. inferbox's generic format describes them instead.
        return render_generic_tools(in);
    }
    chat_render r;
    r.prompt              = std::move(cp.prompt);
    r.generation_prompt   = cp.generation_prompt;
    r.format              = static_cast<int32_t>(cp.format);
    r.parser              = cp.parser;
    r.parse_tool_calls    = !in.tools.empty() && in.choice != tool_choice::none;
    r.parallel_tool_calls = in.parallel_tool_calls;
    if (!r.parse_tool_calls) {
        return r; // no tools in play: plain content, no grammar
    }
    r.grammar = in.choice == tool_choice::required ? calls_first(cp.grammar) : cp.grammar;
    if (!in.parallel_tool_calls) {
        r.grammar = one_call(r.grammar);
    }
    r.grammar_lazy     = cp.grammar_lazy;
    r.additional_stops = cp.additional_stops;
    for (const auto &text : cp.preserved_tokens) {
        const auto ids = tokenize(text, false);
        if (ids.size() == 1) {
            r.preserved_tokens.push_back(ids[0]);
        }
    }
    for (const auto &t : cp.grammar_triggers) {
        grammar_trigger g;
        g.type  = trigger_kind_of(t.type);
        g.value = t.value;
        g.token = t.token;
        // As llama-server does: a trigger word that is one preserved token triggers on the token.
        if (g.type == grammar_trigger::kind::word) {
            const auto ids = tokenize(g.value, false);
            if (ids.size() == 1 &&
                std::find(r.preserved_tokens.begin(), r.preserved_tokens.end(), ids[0]) != r.preserved_tokens.end()) {
                g.type  = grammar_trigger::kind::token;
                g.token = ids[0];
            }
        }
        r.grammar_triggers.push_back(std::move(g));
    }
    return r;
}

result<chat_render> model::render_generic_tools(const chat_inputs &in) const {
    common_chat_templates_inputs ci;
    ci.use_jinja             = true;
    ci.add_generation_prompt = true;
    for (const auto &m : generic_tools_messages(in)) {
        common_chat_msg msg;
        msg.role    = m.role;
        msg.content = m.content;
        ci.messages.push_back(std::move(msg));
    }
    auto rendered = apply_bounded(tmpl_->ptr.get(), ci, "tools");
    if (!rendered) {
        return rendered.err();
    }
    common_chat_params cp      = std::move(rendered.value());
    auto               grammar = json_schema_to_gbnf(generic_tools_schema(in), "tools");
    if (!grammar) {
        return grammar.err();
    }
    chat_render r;
    r.prompt = std::move(cp.prompt);
    // No generation prompt: llama.cpp would feed it to the grammar first (prefill), and the call
    // object's grammar starts at the object itself.
    r.format              = static_cast<int32_t>(cp.format);
    r.parse_tool_calls    = true;
    r.parallel_tool_calls = in.parallel_tool_calls;
    r.generic_tools       = true;
    r.grammar             = std::move(*grammar);
    // "required" (or a named function): a call from the first token. "auto": prose unless the
    // model starts the call object, which switches the grammar on.
    r.grammar_lazy = in.choice != tool_choice::required;
    if (r.grammar_lazy) {
        grammar_trigger g;
        g.type  = grammar_trigger::kind::word;
        g.value = generic_tools_trigger;
        r.grammar_triggers.push_back(std::move(g));
    }
    return r;
}

std::optional<chat_output> model::parse_chat_output(const std::string &text, const chat_render &r, bool partial) const {
    chat_output out;
    if (!r.parse_tool_calls) {
        out.content = text;
        return out;
    }
    if (r.generic_tools) {
        auto read = read_generic_tools(text, partial);
        if (!read.valid && !partial) {
            out.content = text; // not the call format after all: the text is the answer
            return out;
        }
        out.content = std::move(read.content);
        for (auto &call : read.calls) {
            if (!partial && common_json::parse_no_throw(call.arguments).is_discarded()) {
                continue; // cut off by max_tokens: dropped, never half-written
            }
            out.tool_calls.push_back(std::move(call));
            if (!r.parallel_tool_calls) {
                break;
            }
        }
        return out;
    }
    common_chat_parser_params pp;
    pp.format            = static_cast<common_chat_format>(r.format);
    pp.generation_prompt = r.generation_prompt;
    pp.parse_tool_calls  = true;
    try {
        if (!r.parser.empty()) {
            pp.parser.load(r.parser);
        }
        const auto msg = common_chat_parse(text, partial, pp);
        out.content    = msg.content;
        for (const auto &tc : msg.tool_calls) {
            // A finished call cut off by max_tokens has arguments that are not JSON yet: it is
            // dropped (the choice then finishes with "length"), never returned half-written.
            // While the text grows, a call is reported as soon as its name is known.
            if (tc.name.empty() || (!partial && common_json::parse_no_throw(tc.arguments).is_discarded())) {
                if (partial) {
                    break;
                }
                continue;
            }
            out.tool_calls.push_back({tc.id, tc.name, tc.arguments});
            if (!r.parallel_tool_calls) {
                break;
            }
        }
    } catch (const std::exception &) {
        if (partial) {
            return std::nullopt; // not readable as the format yet
        }
        // Text that is not in the format (a model answering in prose under tool_choice auto)
        // is the answer's content.
        out         = chat_output{};
        out.content = text;
    }
    return out;
}

std::string model::description() const {
    char buf[256];
    llama_model_desc(model_, buf, sizeof(buf));
    return buf;
}

std::string llama_cpp_version() {
    return std::string("commit ") + llama_commit();
}

} // namespace inferbox

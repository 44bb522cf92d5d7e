#pragma once
// A loaded GGUF model: weights, vocabulary and chat template. Tokenization, detokenization and
// template rendering are read-only and may be called from any thread concurrently (the API
// threads do that work so the engine thread only decodes and samples).

#include "common/status.h"
#include "engine/types.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

struct llama_model;
struct llama_vocab;

namespace inferbox {

struct model_options {
    std::string path;
    std::string chat_template;        // overrides the GGUF template when non-empty
    int32_t     n_gpu_layers = 0;     // layers offloaded to the GPU backend (0 = CPU only)
    bool        use_mmap     = true;  // map the file instead of reading it into memory
    bool        use_mlock    = false; // pin the weights in RAM (needs RLIMIT_MEMLOCK to cover them)
};

struct chat_tool_call {
    std::string id;
    std::string name;
    std::string arguments; // JSON text
};

struct chat_message {
    std::string                 role; // system, user, assistant, tool
    std::string                 content;
    std::vector<chat_tool_call> tool_calls;   // assistant
    std::string                 tool_call_id; // tool
};

// A function the model may call; parameters is a JSON Schema as JSON text ("" = no parameters).
struct chat_tool {
    std::string name;
    std::string description;
    std::string parameters;
};

enum class tool_choice { automatic, none, required };

struct chat_inputs {
    std::vector<chat_message> messages;
    std::vector<chat_tool>    tools; // a named tool_choice passes only that tool, with `required`
    tool_choice               choice              = tool_choice::automatic;
    bool                      parallel_tool_calls = true;
};

// What rendering decided: the prompt, and when tools are offered the grammar that enforces the
// call syntax (lazy: it starts at a trigger under `automatic`), extra stop strings, and the
// parser state needed to read tool calls back from the generated text.
struct chat_render {
    std::string                  prompt;
    std::string                  grammar;
    bool                         grammar_lazy = false;
    std::vector<grammar_trigger> grammar_triggers;
    std::vector<token_id>        preserved_tokens; // detokenized as text (special tokens of the format)
    std::vector<std::string>     additional_stops;
    std::string                  generation_prompt;
    int32_t                      format = 0; // llama.cpp's common_chat_format
    std::string                  parser;     // llama.cpp's serialized output parser
    bool                         parse_tool_calls    = false;
    bool                         parallel_tool_calls = true;
    // The template has no tool-call format: inferbox's generic JSON format (generic_tools.h).
    bool generic_tools = false;
};

struct chat_output {
    std::string                 content;
    std::vector<chat_tool_call> tool_calls; // ids filled in when the format gave none
};

// What llama.cpp's chat machinery makes of a template's tool-call format (no model needed: default
// BOS/EOS), and what inferbox's two rewrites of its grammar do: `calls_first` (tool_choice
// "required" drops the optional free text before the calls) and `one_call` (parallel_tool_calls
// false stops the grammar after one call). Both match the text shape of the grammar llama.cpp
// writes; tests pin, per template family, that they still apply (a llama.cpp upgrade that changes
// the shape then fails loudly instead of quietly losing the promise).
struct tool_grammar_probe {
    std::string format;                                // llama.cpp's name for the template's tool-call format
    std::string common_grammar;                        // the grammar as llama.cpp built it
    std::string grammar;                               // after inferbox's rewrites
    bool        calls_first = false, one_call = false; // whether each rewrite changed the grammar
};
result<tool_grammar_probe> probe_tool_grammar(const std::string &template_src, const chat_inputs &in);

// The linked llama.cpp's commit, e.g. "commit de3ff81".
std::string llama_cpp_version();

class model {
  public:
    static result<std::shared_ptr<model>> load(const model_options &opts);
    ~model();
    model(const model &)            = delete;
    model &operator=(const model &) = delete;

    llama_model       *raw() const { return model_; }
    const llama_vocab *vocab() const { return vocab_; }

    std::vector<token_id> tokenize(const std::string &text, bool add_special) const;
    // Raw bytes, may be a partial character; `special` renders control tokens as their text.
    std::string token_piece(token_id tok, bool special = false) const;
    std::string detokenize(const std::vector<token_id> &tokens) const;
    int32_t     n_vocab() const { return n_vocab_; }
    int32_t     n_ctx_train() const { return n_ctx_train_; }
    // The most input bytes one token can stand for (the longest token text), so a text of B bytes
    // tokenizes to at least B / max_token_bytes() tokens. 0 when no such bound holds: vocabularies
    // whose normalization can merge input bytes (whitespace runs in UGM, accents in WPM).
    int32_t max_token_bytes() const { return max_token_bytes_; }
    bool    is_eog(token_id tok) const;
    bool    has_eog() const { return has_eog_; } // any end-of-generation token at all

    bool has_chat_template() const { return has_template_; }
    // Renders the conversation with the model's chat template and the assistant prefix.
    result<std::string> apply_chat_template(const std::vector<chat_message> &messages) const;
    // The same with tools (llama.cpp common's chat machinery; a template without tool support
    // gets common's generic JSON format). Errors are invalid_request naming `messages` or `tools`.
    result<chat_render> render_chat(const chat_inputs &in) const;
    // Reads the assistant message (content, tool calls) back from a generated text. Whole
    // (partial = false): always an answer (text not in the format is the content). Partial (the
    // text is still growing): what is certain so far, calls as soon as their name is known (their
    // arguments a prefix of the final ones), or nullopt when the text cannot be read yet.
    std::optional<chat_output> parse_chat_output(const std::string &text, const chat_render &r,
                                                 bool partial = false) const;

    const std::string &path() const { return path_; }
    std::string        description() const; // architecture and size, for logs and /v1/models

  private:
    model() = default;
    result<chat_render> render_generic_tools(const chat_inputs &in) const;
    struct templates;
    llama_model               *model_ = nullptr;
    const llama_vocab         *vocab_ = nullptr;
    std::unique_ptr<templates> tmpl_;
    bool                       has_template_    = false;
    bool                       has_eog_         = false;
    int32_t                    n_vocab_         = 0;
    int32_t                    n_ctx_train_     = 0;
    int32_t                    max_token_bytes_ = 0;
    std::string                path_;
};

} // namespace inferbox

#pragma once
// A loaded GGUF model: weights, vocabulary and chat template. Tokenization, detokenization and
// template rendering are read-only and may be called from any thread concurrently (the API
// threads do that work so the engine thread only decodes and samples).

#include "common/status.h"
#include "engine/types.h"

#include <memory>
#include <string>
#include <vector>

struct llama_model;
struct llama_vocab;

namespace inferbox {

struct model_options {
    std::string path;
    std::string chat_template; // overrides the GGUF template when non-empty
    int32_t     n_gpu_layers = 0;
};

struct chat_message {
    std::string role;
    std::string content;
};

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
    std::string           token_piece(token_id tok) const; // raw bytes, may be a partial character
    std::string           detokenize(const std::vector<token_id> &tokens) const;
    int32_t               n_vocab() const { return n_vocab_; }
    int32_t               n_ctx_train() const { return n_ctx_train_; }
    bool                  is_eog(token_id tok) const;

    bool has_chat_template() const { return has_template_; }
    // Renders the conversation with the model's chat template and the assistant prefix.
    result<std::string> apply_chat_template(const std::vector<chat_message> &messages) const;

    const std::string &path() const { return path_; }
    std::string        description() const; // architecture and size, for logs and /v1/models

  private:
    model() = default;
    struct templates;
    llama_model               *model_ = nullptr;
    const llama_vocab         *vocab_ = nullptr;
    std::unique_ptr<templates> tmpl_;
    bool                       has_template_ = false;
    int32_t                    n_vocab_      = 0;
    int32_t                    n_ctx_train_  = 0;
    std::string                path_;
};

} // namespace inferbox

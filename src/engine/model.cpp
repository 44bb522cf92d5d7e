#include "engine/model.h"

#include "build-info.h"
#include "chat.h"
#include "common.h"
#include "llama.h"

#include <filesystem>
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
    llama_model *raw    = llama_model_load_from_file(opts.path.c_str(), params);
    if (raw == nullptr) {
        return error{error_kind::invalid_request, "failed to load model " + opts.path + " (not a valid GGUF model?)",
                     "model", ""};
    }
    std::shared_ptr<model> m(new model());
    m->model_        = raw;
    m->vocab_        = llama_model_get_vocab(raw);
    m->n_vocab_      = llama_vocab_n_tokens(m->vocab_);
    m->n_ctx_train_  = llama_model_n_ctx_train(raw);
    m->path_         = opts.path;
    m->tmpl_         = std::make_unique<templates>();
    m->has_template_ = !opts.chat_template.empty() || llama_model_chat_template(raw, nullptr) != nullptr;
    if (m->has_template_) {
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

std::string model::token_piece(token_id tok) const {
    return common_token_to_piece(vocab_, tok, /*special=*/false);
}

std::string model::detokenize(const std::vector<token_id> &tokens) const {
    return common_detokenize(vocab_, tokens, /*special=*/false);
}

bool model::is_eog(token_id tok) const {
    return llama_vocab_is_eog(vocab_, tok);
}

result<std::string> model::apply_chat_template(const std::vector<chat_message> &messages) const {
    if (!has_template_) {
        return error::invalid("this model has no chat template: use /v1/completions, or start the server with "
                              "--chat-template",
                              "messages", "no_chat_template");
    }
    common_chat_templates_inputs in;
    in.use_jinja             = true;
    in.add_generation_prompt = true;
    for (const auto &m : messages) {
        common_chat_msg msg;
        msg.role    = m.role;
        msg.content = m.content;
        in.messages.push_back(std::move(msg));
    }
    try {
        return common_chat_templates_apply(tmpl_->ptr.get(), in).prompt;
    } catch (const std::exception &e) {
        return error::invalid(std::string("the chat template could not render these messages: ") + e.what(), "messages",
                              "");
    }
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

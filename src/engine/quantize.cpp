#include "engine/quantize.h"

#include "llama.h"

#include <cstdio>
#include <cstring>
#include <string_view>

namespace inferbox {

namespace {

// What the log callback collects during one quantization.
struct quantize_log {
    const quantize_request *r = nullptr;
    std::string             last_error;
};

// llama.cpp logs "[   3/  48] blk.0.attn_q.weight - …" as it starts each tensor.
void on_log(ggml_log_level level, const char *text, void *user) {
    auto            *log = static_cast<quantize_log *>(user);
    std::string_view t(text == nullptr ? "" : text);
    if (level == GGML_LOG_LEVEL_ERROR) {
        while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) {
            t.remove_suffix(1);
        }
        while (!t.empty() && t.front() == '\n') {
            t.remove_prefix(1);
        }
        if (!t.empty()) {
            log->last_error = std::string(t.substr(0, 300));
        }
        return;
    }
    int done  = 0;
    int total = 0;
    if (log->r->progress && t.size() > 2 && t[0] == '[' &&
        std::sscanf(std::string(t.substr(0, 24)).c_str(), "[%d/%d]", &done, &total) == 2 && total > 0) {
        log->r->progress(done, total);
    }
}

} // namespace

std::optional<error> quantize_model(const quantize_request &r) {
    std::vector<llama_model_imatrix_data> importance;
    if (r.importance != nullptr) {
        importance.reserve(r.importance->size() + 1);
        for (const auto &[name, values] : *r.importance) {
            importance.push_back({name.c_str(), values.data(), values.size()});
        }
        importance.push_back({nullptr, nullptr, 0}); // the end of the list
    }
    llama_model_quantize_params p = llama_model_quantize_default_params();
    p.nthread                     = r.threads;
    p.ftype                       = static_cast<llama_ftype>(r.file_type);
    p.allow_requantize            = r.allow_requantize;
    p.imatrix                     = importance.empty() ? nullptr : importance.data();

    ggml_log_callback previous      = nullptr;
    void             *previous_user = nullptr;
    llama_log_get(&previous, &previous_user);
    quantize_log log{&r, {}};
    llama_log_set(on_log, &log);
    const uint32_t failed = llama_model_quantize(r.input.c_str(), r.output.c_str(), &p);
    llama_log_set(previous, previous_user);
    if (failed != 0) {
        std::error_code ec;
        std::filesystem::remove(r.output, ec);
        std::string why = log.last_error;
        const auto  cut = why.find("failed to quantize: ");
        if (cut != std::string::npos) {
            why = why.substr(cut + std::strlen("failed to quantize: "));
        }
        return error{error_kind::invalid_request,
                     "llama.cpp could not quantize " + r.input.string() + (why.empty() ? "" : ": " + why),
                     {},
                     {}};
    }
    return std::nullopt;
}

} // namespace inferbox

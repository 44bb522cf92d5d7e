#include "api/json_fields.h"

#include <nlohmann/json.hpp>

namespace inferbox {

const nlohmann::json *json_field(const nlohmann::json &body, const char *name) {
    auto it = body.find(name);
    if (it == body.end() || it->is_null()) {
        return nullptr;
    }
    return &*it;
}

result<std::string> string_field(const nlohmann::json &body, const char *name, size_t max_bytes) {
    const nlohmann::json *v = json_field(body, name);
    if (v == nullptr) {
        return std::string();
    }
    if (!v->is_string()) {
        return error::invalid(std::string(name) + " must be a string, got " + v->type_name(), name);
    }
    const auto &s = v->get_ref<const std::string &>();
    if (s.size() > max_bytes) {
        return error::invalid(std::string(name) + " is longer than " + std::to_string(max_bytes) + " bytes", name);
    }
    return s;
}

result<std::string> model_field(const nlohmann::json &body) {
    auto id = string_field(body, "model", 1024);
    if (!id || json_field(body, "model") == nullptr) {
        return id;
    }
    if (id->empty()) {
        return error::invalid("model is an empty string: name a model that GET /v1/models lists, or leave the field "
                              "out for the default model",
                              "model", "invalid_model");
    }
    for (size_t i = 0; i < id->size(); ++i) {
        const auto c = static_cast<unsigned char>((*id)[i]);
        if (c < 0x20 || c == 0x7f) {
            return error::invalid("model holds a control character (code " + std::to_string(c) + ") at byte " +
                                      std::to_string(i) + "; model ids are printable text",
                                  "model", "invalid_model");
        }
    }
    return id;
}

} // namespace inferbox

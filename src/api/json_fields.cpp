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

} // namespace inferbox

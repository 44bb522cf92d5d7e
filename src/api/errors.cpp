#include "api/errors.h"

#include <nlohmann/json.hpp>

namespace inferbox {

http_error_info map_error(error_kind kind) {
    switch (kind) {
    case error_kind::invalid_request:
        return {400, "invalid_request_error"};
    case error_kind::not_found:
        return {404, "not_found_error"};
    case error_kind::method_not_allowed:
        return {405, "invalid_request_error"};
    case error_kind::payload_too_large:
        return {413, "invalid_request_error"};
    case error_kind::unauthorized:
        return {401, "invalid_request_error"};
    case error_kind::overloaded:
        return {429, "rate_limit_error"};
    case error_kind::unavailable:
        return {503, "service_unavailable_error"};
    case error_kind::upstream:
        return {502, "upstream_error"};
    case error_kind::timeout:
        return {504, "timeout_error"};
    case error_kind::internal:
        break;
    }
    return {500, "server_error"};
}

std::string error_body(const error &err) {
    const auto     info = map_error(err.kind);
    nlohmann::json e    = {{"message", err.message},
                           {"type", info.type},
                           {"param", err.param.empty() ? nlohmann::json(nullptr) : nlohmann::json(err.param)},
                           {"code", err.code.empty() ? nlohmann::json(nullptr) : nlohmann::json(err.code)}};
    return nlohmann::json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

} // namespace inferbox

#pragma once
// Error values that cross layer boundaries. Engine, scheduler and store return these; exactly one
// function in the API layer (api/errors.cpp) maps an error_kind to an HTTP status and an OpenAI
// error type.

#include <string>
#include <utility>
#include <variant>

namespace inferbox {

enum class error_kind {
    invalid_request,    // the request is malformed or a parameter is out of range
    not_found,          // unknown model or route
    method_not_allowed, // route exists, method does not
    payload_too_large,  // body over the configured limit
    unauthorized,       // missing or wrong API key
    overloaded,         // the waiting queue is full, or a rate limit is reached: retry later
    unavailable,        // not ready (loading) or shutting down
    internal,           // a bug or an engine failure
    upstream,           // a remote backend failed or answered something unusable (502)
    timeout,            // a remote backend or the request's deadline ran out (504)
};

struct error {
    error_kind  kind = error_kind::internal;
    std::string message;
    std::string param; // the offending request field, empty when none
    std::string code;  // machine-readable code, empty when none

    static error invalid(std::string message, std::string param = {}, std::string code = {}) {
        return {error_kind::invalid_request, std::move(message), std::move(param), std::move(code)};
    }
};

// A value or an error (std::expected is C++23; our compilers are C++20).
template <typename T> class result {
  public:
    result(T value) : v_(std::move(value)) {} // NOLINT(google-explicit-constructor)
    result(error err) : v_(std::move(err)) {} // NOLINT(google-explicit-constructor)
    bool         ok() const { return v_.index() == 0; }
    explicit     operator bool() const { return ok(); }
    T           &value() { return std::get<0>(v_); }
    const T     &value() const { return std::get<0>(v_); }
    T           *operator->() { return &value(); }
    const T     *operator->() const { return &value(); }
    T           &operator*() { return value(); }
    const T     &operator*() const { return value(); }
    const error &err() const { return std::get<1>(v_); }

  private:
    std::variant<T, error> v_;
};

} // namespace inferbox

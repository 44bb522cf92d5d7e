#pragma once
// An asynchronous HTTP/1.1 client call (Boost.Beast, plain or TLS over OpenSSL) on a caller's
// io_context: no thread per call. It sends one request and delivers the response's status and
// body incrementally, so a server-sent event stream is relayed as it arrives. Every phase has a
// deadline: connecting (resolve + TCP + TLS handshake), the first byte of the response header,
// and the silence between two body reads.

#include "common/status.h"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boost::asio::ssl {
class context;
}

namespace inferbox {

// An http:// or https:// base URL, split. `base_path` has no trailing slash ("" or "/v1").
struct http_url {
    bool        tls = false;
    std::string host;
    std::string port;
    std::string base_path;

    std::string origin() const; // scheme://host:port
};

// Parses a base URL: scheme http or https, a host, an optional port, an optional path. Anything
// else (user info, query, fragment, another scheme, an empty host or a bad port) is an error
// naming the problem.
result<http_url> parse_http_url(const std::string &url);

struct http_client_options {
    std::chrono::milliseconds connect_timeout{5000};
    std::chrono::milliseconds first_byte_timeout{60000}; // from the request's write to the header's arrival
    std::chrono::milliseconds idle_timeout{30000};       // between two reads of the body
    size_t                    max_body_bytes = 256u << 20;
    // TLS settings for https URLs: peer verification against the system store, or `ca_file`.
    std::shared_ptr<boost::asio::ssl::context> tls;
};

// Makes the client TLS context: TLS 1.2+, peer verification on, trusting `ca_file` when given
// (PEM), else the system's default store. Errors name the file.
result<std::shared_ptr<boost::asio::ssl::context>> make_client_tls(const std::string &ca_file);

using http_headers = std::vector<std::pair<std::string, std::string>>;

// Callbacks, all on the call's strand. on_response: the status and headers arrived (before any
// body). on_body: a piece of the body. on_done: the call ended: no error when the whole body
// arrived, else the failure — `unavailable` for connect/TLS/transport failures, `internal` with
// code "timeout" for a deadline. After cancel(), on_done is not called.
struct http_call_handlers {
    std::function<void(int status, const http_headers &headers)> on_response;
    std::function<void(std::string_view piece)>                  on_body;
    std::function<void(std::optional<error> err)>                on_done;
};

class http_call {
  public:
    virtual ~http_call() = default;
    // Closes the connection; safe from any thread, idempotent. No handler runs afterwards.
    virtual void cancel() = 0;
};

// Starts `method` `path` (appended to url.base_path) with `body` (JSON when non-empty).
std::shared_ptr<http_call> start_http_call(const boost::asio::any_io_executor &exec, const http_url &url,
                                           const std::string &method, const std::string &path,
                                           const http_headers &headers, std::string body,
                                           const http_client_options &opts, http_call_handlers handlers);

} // namespace inferbox

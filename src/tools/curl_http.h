#pragma once
// A small HTTP(S) client on libcurl for the tools layer (the MCP streamable HTTP transport,
// tools/mcp_client.h) and the CLI's client commands (`inferbox team run`), which may not use the
// Boost.Beast client of backend/ (layer rules, scripts/lint.sh). Blocking: one exchange runs on
// the calling thread, bounded in time (`timeout`, connection included) and in size
// (`max_body_bytes`). https verifies the server's certificate and name; no redirect is followed
// (a 3xx is the answer); only http and https are spoken.
//
// curl_http_client is thread-safe: each exchange runs on an easy handle of its own, taken from a
// small pool of idle ones so that keep-alive connections are reused.

#include "common/status.h"

#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace inferbox {

struct curl_http_response {
    long                                             status = 0;
    std::vector<std::pair<std::string, std::string>> headers;         // of the final response; names in lower case
    std::string                                      body;            // empty when on_body took it
    bool                                             stopped = false; // on_body asked to stop reading

    // The first header named `lower_name` (lower case), or "".
    std::string header(std::string_view lower_name) const;
};

struct curl_http_request {
    std::string                                      method = "POST"; // GET, POST or DELETE
    std::string                                      url;             // http:// or https://
    std::vector<std::pair<std::string, std::string>> headers;
    std::string                                      body;
    std::chrono::milliseconds                        timeout{10'000}; // the whole exchange
    size_t                                           max_body_bytes = size_t{8} << 20;
    // When set, the body is handed over as it arrives, with the response's status and headers
    // (read before the body), and is not kept; returning false stops reading, and the exchange
    // then ends successfully with `stopped` set. Counted against max_body_bytes all the same.
    std::function<bool(const curl_http_response &head, std::string_view chunk)> on_body;
};

class curl_http_client {
  public:
    curl_http_client() = default;
    ~curl_http_client();
    curl_http_client(const curl_http_client &)            = delete;
    curl_http_client &operator=(const curl_http_client &) = delete;

    // Errors: error_kind::timeout past `timeout`; error_kind::upstream when the server cannot be
    // reached, the TLS handshake or certificate check fails, or the body exceeds max_body_bytes
    // (the message names the URL and the limit). Any HTTP status is a response, not an error.
    result<curl_http_response> perform(const curl_http_request &req);

  private:
    std::mutex          mu_;
    std::vector<void *> idle_; // CURL easy handles kept for their connections
};

// Server-sent events (the WHATWG event-stream format) from bytes in pieces of any size: each
// event's name ("message" when it names none) and its data lines joined by '\n'. Comments, `id`
// and `retry` are read and dropped. A line longer than `max_event_bytes`, or an event's data
// longer than it, stops the parse.
class sse_parser {
  public:
    explicit sse_parser(size_t max_event_bytes) : max_(max_event_bytes) {}

    // Calls on_event for each complete event in `bytes`; false when on_event returned false or a
    // line or an event was too long (then too_long() says which).
    bool feed(std::string_view                                                              bytes,
              const std::function<bool(const std::string &event, const std::string &data)> &on_event);
    bool too_long() const { return too_long_; }

  private:
    bool line(std::string_view l, const std::function<bool(const std::string &, const std::string &)> &on_event);

    size_t      max_;
    std::string pending_; // an incomplete line
    std::string event_, data_;
    bool        has_data_ = false, after_cr_ = false, too_long_ = false;
};

} // namespace inferbox

#pragma once
// Asynchronous HTTP/1.1 server on Boost.Beast: a fixed pool of I/O threads serves any number of
// idle, waiting or streaming connections. Each connection runs on its own strand; a handler gets
// an http_exchange and answers it (at once or later, from any thread) with a whole response or
// with a server-sent-event stream.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace inferbox {

namespace http   = boost::beast::http;
using executor_t = boost::asio::strand<boost::asio::io_context::executor_type>;

struct http_limits {
    size_t               max_body_bytes   = 8u << 20;
    size_t               max_header_bytes = 16u << 10;
    std::chrono::seconds header_timeout{15};            // whole request (headers and body) must arrive in this time
    std::chrono::seconds idle_timeout{60};              // keep-alive connection with no request
    std::chrono::seconds write_timeout{60};             // one write to a client that stopped reading
    size_t               max_stream_backlog = 8u << 20; // queued SSE bytes before the stream is dropped
};

using header_list = std::vector<std::pair<std::string, std::string>>;

// One request and its response. Every method must be called on executor() (post there from other
// threads). A handler answers exactly once: respond(), or start_stream() ... end_stream().
class http_exchange {
  public:
    virtual ~http_exchange()                                         = default;
    virtual const http::request<http::string_body> &request() const  = 0;
    virtual executor_t                              executor() const = 0;

    virtual void respond(http::status status, std::string body, const std::string &content_type,
                         const header_list &headers = {}) = 0;
    virtual void start_stream(const header_list &headers) = 0; // 200 text/event-stream, chunked
    virtual void send(std::string data)                   = 0; // one chunk of the stream
    virtual void end_stream()                             = 0;

    // Called at most once, on executor(), when the client disconnects (or a write fails) before
    // the exchange completed. Set it before waiting on anything slow.
    virtual void on_disconnect(std::function<void()> fn) = 0;
    virtual bool disconnected() const                    = 0;
};

// Answers a request that failed at the protocol level (malformed, too large, timed out); the
// JSON shape belongs to the caller, so the server stays free of the API's error format.
using protocol_error_fn = std::function<std::string(http::status, const std::string &message)>;
using handler_fn        = std::function<void(std::shared_ptr<http_exchange>)>;

class http_server {
  public:
    http_server(boost::asio::io_context &ioc, handler_fn handler, protocol_error_fn on_error, http_limits limits);
    ~http_server();

    // Binds and starts accepting. Returns the bound port (useful with port 0).
    uint16_t listen(const std::string &host, uint16_t port);
    void     stop_accepting();

    struct impl; // defined in the .cpp; public so connection objects there can name it

  private:
    std::shared_ptr<impl> impl_;
};

} // namespace inferbox

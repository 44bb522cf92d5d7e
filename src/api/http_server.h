#pragma once
// Asynchronous HTTP/1.1 server on Boost.Beast: a fixed pool of I/O threads serves any number of
// idle, waiting or streaming connections. Each connection runs on its own strand; a handler gets
// an http_exchange and answers it (at once or later, from any thread) with a whole response or
// with a server-sent-event stream.

#include "common/log.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace inferbox {

namespace http   = boost::beast::http;
using executor_t = boost::asio::strand<boost::asio::io_context::executor_type>;

struct http_limits {
    size_t               max_body_bytes   = 8u << 20;
    size_t               max_header_bytes = 16u << 10;
    size_t               max_header_count = 100;
    std::chrono::seconds header_timeout{15};            // whole request (headers and body) must arrive in this time
    std::chrono::seconds idle_timeout{60};              // keep-alive connection with no request
    std::chrono::seconds write_timeout{60};             // one write to a client that stopped reading
    size_t               max_stream_backlog = 8u << 20; // queued SSE bytes before the stream is dropped
    // A chunked body: at most this many chunks, and this many chunk-extension bytes in all. A body
    // of a million one-byte chunks costs far more to read than its size says (Triton's CVEs).
    size_t max_body_chunks     = 16384;
    size_t max_chunk_ext_bytes = 4096;
};

// The body limit for a request, from its target and method (a route may have its own); called once
// the header has arrived. Unset: max_body_bytes for every request.
using body_limit_fn = std::function<size_t(std::string_view target, http::verb method)>;

using header_list = std::vector<std::pair<std::string, std::string>>;

// What the access log records about one finished exchange (answered, or abandoned by the client).
struct access_record {
    std::string method; // "-" when the request never parsed
    std::string target;
    unsigned    status      = 0; // 0 when no response started
    uint64_t    bytes_sent  = 0;
    double      seconds     = 0; // from the request's arrival to the last byte written
    bool        client_gone = false;
    std::string remote;
    log_fields  fields; // what handlers added with log_field()
};
using access_log_fn = std::function<void(const access_record &)>;

// One request and its response. Every method must be called on executor() (post there from other
// threads). A handler answers exactly once: respond(), or start_stream() ... end_stream().
class http_exchange {
  public:
    virtual ~http_exchange()                                         = default;
    virtual const http::request<http::string_body> &request() const  = 0;
    virtual executor_t                              executor() const = 0;
    // When the whole request had arrived.
    virtual std::chrono::steady_clock::time_point received() const = 0;
    virtual std::string                           remote() const   = 0;

    // Headers every response of this exchange carries (request id, CORS, trace context).
    virtual void add_response_header(std::string name, std::string value) = 0;
    // A typed key/value pair for this exchange's access-log line (token counts, model, ...).
    virtual void log_field(std::string key, log_value value) = 0;

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

    // Called once per finished exchange, on its strand. Set before listen().
    void set_access_log(access_log_fn fn);
    // Per-request body limits (before listen()).
    void set_body_limit(body_limit_fn fn);
    // Told of every exception that reached the server from a handler (the request then gets a 500,
    // or a stream ends): `where` is "handler". Set before listen().
    using unhandled_fn = std::function<void(const char *where, const std::string &what)>;
    void set_on_unhandled(unhandled_fn fn);

    // Serve HTTPS instead of HTTP (before listen()). With a client CA, clients must present a
    // certificate it signed (mutual TLS). Returns an error naming the file that failed.
    struct tls_options {
        std::string cert_file; // PEM certificate chain
        std::string key_file;  // PEM private key
        std::string client_ca_file;
    };
    std::optional<std::string> enable_tls(const tls_options &opts);

    // Binds and starts accepting. Returns the bound port (useful with port 0).
    uint16_t listen(const std::string &host, uint16_t port);
    void     stop_accepting() noexcept;
    // Requests that have arrived and whose response is not yet fully written: a draining
    // process waits for this to reach zero so that the last bytes of every stream go out.
    size_t open_exchanges() const noexcept;

    struct impl; // defined in the .cpp; public so connection objects there can name it

  private:
    std::shared_ptr<impl> impl_;
};

} // namespace inferbox

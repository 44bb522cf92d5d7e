#include "api/http_server.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <deque>

#include <sstream>
#include <sys/socket.h>

namespace inferbox {

namespace beast = boost::beast;
namespace net   = boost::asio;
using tcp       = net::ip::tcp;

struct http_server::impl : std::enable_shared_from_this<impl> {
    impl(net::io_context &c, handler_fn h, protocol_error_fn e, http_limits l)
        : ioc(c), acceptor(c), handler(std::move(h)), on_error(std::move(e)), limits(l) {}
    void do_accept();

    net::io_context  &ioc;
    tcp::acceptor     acceptor;
    handler_fn        handler;
    protocol_error_fn on_error;
    http_limits       limits;
};

namespace {

class session final : public http_exchange, public std::enable_shared_from_this<session> {
  public:
    session(tcp::socket socket, executor_t strand, std::shared_ptr<http_server::impl> server)
        : strand_(std::move(strand)), stream_(std::move(socket)), server_(std::move(server)) {}

    void run() {
        net::dispatch(strand_, [self = shared_from_this()] { self->do_read(); });
    }

    const http::request<http::string_body> &request() const override { return req_; }
    executor_t                              executor() const override { return strand_; }

    void respond(http::status status, std::string body, const std::string &content_type,
                 const header_list &headers) override {
        if (complete_ || closed_) {
            return;
        }
        http::response<http::string_body> res{status, req_.version()};
        res.set(http::field::server, "inferbox");
        res.set(http::field::content_type, content_type);
        for (const auto &[k, v] : headers) {
            res.set(k, v);
        }
        res.keep_alive(keep_alive_);
        res.body() = std::move(body);
        res.prepare_payload();
        std::ostringstream os;
        os << res;
        complete_ = true;
        enqueue(os.str());
    }

    void start_stream(const header_list &headers) override {
        if (complete_ || closed_ || streaming_) {
            return;
        }
        streaming_       = true;
        std::string head = "HTTP/1.1 200 OK\r\nServer: inferbox\r\nContent-Type: text/event-stream\r\n"
                           "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n";
        head += keep_alive_ ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
        for (const auto &[k, v] : headers) {
            head += k + ": " + v + "\r\n";
        }
        head += "\r\n";
        enqueue(std::move(head));
    }

    void send(std::string data) override {
        if (!streaming_ || complete_ || closed_ || data.empty()) {
            return;
        }
        std::ostringstream os;
        os << std::hex << data.size() << "\r\n";
        enqueue(os.str() + data + "\r\n");
    }

    void end_stream() override {
        if (!streaming_ || complete_ || closed_) {
            return;
        }
        complete_ = true;
        enqueue("0\r\n\r\n");
    }

    void on_disconnect(std::function<void()> fn) override {
        on_disconnect_ = std::move(fn);
        if (disconnected_ && on_disconnect_) {
            std::exchange(on_disconnect_, nullptr)();
        }
    }
    bool disconnected() const override { return disconnected_; }

  private:
    void do_read() {
        complete_  = false;
        streaming_ = false;
        parser_.emplace();
        parser_->body_limit(server_->limits.max_body_bytes);
        parser_->header_limit(static_cast<uint32_t>(server_->limits.max_header_bytes));
        stream_.expires_after(server_->limits.idle_timeout);
        http::async_read_header(stream_, buffer_, *parser_,
                                [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
    }

    void on_header(beast::error_code ec) {
        if (ec) {
            on_read_error(ec);
            return;
        }
        stream_.expires_after(server_->limits.header_timeout);
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code e, size_t) { self->on_read(e); });
    }

    void on_read_error(beast::error_code ec) {
        if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
            ec == net::error::operation_aborted) {
            close();
            return;
        }
        // Answer protocol-level failures, then close: the connection state is unknown.
        http::status status = http::status::bad_request;
        std::string  msg    = "malformed HTTP request: " + ec.message();
        if (ec == http::error::body_limit) {
            status = http::status::payload_too_large;
            msg    = "request body exceeds the limit of " + std::to_string(server_->limits.max_body_bytes) + " bytes";
        } else if (ec == http::error::header_limit) {
            status = http::status::request_header_fields_too_large;
            msg = "request headers exceed the limit of " + std::to_string(server_->limits.max_header_bytes) + " bytes";
        } else if (ec == beast::error::timeout) {
            if (!parser_ || !parser_->got_some()) {
                close(); // an idle keep-alive connection simply ends
                return;
            }
            status = http::status::request_timeout;
            msg    = "the request did not arrive within " + std::to_string(server_->limits.header_timeout.count()) +
                  " seconds";
        }
        keep_alive_ = false;
        respond(status, server_->on_error(status, msg), "application/json", {});
    }

    void on_read(beast::error_code ec) {
        if (ec) {
            on_read_error(ec);
            return;
        }
        req_        = parser_->release();
        keep_alive_ = req_.keep_alive();
        ++generation_;
        stream_.expires_never();
        watch_disconnect();
        server_->handler(shared_from_this());
    }

    // While a handler works, notice a client that goes away: the socket turns readable and a
    // peek reads end-of-file. Pipelined bytes also make it readable; then we stop watching. The
    // peek must not block: readiness can be spurious, and a blocked I/O thread stalls every
    // connection it serves.
    void watch_disconnect() {
        stream_.socket().async_wait(
            tcp::socket::wait_read, [self = shared_from_this(), gen = generation_](beast::error_code ec) {
                if (ec || gen != self->generation_ || self->complete_ || self->closed_) {
                    return;
                }
                char          c = 0;
                const ssize_t n = ::recv(self->stream_.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                    self->fail();
                } else if (n < 0) {
                    self->watch_disconnect(); // spurious wake-up: keep watching
                }
            });
    }

    void enqueue(std::string data) {
        if (closed_) {
            return;
        }
        backlog_ += data.size();
        outq_.push_back(std::move(data));
        if (backlog_ > server_->limits.max_stream_backlog) {
            spdlog::warn("dropping a client that stopped reading ({} bytes queued)", backlog_);
            fail();
            return;
        }
        if (!writing_ && !closed_) {
            do_write();
        }
    }

    void do_write() {
        writing_ = true;
        stream_.expires_after(server_->limits.write_timeout);
        net::async_write(stream_, net::buffer(outq_.front()),
                         [self = shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
    }

    void on_write(beast::error_code ec) {
        writing_ = false;
        if (closed_) {
            return; // the queue is dropped with the session
        }
        if (ec) {
            fail();
            return;
        }
        backlog_ -= outq_.front().size();
        outq_.pop_front();
        if (!outq_.empty()) {
            do_write();
            return;
        }
        stream_.expires_never();
        if (complete_) {
            if (keep_alive_ && !closed_) {
                do_read();
            } else {
                close();
            }
        }
    }

    void fail() {
        if (!disconnected_ && !complete_) {
            disconnected_ = true;
            if (on_disconnect_) {
                std::exchange(on_disconnect_, nullptr)();
            }
        }
        close();
    }

    void close() {
        if (closed_) {
            return;
        }
        closed_ = true;
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
        stream_.socket().close(ec);
        // outq_ stays: an in-flight async_write may still reference its front buffer.
    }

    executor_t                                             strand_;
    beast::tcp_stream                                      stream_;
    std::shared_ptr<http_server::impl>                     server_;
    beast::flat_buffer                                     buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::request<http::string_body>                       req_;
    std::deque<std::string>                                outq_;
    size_t                                                 backlog_      = 0;
    uint64_t                                               generation_   = 0;
    bool                                                   writing_      = false;
    bool                                                   keep_alive_   = true;
    bool                                                   streaming_    = false;
    bool                                                   complete_     = false;
    bool                                                   closed_       = false;
    bool                                                   disconnected_ = false;
    std::function<void()>                                  on_disconnect_;
};

} // namespace

void http_server::impl::do_accept() {
    auto strand = net::make_strand(ioc);
    acceptor.async_accept(strand, [self = shared_from_this(), strand](beast::error_code ec, tcp::socket socket) {
        if (!self->acceptor.is_open()) {
            return;
        }
        if (!ec) {
            std::make_shared<session>(std::move(socket), strand, self)->run();
        } else {
            spdlog::warn("accept failed: {}", ec.message());
        }
        self->do_accept();
    });
}

http_server::http_server(net::io_context &ioc, handler_fn handler, protocol_error_fn on_error, http_limits limits)
    : impl_(std::make_shared<impl>(ioc, std::move(handler), std::move(on_error), limits)) {}

http_server::~http_server() {
    stop_accepting();
}

uint16_t http_server::listen(const std::string &host, uint16_t port) {
    const auto    addr = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host);
    tcp::endpoint ep{addr, port};
    impl_->acceptor.open(ep.protocol());
    impl_->acceptor.set_option(net::socket_base::reuse_address(true));
    impl_->acceptor.bind(ep);
    impl_->acceptor.listen(net::socket_base::max_listen_connections);
    const uint16_t bound = impl_->acceptor.local_endpoint().port();
    impl_->do_accept();
    return bound;
}

void http_server::stop_accepting() {
    net::post(impl_->acceptor.get_executor(), [self = impl_] {
        beast::error_code ec;
        self->acceptor.close(ec);
    });
}

} // namespace inferbox

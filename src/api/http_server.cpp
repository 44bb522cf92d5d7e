#include "api/http_server.h"

#include "common/utf8.h"

#include "common/failpoint.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <deque>

#include <sstream>
#include <stdexcept>
#include <sys/socket.h>

namespace inferbox {

namespace beast = boost::beast;
namespace net   = boost::asio;
using tcp       = net::ip::tcp;

struct http_server::impl : std::enable_shared_from_this<impl> {
    impl(net::io_context &c, handler_fn h, protocol_error_fn e, http_limits l)
        : ioc(c), acceptor(net::make_strand(c)), handler(std::move(h)), on_error(std::move(e)), limits(l) {}
    void do_accept();

    net::io_context                   &ioc;
    tcp::acceptor                      acceptor;
    handler_fn                         handler;
    protocol_error_fn                  on_error;
    http_limits                        limits;
    access_log_fn                      access_log;
    body_limit_fn                      body_limit;
    http_server::unhandled_fn          on_unhandled;
    std::shared_ptr<net::ssl::context> tls; // HTTPS when set
    // Exchanges whose request arrived and whose response is not fully written (or abandoned).
    std::atomic<size_t> open_exchanges{0};
};

namespace {

// One connection. `Stream` is beast::tcp_stream (plain HTTP) or an ssl_stream over it (HTTPS);
// everything but the handshake is the same code.
template <class Stream>
class session final : public http_exchange, public std::enable_shared_from_this<session<Stream>> {
    static constexpr bool tls = !std::is_same_v<Stream, beast::tcp_stream>;
    using std::enable_shared_from_this<session<Stream>>::shared_from_this;

  public:
    template <class... Args>
    session(tcp::socket socket, executor_t strand, std::shared_ptr<http_server::impl> server, Args &&...args)
        : strand_(std::move(strand)), stream_(std::move(socket), std::forward<Args>(args)...),
          server_(std::move(server)), deadline_(strand_) {
        beast::error_code ec;
        const auto        ep = lowest().socket().remote_endpoint(ec);
        if (!ec) {
            remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
        }
    }
    ~session() override {
        if (open_) {
            --server_->open_exchanges; // the io_context stopped before the exchange completed
        }
    }
    session(const session &)            = delete;
    session &operator=(const session &) = delete;

    void run() {
        net::dispatch(strand_, [self = shared_from_this()] {
            if constexpr (tls) {
                // The handshake shares the request timeout: a client that connects and stalls
                // holds nothing for longer.
                self->lowest().expires_after(self->server_->limits.header_timeout);
                self->stream_.async_handshake(net::ssl::stream_base::server, [self](beast::error_code ec) {
                    if (ec) {
                        spdlog::debug("TLS handshake with {} failed: {}", self->remote_, ec.message());
                        self->close();
                        return;
                    }
                    self->do_read();
                });
            } else {
                self->do_read();
            }
        });
    }

    const http::request<http::string_body> &request() const override { return req_; }
    executor_t                              executor() const override { return strand_; }
    std::chrono::steady_clock::time_point   received() const override { return received_; }
    std::string                             remote() const override { return remote_; }
    void                                    add_response_header(std::string name, std::string value) override {
        extra_headers_.emplace_back(std::move(name), std::move(value));
    }
    void log_field(std::string key, log_value value) override {
        log_fields_.emplace_back(std::move(key), std::move(value));
    }

    void respond(http::status status, std::string body, const std::string &content_type,
                 const header_list &headers) override {
        if (complete_ || closed_) {
            return;
        }
        http::response<http::string_body> res{status, req_.version()};
        res.set(http::field::server, "inferbox");
        res.set(http::field::content_type, content_type);
        for (const auto &[k, v] : extra_headers_) {
            res.set(k, v);
        }
        for (const auto &[k, v] : headers) {
            // Vary lists accumulate (CORS adds Origin, a handler Accept-Encoding); others replace.
            if (ascii_iequals(k, "Vary") && res.find(http::field::vary) != res.end()) {
                res.set(http::field::vary, std::string(res[http::field::vary]) + ", " + v);
            } else {
                res.set(k, v);
            }
        }
        status_ = static_cast<unsigned>(status);
        res.keep_alive(keep_alive_);
        res.body() = std::move(body);
        res.prepare_payload();
        if (status == http::status::not_modified || status == http::status::no_content) {
            res.erase(http::field::content_length); // neither has a body nor a length (RFC 9110 8.6)
        }
        if (req_.method() == http::verb::head) {
            res.body().clear(); // the headers (Content-Length included) of the GET answer, no body
        }
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
        for (const auto &[k, v] : extra_headers_) {
            head += k + ": " + v + "\r\n";
        }
        for (const auto &[k, v] : headers) {
            head += k + ": " + v + "\r\n";
        }
        status_ = 200;
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
    beast::tcp_stream &lowest() { return beast::get_lowest_layer(stream_); }

    void do_read() {
        complete_  = false;
        streaming_ = false;
        open_      = false;
        status_    = 0;
        bytes_     = 0;
        extra_headers_.clear();
        log_fields_.clear();
        req_ = {}; // a protocol error on the next request must not log the previous one
        parser_.emplace();
        // The body limit depends on the route: set in on_header, which also checks Content-Length.
        parser_->body_limit(boost::none);
        parser_->header_limit(static_cast<uint32_t>(server_->limits.max_header_bytes));
        lowest().expires_never(); // reads are bounded by deadline_, writes by the stream's expiry
        // Idle until the first byte: --idle-timeout. From the first byte the whole request must
        // arrive within --request-timeout, however slowly it trickles (slowloris). The parser
        // consumes a header only once it is complete, so the first bytes are read here, into the
        // same buffer the parser then reads from (decrypted bytes, for TLS).
        if (buffer_.size() > 0) {
            start_request(); // a pipelined request is already here
            return;
        }
        arm(server_->limits.idle_timeout, phase::idle);
        stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
            self->buffer_.commit(n);
            if (ec) {
                self->disarm();
                self->close();
                return;
            }
            self->start_request();
        });
    }

    void start_request() {
        arm(server_->limits.header_timeout, phase::request);
        http::async_read_header(stream_, buffer_, *parser_,
                                [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
    }

    // One deadline for whatever the connection is waiting for. On expiry: an idle connection
    // closes; a request being read has its read cancelled, and on_read_error answers 408 on the
    // still-open socket; a lingering close ends.
    enum class phase { idle, request, linger };
    void arm(std::chrono::seconds d, phase p) {
        phase_     = p;
        timed_out_ = false;
        wait_deadline(d, ++deadline_gen_);
    }
    void wait_deadline(std::chrono::steady_clock::duration d, uint64_t gen) {
        deadline_.expires_after(d);
        deadline_.async_wait([self = shared_from_this(), gen](beast::error_code ec) {
            if (ec || gen != self->deadline_gen_ || self->closed_) {
                return;
            }
            self->timed_out_ = true;
            if (self->phase_ == phase::request) {
                beast::error_code e;
                self->lowest().socket().cancel(e);
                // The request is read by a composed operation (async_read_header, async_read).
                // Between two of its reads, while its handler waits to run, it has nothing
                // pending for cancel() to abort, and it would go on reading a trickling client
                // for as long as bytes come. So cancel again until the read ends: on_read_error
                // and on_read disarm this timer.
                self->wait_deadline(std::chrono::milliseconds(50), gen);
            } else {
                self->close();
            }
        });
    }
    void disarm() {
        ++deadline_gen_;
        deadline_.cancel();
    }

    void on_header(beast::error_code ec) {
        if (ec) {
            on_read_error(ec);
            return;
        }
        const auto &fields  = parser_->get();
        const auto  n_field = static_cast<size_t>(std::distance(fields.begin(), fields.end()));
        if (n_field > server_->limits.max_header_count) {
            disarm(); // the request deadline must not cancel the answer's write
            keep_alive_ = false;
            open_exchange();
            const std::string msg = "the request has " + std::to_string(n_field) + " header fields; the limit is " +
                                    std::to_string(server_->limits.max_header_count);
            respond(http::status::request_header_fields_too_large,
                    server_->on_error(http::status::request_header_fields_too_large, msg), "application/json", {});
            return;
        }
        const auto &h = parser_->get();
        body_limit_   = server_->body_limit
                            ? server_->body_limit(std::string_view(h.target().data(), h.target().size()), h.method())
                            : server_->limits.max_body_bytes;
        parser_->body_limit(body_limit_);
        if (const auto length = parser_->content_length(); length && *length > body_limit_) {
            on_read_error(http::error::body_limit);
            return;
        }
        chunks_    = 0;
        chunk_ext_ = 0;
        chunk_refusal_.clear();
        if (parser_->chunked()) {
            parser_->on_chunk_header(on_chunk_);
        }
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code e, size_t) { self->on_read(e); });
    }

    // Counts a chunked body's chunks and extension bytes against their limits.
    void count_chunk(std::string_view extensions, beast::error_code &ec) {
        ++chunks_;
        chunk_ext_ += extensions.size();
        if (chunks_ > server_->limits.max_body_chunks) {
            chunk_refusal_ = "the chunked request body has more than " +
                             std::to_string(server_->limits.max_body_chunks) +
                             " chunks (the limit); send larger chunks or a Content-Length";
        } else if (chunk_ext_ > server_->limits.max_chunk_ext_bytes) {
            chunk_refusal_ = "the chunked request body's chunk extensions exceed " +
                             std::to_string(server_->limits.max_chunk_ext_bytes) + " bytes (the limit)";
        }
        if (!chunk_refusal_.empty()) {
            ec = http::error::bad_chunk;
        }
    }

    void on_read_error(beast::error_code ec) {
        const bool timed_out = timed_out_ && phase_ == phase::request;
        disarm();
        if (timed_out) {
            ec = beast::error::timeout;
        }
        if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
            ec == net::error::operation_aborted || !parser_ || !parser_->got_some()) {
            close(); // the client left, or never sent a byte of a request: nothing to answer
            return;
        }
        // Answer protocol-level failures, then close: the connection state is unknown.
        http::status status = http::status::bad_request;
        std::string  msg    = "malformed HTTP request: " + ec.message();
        if (!chunk_refusal_.empty()) {
            status = http::status::payload_too_large;
            msg    = chunk_refusal_;
        } else if (ec == http::error::body_limit) {
            status = http::status::payload_too_large;
            msg    = "request body exceeds the limit of " + std::to_string(body_limit_) + " bytes";
        } else if (ec == http::error::header_limit) {
            status = http::status::request_header_fields_too_large;
            msg = "request headers exceed the limit of " + std::to_string(server_->limits.max_header_bytes) + " bytes";
        } else if (ec == beast::error::timeout) {
            status = http::status::request_timeout;
            msg    = "the request did not arrive within " + std::to_string(server_->limits.header_timeout.count()) +
                  " seconds";
        }
        keep_alive_ = false;
        linger_     = true; // the client may still be sending the body we refused
        open_exchange();
        respond(status, server_->on_error(status, msg), "application/json", {});
    }

    // Closing right after answering a request whose body we did not read makes the client's
    // TCP stack reset the connection, and the reset can destroy our answer before the client
    // reads it. So: stop sending, discard what the client still sends for a bounded time and
    // amount, then close.
    void linger_close() {
        beast::error_code ec;
        lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
        arm(std::chrono::seconds(2), phase::linger);
        drain();
    }
    void drain() {
        lowest().socket().async_read_some(net::buffer(scratch_),
                                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                                              self->drained_ += n;
                                              if (ec || self->closed_ || self->drained_ > (16u << 20)) {
                                                  self->disarm();
                                                  self->close();
                                                  return;
                                              }
                                              self->drain();
                                          });
    }

    // The exchange's clock starts when a request (or the attempt at one) is complete.
    void open_exchange() {
        if (!open_) {
            ++server_->open_exchanges;
        }
        open_     = true;
        received_ = std::chrono::steady_clock::now();
    }

    // Writes the access record once per exchange: when its last byte is written, or when the
    // client goes away first.
    void finish_exchange(bool client_gone) {
        if (!open_) {
            return;
        }
        open_ = false;
        --server_->open_exchanges;
        if (!server_->access_log) {
            return;
        }
        access_record r;
        const bool    parsed = req_.method() != http::verb::unknown;
        r.method             = parsed ? std::string(req_.method_string()) : "-";
        r.target             = parsed ? std::string(req_.target()).substr(0, 512) : "-";
        r.status             = status_;
        r.bytes_sent         = bytes_;
        r.seconds            = std::chrono::duration<double>(std::chrono::steady_clock::now() - received_).count();
        r.client_gone        = client_gone;
        r.remote             = remote_;
        r.fields             = std::move(log_fields_);
        server_->access_log(r);
    }

    void on_read(beast::error_code ec) {
        if (ec) {
            on_read_error(ec);
            return;
        }
        disarm();
        if (failpoint("INFERBOX_FAILPOINT_IO_THROW")) {
            // Outside the handler's try: what the I/O thread's own catch-all is for.
            throw std::runtime_error("failpoint: a completion handler throws");
        }
        req_        = parser_->release();
        keep_alive_ = req_.keep_alive();
        open_exchange();
        ++generation_;
        lowest().expires_never();
        watch_disconnect();
        // The last line of defence: whatever a handler throws (std::bad_alloc, a library call)
        // ends this request with a 500 (or ends its stream), is reported, and the server goes on.
        try {
            server_->handler(shared_from_this());
        } catch (const std::exception &e) {
            unhandled(e.what());
        } catch (...) {
            unhandled("an exception that is not a std::exception");
        }
    }

    void unhandled(const std::string &what) {
        if (server_->on_unhandled) {
            server_->on_unhandled("handler", what);
        }
        if (streaming_) {
            end_stream();
        } else if (!complete_) {
            keep_alive_ = false;
            respond(http::status::internal_server_error,
                    server_->on_error(http::status::internal_server_error,
                                      "the server failed while handling this request; it has been logged"),
                    "application/json", {});
        }
    }

    // While a handler works, notice a client that goes away: the socket turns readable and a
    // peek reads end-of-file. Pipelined bytes also make it readable; then we stop watching. The
    // peek must not block: readiness can be spurious, and a blocked I/O thread stalls every
    // connection it serves.
    void watch_disconnect() {
        lowest().socket().async_wait(
            tcp::socket::wait_read, [self = shared_from_this(), gen = generation_](beast::error_code ec) {
                if (ec || gen != self->generation_ || self->complete_ || self->closed_) {
                    return;
                }
                char          c = 0;
                const ssize_t n = ::recv(self->lowest().socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
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
        // The bound is on a stream's queued events (http_limits::max_stream_backlog); a whole
        // response is one write of the size its handler chose (a file's content may be larger),
        // bounded by the write timeout.
        if (streaming_ && backlog_ > server_->limits.max_stream_backlog) {
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
        lowest().expires_after(server_->limits.write_timeout);
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
        bytes_ += outq_.front().size();
        outq_.pop_front();
        if (!outq_.empty()) {
            do_write();
            return;
        }
        lowest().expires_never();
        if (complete_) {
            finish_exchange(false);
            if (keep_alive_ && !closed_) {
                do_read();
            } else if (linger_) {
                linger_close();
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
        finish_exchange(true);
        close();
    }

    void close() {
        if (closed_) {
            return;
        }
        closed_ = true;
        beast::error_code ec;
        ++deadline_gen_;
        deadline_.cancel();
        lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
        lowest().socket().close(ec);
        // outq_ stays: an in-flight async_write may still reference its front buffer.
    }

    executor_t                                             strand_;
    Stream                                                 stream_;
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
    std::chrono::steady_clock::time_point                  received_;
    std::string                                            remote_;
    header_list                                            extra_headers_;
    log_fields                                             log_fields_;
    unsigned                                               status_ = 0;
    uint64_t                                               bytes_  = 0;
    bool                                                   open_   = false; // an exchange awaits its access record
    net::steady_timer                                      deadline_;
    uint64_t                                               deadline_gen_ = 0;
    phase                                                  phase_        = phase::idle;
    bool                                                   timed_out_    = false;
    bool                                                   linger_       = false;
    size_t                                                 drained_      = 0;
    std::array<char, 16384>                                scratch_{};
    size_t      body_limit_ = 0; // this request's (set once its header is read)
    size_t      chunks_     = 0; // chunks and extension bytes of a chunked body so far
    size_t      chunk_ext_  = 0;
    std::string chunk_refusal_; // why the chunked body was refused
    std::function<void(std::uint64_t, beast::string_view, beast::error_code &)> on_chunk_ =
        [this](std::uint64_t /*size*/, beast::string_view ext, beast::error_code &ec) {
            count_chunk(std::string_view(ext.data(), ext.size()), ec);
        };
};

} // namespace

void http_server::impl::do_accept() {
    auto strand = net::make_strand(ioc);
    acceptor.async_accept(strand, [self = shared_from_this(), strand](beast::error_code ec, tcp::socket socket) {
        if (!self->acceptor.is_open()) {
            return;
        }
        if (!ec) {
            // Streams are many small writes (one SSE event per token): with Nagle's algorithm a
            // write waits for the ACK of the previous one, which the client delays by up to
            // 40 ms, so tokens would arrive in bursts and the first one late.
            beast::error_code nd;
            socket.set_option(tcp::no_delay(true), nd);
            if (self->tls) {
                std::make_shared<session<beast::ssl_stream<beast::tcp_stream>>>(std::move(socket), strand, self,
                                                                                *self->tls)
                    ->run();
            } else {
                std::make_shared<session<beast::tcp_stream>>(std::move(socket), strand, self)->run();
            }
        } else {
            spdlog::warn("accept failed: {}", ec.message());
        }
        self->do_accept();
    });
}

http_server::http_server(net::io_context &ioc, handler_fn handler, protocol_error_fn on_error, http_limits limits)
    : impl_(std::make_shared<impl>(ioc, std::move(handler), std::move(on_error), limits)) {}

void http_server::set_access_log(access_log_fn fn) {
    impl_->access_log = std::move(fn);
}

void http_server::set_body_limit(body_limit_fn fn) {
    impl_->body_limit = std::move(fn);
}

void http_server::set_on_unhandled(unhandled_fn fn) {
    impl_->on_unhandled = std::move(fn);
}

std::optional<std::string> http_server::enable_tls(const tls_options &opts) {
    auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_server);
    // TLS 1.2 and 1.3 only; OpenSSL's default cipher lists for those are current.
    ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                     net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1 |
                     net::ssl::context::single_dh_use);
    beast::error_code ec;
    ctx->use_certificate_chain_file(opts.cert_file, ec);
    if (ec) {
        return "cannot use the TLS certificate " + opts.cert_file + ": " + ec.message();
    }
    ctx->use_private_key_file(opts.key_file, net::ssl::context::pem, ec);
    if (ec) {
        return "cannot use the TLS private key " + opts.key_file + ": " + ec.message();
    }
    if (!opts.client_ca_file.empty()) {
        ctx->load_verify_file(opts.client_ca_file, ec);
        if (ec) {
            return "cannot read the client CA file " + opts.client_ca_file + ": " + ec.message();
        }
        ctx->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert);
    }
    // A server that verifies clients must name its session context, or OpenSSL refuses every
    // session resumption (a returning client, e.g. Node's https agent) with an internal_error
    // alert. One context for the process: sessions are only resumed with the server that made them.
    static constexpr unsigned char session_context[] = "inferbox";
    if (SSL_CTX_set_session_id_context(ctx->native_handle(), session_context, sizeof session_context - 1) != 1) {
        return std::string("cannot set the TLS session context");
    }
    impl_->tls = std::move(ctx);
    return std::nullopt;
}

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

// The acceptor lives on its own strand: closing it (from the signal thread) and the accept loop
// (on any I/O thread) never run at the same time.
size_t http_server::open_exchanges() const noexcept {
    return impl_->open_exchanges.load();
}

void http_server::stop_accepting() noexcept {
    try {
        net::post(impl_->acceptor.get_executor(), [self = impl_] {
            beast::error_code ec;
            self->acceptor.close(ec);
        });
    } catch (...) {
        // Only allocation can fail here; the acceptor then closes with the io_context.
        std::fputs("inferbox: could not stop accepting (out of memory)\n", stderr);
    }
}

} // namespace inferbox

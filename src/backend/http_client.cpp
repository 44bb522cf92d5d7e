#include "backend/http_client.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <array>
#include <atomic>
#include <charconv>

namespace inferbox {

namespace net   = boost::asio;
namespace beast = boost::beast;
namespace http  = beast::http;
using tcp       = net::ip::tcp;

std::string http_url::origin() const {
    return std::string(tls ? "https://" : "http://") + host + ":" + port;
}

result<http_url> parse_http_url(const std::string &url) {
    http_url    u;
    std::string rest;
    if (url.rfind("http://", 0) == 0) {
        rest = url.substr(7);
    } else if (url.rfind("https://", 0) == 0) {
        u.tls = true;
        rest  = url.substr(8);
    } else {
        return error::invalid("'" + url + "' is not an http:// or https:// URL");
    }
    if (rest.find_first_of("?#") != std::string::npos) {
        return error::invalid("the URL '" + url + "' has a query or fragment; give the base URL only");
    }
    const auto  slash     = rest.find('/');
    std::string authority = rest.substr(0, slash);
    u.base_path           = slash == std::string::npos ? "" : rest.substr(slash);
    while (!u.base_path.empty() && u.base_path.back() == '/') {
        u.base_path.pop_back();
    }
    if (authority.find('@') != std::string::npos) {
        return error::invalid("the URL '" + url + "' carries user info; give credentials as an API key instead");
    }
    std::string port;
    if (!authority.empty() && authority.front() == '[') { // [IPv6]:port
        const auto close = authority.find(']');
        if (close == std::string::npos) {
            return error::invalid("the URL '" + url + "' has an unclosed IPv6 address");
        }
        u.host = authority.substr(1, close - 1);
        if (close + 1 < authority.size()) {
            if (authority[close + 1] != ':') {
                return error::invalid("the URL '" + url + "' has text after its IPv6 address");
            }
            port = authority.substr(close + 2);
        }
    } else {
        const auto colon = authority.rfind(':');
        u.host           = authority.substr(0, colon);
        if (colon != std::string::npos) {
            port = authority.substr(colon + 1);
        }
    }
    if (u.host.empty()) {
        return error::invalid("the URL '" + url + "' has no host");
    }
    if (port.empty()) {
        u.port = u.tls ? "443" : "80";
    } else {
        int        n  = 0;
        const auto rc = std::from_chars(port.data(), port.data() + port.size(), n);
        if (rc.ec != std::errc() || rc.ptr != port.data() + port.size() || n < 1 || n > 65535) {
            return error::invalid("the URL '" + url + "' has an invalid port '" + port + "' (1 to 65535)");
        }
        u.port = port;
    }
    return u;
}

result<std::shared_ptr<net::ssl::context>> make_client_tls(const std::string &ca_file) {
    auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_client);
    ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                     net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1);
    ctx->set_verify_mode(net::ssl::verify_peer);
    boost::system::error_code ec;
    if (ca_file.empty()) {
        ctx->set_default_verify_paths(ec);
        if (ec) {
            return error::invalid("the system's CA certificates cannot be loaded: " + ec.message());
        }
    } else {
        ctx->load_verify_file(ca_file, ec);
        if (ec) {
            return error::invalid("the CA file '" + ca_file + "' cannot be loaded: " + ec.message());
        }
    }
    return ctx;
}

namespace {

error timeout_error(const http_url &url, const char *phase, std::chrono::milliseconds limit) {
    return error{error_kind::timeout,
                 "the backend " + url.origin() + " did not " + phase + " within " + std::to_string(limit.count()) +
                     " ms",
                 "", "backend_timeout"};
}

template <class Stream>
class call_impl final : public http_call, public std::enable_shared_from_this<call_impl<Stream>> {
  public:
    template <class... StreamArgs>
    call_impl(const net::strand<net::any_io_executor> &strand, http_url url, http_client_options opts,
              http_call_handlers h, StreamArgs &&...stream_args)
        : strand_(strand), resolver_(strand), resolve_timer_(strand), stream_(std::forward<StreamArgs>(stream_args)...),
          url_(std::move(url)), opts_(std::move(opts)), h_(std::move(h)) {
        parser_.body_limit(opts_.max_body_bytes);
    }

    void start(http::request<http::string_body> req) {
        req_      = std::move(req);
        auto self = this->shared_from_this();
        net::dispatch(strand_, [self] { self->resolve(); });
    }

    void cancel() override {
        if (cancelled_.exchange(true)) {
            return;
        }
        auto self = this->shared_from_this();
        net::post(strand_, [self] { self->close(); });
    }

  private:
    void close() {
        resolver_.cancel();
        resolve_timer_.cancel();
        beast::error_code ec;
        beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ec);
        beast::get_lowest_layer(stream_).close();
    }

    void finish(std::optional<error> err) {
        if (done_) {
            return;
        }
        done_ = true;
        close();
        if (!cancelled_.load() && h_.on_done) {
            h_.on_done(std::move(err));
        }
    }

    // A transport error, phrased for the client (which backend, what failed) without secrets.
    void fail(const beast::error_code &ec, const char *phase, std::chrono::milliseconds limit) {
        if (ec == beast::error::timeout || ec == net::error::operation_aborted) {
            finish(timeout_error(url_, phase, limit));
            return;
        }
        finish(error{error_kind::upstream, "the backend " + url_.origin() + " failed (" + phase + "): " + ec.message(),
                     "", "backend_unreachable"});
    }

    void resolve() {
        if (cancelled_.load()) {
            return;
        }
        resolve_timer_.expires_after(opts_.connect_timeout);
        resolve_timer_.async_wait([this, self = this->shared_from_this()](const beast::error_code &ec) {
            if (!ec) {
                resolver_.cancel(); // DNS is not covered by the stream's own deadline
            }
        });
        resolver_.async_resolve(url_.host, url_.port,
                                [this, self = this->shared_from_this()](const beast::error_code           &ec,
                                                                        const tcp::resolver::results_type &results) {
                                    resolve_timer_.cancel();
                                    if (cancelled_.load()) {
                                        return;
                                    }
                                    if (ec) {
                                        fail(ec, "resolve its host name", opts_.connect_timeout);
                                        return;
                                    }
                                    connect(results);
                                });
    }

    void connect(const tcp::resolver::results_type &results) {
        auto &layer = beast::get_lowest_layer(stream_);
        layer.expires_after(opts_.connect_timeout);
        layer.async_connect(results, [this, self = this->shared_from_this()](const beast::error_code &ec,
                                                                             const tcp::endpoint & /*ep*/) {
            if (cancelled_.load()) {
                return;
            }
            if (ec) {
                fail(ec, "accept a connection", opts_.connect_timeout);
                return;
            }
            beast::error_code nodelay;
            beast::get_lowest_layer(stream_).socket().set_option(tcp::no_delay(true), nodelay);
            handshake();
        });
    }

    void handshake() {
        if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
            write();
        } else {
            // SNI and the certificate's name must match the host the URL names.
            if (!SSL_set_tlsext_host_name(stream_.native_handle(), url_.host.c_str())) {
                finish(error{error_kind::upstream, "TLS set-up for " + url_.origin() + " failed", "", "backend_tls"});
                return;
            }
            stream_.set_verify_callback(net::ssl::host_name_verification(url_.host));
            stream_.async_handshake(
                net::ssl::stream_base::client, [this, self = this->shared_from_this()](const beast::error_code &ec) {
                    if (cancelled_.load()) {
                        return;
                    }
                    if (ec) {
                        if (ec == beast::error::timeout) {
                            fail(ec, "complete the TLS handshake", opts_.connect_timeout);
                            return;
                        }
                        finish(error{error_kind::upstream,
                                     "the TLS handshake with " + url_.origin() + " failed: " + ec.message() +
                                         " (is its certificate signed by the CA this backend trusts?)",
                                     "", "backend_tls"});
                        return;
                    }
                    write();
                });
        }
    }

    void write() {
        beast::get_lowest_layer(stream_).expires_after(opts_.first_byte_timeout);
        http::async_write(stream_, req_,
                          [this, self = this->shared_from_this()](const beast::error_code &ec, size_t /*n*/) {
                              if (cancelled_.load()) {
                                  return;
                              }
                              if (ec) {
                                  fail(ec, "take the request", opts_.first_byte_timeout);
                                  return;
                              }
                              read_header();
                          });
    }

    void read_header() {
        http::async_read_header(stream_, buf_, parser_,
                                [this, self = this->shared_from_this()](const beast::error_code &ec, size_t /*n*/) {
                                    if (cancelled_.load()) {
                                        return;
                                    }
                                    if (ec) {
                                        fail(ec, "start answering", opts_.first_byte_timeout);
                                        return;
                                    }
                                    http_headers headers;
                                    for (const auto &f : parser_.get()) {
                                        headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
                                    }
                                    if (h_.on_response) {
                                        h_.on_response(static_cast<int>(parser_.get().result_int()), headers);
                                    }
                                    read_body();
                                });
    }

    void read_body() {
        if (cancelled_.load() || done_) {
            return;
        }
        if (parser_.is_done()) {
            finish(std::nullopt);
            return;
        }
        parser_.get().body().data = body_buf_.data();
        parser_.get().body().size = body_buf_.size();
        beast::get_lowest_layer(stream_).expires_after(opts_.idle_timeout);
        // read_some: a piece goes out as soon as it arrives (an event stream is relayed as it is
        // written, not when a buffer fills or the answer ends).
        http::async_read_some(stream_, buf_, parser_,
                              [this, self = this->shared_from_this()](beast::error_code ec, size_t) {
                                  if (cancelled_.load()) {
                                      return;
                                  }
                                  if (ec == http::error::need_buffer) {
                                      ec = {}; // the piece buffer is full: deliver it and read on
                                  }
                                  const size_t got = body_buf_.size() - parser_.get().body().size;
                                  if (got > 0 && h_.on_body) {
                                      h_.on_body(std::string_view(body_buf_.data(), got));
                                  }
                                  if (ec) {
                                      if (ec == http::error::body_limit) {
                                          finish(error{error_kind::upstream,
                                                       "the backend " + url_.origin() + " answered more than " +
                                                           std::to_string(opts_.max_body_bytes) + " bytes",
                                                       "", "backend_too_large"});
                                          return;
                                      }
                                      fail(ec, "finish its answer", opts_.idle_timeout);
                                      return;
                                  }
                                  read_body();
                              });
    }

    net::strand<net::any_io_executor>        strand_;
    tcp::resolver                            resolver_;
    net::steady_timer                        resolve_timer_;
    Stream                                   stream_;
    http_url                                 url_;
    http_client_options                      opts_;
    http_call_handlers                       h_;
    http::request<http::string_body>         req_;
    http::response_parser<http::buffer_body> parser_;
    beast::flat_buffer                       buf_;
    std::array<char, 16384>                  body_buf_{};
    std::atomic<bool>                        cancelled_{false};
    bool                                     done_ = false;
};

} // namespace

std::shared_ptr<http_call> start_http_call(const net::any_io_executor &exec, const http_url &url,
                                           const std::string &method, const std::string &path,
                                           const http_headers &headers, std::string body,
                                           const http_client_options &opts, http_call_handlers handlers) {
    http::request<http::string_body> req;
    req.method_string(method);
    req.target(url.base_path + path);
    req.version(11);
    const bool default_port = url.port == (url.tls ? "443" : "80");
    req.set(http::field::host, default_port ? url.host : url.host + ":" + url.port);
    req.set(http::field::user_agent, "inferbox");
    for (const auto &[k, v] : headers) {
        req.set(k, v);
    }
    if (!body.empty()) {
        req.set(http::field::content_type, "application/json");
        req.body() = std::move(body);
    }
    req.prepare_payload();
    auto strand = net::make_strand(exec);
    if (url.tls) {
        if (!opts.tls) {
            auto call = std::make_shared<call_impl<beast::tcp_stream>>(strand, url, opts, handlers, strand);
            net::post(strand, [handlers] {
                if (handlers.on_done) {
                    handlers.on_done(error{error_kind::internal, "no TLS context for an https backend", "", ""});
                }
            });
            return call;
        }
        auto call = std::make_shared<call_impl<beast::ssl_stream<beast::tcp_stream>>>(
            strand, url, opts, std::move(handlers), strand, *opts.tls);
        call->start(std::move(req));
        return call;
    }
    auto call = std::make_shared<call_impl<beast::tcp_stream>>(strand, url, opts, std::move(handlers), strand);
    call->start(std::move(req));
    return call;
}

} // namespace inferbox

#include "engine/rpc.h"

#include "ggml-backend.h"
#include "ggml.h"
#ifdef INFERBOX_HAVE_RPC
#include "ggml-rpc.h"
#endif

#include <spdlog/spdlog.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace inferbox {

namespace {

error bad_endpoint(const std::string &message) {
    return error{error_kind::invalid_request, message, "rpc", "invalid_rpc_endpoint"};
}

error unreachable(const rpc_endpoint &ep, const std::string &why) {
    return error{error_kind::unavailable, "RPC worker " + ep.text() + " " + why, "rpc", "rpc_worker_unreachable"};
}

bool valid_host(std::string_view h) {
    if (h.empty() || h.size() > 253) {
        return false;
    }
    for (const char c : h) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '.' || c == '_';
        if (!ok) {
            return false;
        }
    }
    return true;
}

// A socket closed on every path.
struct fd_guard {
    int fd = -1;
    ~fd_guard() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
};

using clock = std::chrono::steady_clock;

int remaining_ms(clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    return left > 0 ? static_cast<int>(left) : 0;
}

// Waits for `events` on fd until the deadline: 1 ready, 0 timed out, -1 error (errno set).
int wait_for(int fd, short events, clock::time_point deadline) {
    for (;;) {
        pollfd    p{fd, events, 0};
        const int n = ::poll(&p, 1, remaining_ms(deadline));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n;
    }
}

// Sends or receives exactly `size` bytes before the deadline; an empty string on success, else
// what went wrong.
std::string transfer(int fd, void *data, size_t size, bool sending, clock::time_point deadline,
                     std::chrono::milliseconds timeout) {
    auto  *p    = static_cast<char *>(data);
    size_t done = 0;
    while (done < size) {
        const int ready = wait_for(fd, sending ? POLLOUT : POLLIN, deadline);
        if (ready == 0) {
            return "did not answer the handshake within " + std::to_string(timeout.count()) +
                   " ms (a worker serves one client at a time: is another server connected to it?)";
        }
        if (ready < 0) {
            return std::string("failed during the handshake: ") + std::strerror(errno);
        }
        const ssize_t n =
            sending ? ::send(fd, p + done, size - done, MSG_NOSIGNAL) : ::recv(fd, p + done, size - done, 0);
        if (n == 0) {
            return "closed the connection during the handshake (is it a ggml-rpc-server?)";
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
                continue;
            }
            return std::string("failed during the handshake: ") + std::strerror(errno);
        }
        done += static_cast<size_t>(n);
    }
    return {};
}

// HELLO as ggml's RPC protocol 7 frames it: command byte 14, the request size (u64, host
// order: ggml's own client and server use it that way), 24 bytes of connection capabilities
// (all zero: plain TCP, no RDMA upgrade); the reply is its size (u64) and major, minor, patch,
// padding, 24 capability bytes.
constexpr uint8_t rpc_cmd_hello   = 14;
constexpr size_t  rpc_caps_size   = 24;
constexpr size_t  rpc_hello_reply = 4 + rpc_caps_size;

std::function<void(const std::string &)> &fatal_slot() {
    static std::function<void(const std::string &)> fn;
    return fn;
}

void on_ggml_abort(const char *message) {
    const auto &fn = fatal_slot();
    std::string text(message != nullptr ? message : "");
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.pop_back();
    }
    // ggml prefixes the source file's build path: keep its name only.
    if (const size_t colon = text.find(':'); colon != std::string::npos) {
        if (const size_t slash = text.rfind('/', colon); slash != std::string::npos) {
            text.erase(0, slash + 1);
        }
    }
    if (fn) {
        fn(text); // does not return
    }
    spdlog::critical("ggml: {}", text);
}

} // namespace

result<std::vector<rpc_endpoint>> parse_rpc_endpoints(std::string_view list) {
    std::vector<rpc_endpoint> out;
    if (list.empty()) {
        return bad_endpoint("--rpc is empty: give HOST:PORT[,HOST:PORT...]");
    }
    size_t start = 0;
    while (start <= list.size()) {
        const size_t     comma = list.find(',', start);
        std::string_view item  = list.substr(start, comma == std::string_view::npos ? list.npos : comma - start);
        start                  = comma == std::string_view::npos ? list.size() + 1 : comma + 1;
        const std::string shown(item.substr(0, 80));
        if (item.empty()) {
            return bad_endpoint("--rpc has an empty entry: give HOST:PORT[,HOST:PORT...]");
        }
        const size_t colon = item.rfind(':');
        if (colon == std::string_view::npos) {
            return bad_endpoint("--rpc entry '" + shown + "' has no port: give HOST:PORT");
        }
        const std::string_view host = item.substr(0, colon);
        const std::string_view port = item.substr(colon + 1);
        if (!valid_host(host)) {
            return bad_endpoint("--rpc entry '" + shown +
                                "': the host must be a name or IPv4 address of letters, digits, '-', '.' and '_' "
                                "(at most 253 characters; IPv6 addresses are not supported by ggml's RPC client)");
        }
        unsigned   value = 0;
        const auto r     = std::from_chars(port.data(), port.data() + port.size(), value);
        if (port.empty() || r.ec != std::errc() || r.ptr != port.data() + port.size() || value < 1 || value > 65535) {
            return bad_endpoint("--rpc entry '" + shown + "': the port must be a number from 1 to 65535");
        }
        rpc_endpoint ep{std::string(host), static_cast<uint16_t>(value)};
        for (const auto &e : out) {
            if (e.host == ep.host && e.port == ep.port) {
                return bad_endpoint("--rpc lists " + ep.text() + " twice");
            }
        }
        out.push_back(std::move(ep));
        if (out.size() > max_rpc_workers) {
            return bad_endpoint("--rpc lists more than " + std::to_string(max_rpc_workers) +
                                " workers (the most ggml's RPC client supports)");
        }
    }
    return out;
}

result<rpc_worker_version> probe_rpc_worker(const rpc_endpoint &ep, std::chrono::milliseconds timeout) {
    const auto deadline = clock::now() + timeout;
    addrinfo   hints{};
    hints.ai_family   = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo  *found  = nullptr;
    const auto port   = std::to_string(ep.port);
    const int  rc     = ::getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &found);
    if (rc != 0 || found == nullptr) {
        return unreachable(ep, std::string("cannot be resolved: ") + ::gai_strerror(rc));
    }
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> addrs(found, &::freeaddrinfo);

    fd_guard sock;
    sock.fd = ::socket(found->ai_family, found->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, found->ai_protocol);
    if (sock.fd < 0) {
        return unreachable(ep, std::string("cannot be reached: socket: ") + std::strerror(errno));
    }
    if (::connect(sock.fd, found->ai_addr, found->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            return unreachable(ep, std::string("cannot be reached: ") + std::strerror(errno));
        }
        const int ready = wait_for(sock.fd, POLLOUT, deadline);
        if (ready == 0) {
            return unreachable(ep, "did not accept a connection within " + std::to_string(timeout.count()) + " ms");
        }
        int       so_error = 0;
        socklen_t len      = sizeof(so_error);
        if (ready < 0 || ::getsockopt(sock.fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 || so_error != 0) {
            return unreachable(ep, std::string("cannot be reached: ") +
                                       std::strerror(ready < 0 ? errno : (so_error != 0 ? so_error : errno)));
        }
    }

    std::array<uint8_t, 1 + sizeof(uint64_t) + rpc_caps_size> hello{};
    hello[0]                    = rpc_cmd_hello;
    const uint64_t request_size = rpc_caps_size;
    std::memcpy(hello.data() + 1, &request_size, sizeof(request_size));
    if (auto why = transfer(sock.fd, hello.data(), hello.size(), true, deadline, timeout); !why.empty()) {
        return unreachable(ep, why);
    }
    uint64_t reply_size = 0;
    if (auto why = transfer(sock.fd, &reply_size, sizeof(reply_size), false, deadline, timeout); !why.empty()) {
        return unreachable(ep, why);
    }
    if (reply_size != rpc_hello_reply) {
        return unreachable(ep, "answered the handshake with " + std::to_string(reply_size) + " bytes instead of " +
                                   std::to_string(rpc_hello_reply) +
                                   " (not a ggml-rpc-server of protocol 7, the version this build speaks)");
    }
    std::array<uint8_t, rpc_hello_reply> reply{};
    if (auto why = transfer(sock.fd, reply.data(), reply.size(), false, deadline, timeout); !why.empty()) {
        return unreachable(ep, why);
    }
    rpc_worker_version v{reply[0], reply[1], reply[2]};
#ifdef INFERBOX_HAVE_RPC
    if (v.major != RPC_PROTO_MAJOR_VERSION || v.minor > RPC_PROTO_MINOR_VERSION) {
        return unreachable(ep, "speaks RPC protocol " + std::to_string(v.major) + "." + std::to_string(v.minor) + "." +
                                   std::to_string(v.patch) + "; this build speaks " +
                                   std::to_string(RPC_PROTO_MAJOR_VERSION) + "." +
                                   std::to_string(RPC_PROTO_MINOR_VERSION) +
                                   " (run ggml-rpc-server from the same llama.cpp as inferbox)");
    }
#endif
    return v;
}

bool rpc_supported() {
#ifdef INFERBOX_HAVE_RPC
    return true;
#else
    return false;
#endif
}

result<std::vector<rpc_device>> attach_rpc_workers(const std::vector<rpc_endpoint> &eps,
                                                   std::chrono::milliseconds        timeout) {
#ifdef INFERBOX_HAVE_RPC
    for (const auto &ep : eps) {
        auto v = probe_rpc_worker(ep, timeout);
        if (!v) {
            return v.err();
        }
        spdlog::info("RPC worker {} answered (protocol {}.{}.{})", ep.text(), v->major, v->minor, v->patch);
    }
    std::vector<rpc_device> out;
    for (const auto &ep : eps) {
        const std::string  endpoint = ep.text();
        ggml_backend_reg_t reg      = ggml_backend_rpc_add_server(endpoint.c_str());
        if (reg == nullptr) {
            return error{error_kind::unavailable, "RPC worker " + endpoint + " could not be added", "rpc",
                         "rpc_worker_unreachable"};
        }
        ggml_backend_register(reg);
        for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); ++i) {
            ggml_backend_dev_t dev = ggml_backend_reg_dev_get(reg, i);
            rpc_device         d;
            d.name        = ggml_backend_dev_name(dev);
            d.description = ggml_backend_dev_description(dev);
            d.endpoint    = endpoint;
            size_t free = 0, total = 0;
            ggml_backend_dev_memory(dev, &free, &total);
            d.free_bytes  = free;
            d.total_bytes = total;
            out.push_back(std::move(d));
        }
    }
    return out;
#else
    (void)eps;
    (void)timeout;
    return error{error_kind::invalid_request,
                 "this build has no RPC backend: rebuild llama.cpp with -DGGML_RPC=ON (scripts/setup.sh does)", "rpc",
                 "rpc_unsupported"};
#endif
}

int run_rpc_worker(const rpc_worker_options &o) {
#ifdef INFERBOX_HAVE_RPC
    if (!valid_host(o.host) || o.port == 0) {
        spdlog::error("rpc-worker: --host must be a name or IPv4 address and --port 1..65535");
        return 1;
    }
    ggml_backend_load_all();
    std::vector<ggml_backend_dev_t> devs;
    if (!o.devices.empty()) {
        size_t start = 0;
        while (start <= o.devices.size()) {
            const size_t      comma = o.devices.find(',', start);
            const std::string name =
                o.devices.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
            start                  = comma == std::string::npos ? o.devices.size() + 1 : comma + 1;
            ggml_backend_dev_t dev = ggml_backend_dev_by_name(name.c_str());
            if (dev == nullptr) {
                std::string known;
                for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
                    known += (known.empty() ? "" : ", ") + std::string(ggml_backend_dev_name(ggml_backend_dev_get(i)));
                }
                spdlog::error("rpc-worker: no device '{}' (this machine has: {})", name.substr(0, 64), known);
                return 1;
            }
            devs.push_back(dev);
        }
    } else {
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_GPU) {
                devs.push_back(dev);
            }
        }
        if (devs.empty()) {
            devs.push_back(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU));
        }
    }
    const char *cache = nullptr;
    if (!o.cache_dir.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(o.cache_dir, ec);
        if (ec) {
            spdlog::error("rpc-worker: cannot create the cache folder: {}", ec.message());
            return 1;
        }
        cache = o.cache_dir.c_str();
    }
    const size_t threads =
        o.n_threads > 0 ? size_t(o.n_threads) : size_t(std::max(1U, std::thread::hardware_concurrency() / 2));
    const std::string endpoint = o.host + ":" + std::to_string(o.port);
    for (auto *dev : devs) {
        size_t free = 0, total = 0;
        ggml_backend_dev_memory(dev, &free, &total);
        spdlog::info("rpc-worker: serving {} ({}, {} MiB free of {} MiB)", ggml_backend_dev_name(dev),
                     ggml_backend_dev_description(dev), free >> 20, total >> 20);
    }
    spdlog::info("rpc-worker: listening on {} with {} CPU threads, protocol {}.{}.{}; one leader at a time", endpoint,
                 threads, RPC_PROTO_MAJOR_VERSION, RPC_PROTO_MINOR_VERSION, RPC_PROTO_PATCH_VERSION);
    // Returns only when the socket cannot be created or accept fails (ggml prints why).
    ggml_backend_rpc_start_server(endpoint.c_str(), cache, threads, devs.size(), devs.data());
    spdlog::error("rpc-worker: the server on {} stopped (is the port in use?)", endpoint);
    return 1;
#else
    (void)o;
    spdlog::error("rpc-worker: this build has no RPC backend: rebuild llama.cpp with -DGGML_RPC=ON (scripts/setup.sh "
                  "does)");
    return 1;
#endif
}

void set_fatal_handler(std::function<void(const std::string &)> fn) {
    static std::mutex mu;
    std::lock_guard   lock(mu);
    const bool        set = static_cast<bool>(fn);
    fatal_slot()          = std::move(fn);
    ggml_set_abort_callback(set ? &on_ggml_abort : nullptr);
}

} // namespace inferbox

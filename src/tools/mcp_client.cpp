#include "tools/mcp_client.h"

#include "tools/curl_http.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <optional>
#include <poll.h>
#include <spawn.h>
#include <sstream>
#include <string_view>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char **environ;

namespace inferbox {

using json  = nlohmann::json;
using clock = std::chrono::steady_clock;

namespace {

constexpr const char *protocol_version    = "2025-06-18";
constexpr size_t      max_message_bytes   = size_t{8} << 20;  // one JSON-RPC message from the server
constexpr size_t      max_output_bytes    = size_t{16} << 10; // what a call gives the model
constexpr size_t      max_tools           = 256;
constexpr size_t      max_url_bytes       = 2048;
constexpr size_t      max_headers         = 16;
constexpr size_t      max_header_value    = size_t{8} << 10;
constexpr size_t      max_session_id      = 256;
constexpr const char *session_expired     = "mcp_session_expired";           // error code: initialize again
constexpr auto        side_message_budget = std::chrono::milliseconds(2000); // cancellations, answers, DELETE

error mcp_error(const std::string &what) {
    return error{error_kind::upstream, what, "", "mcp_error"};
}

// The environment a server starts with: enough to find and run a program, nothing of ours (our
// variables may hold a backend's API key, and a server may have a tool that prints its env).
std::vector<std::string> child_environment() {
    std::vector<std::string> env;
    for (const char *name : {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"}) {
        if (const char *v = std::getenv(name)) {
            env.push_back(std::string(name) + "=" + v);
        }
    }
    return env;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

// A header name as RFC 9110 spells a token.
bool is_token(const std::string &s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
    });
}

// The endpoint of a streamable HTTP server: http:// or https://, a host, no credentials, no blanks.
std::optional<std::string> check_url(const std::string &url) {
    if (url.size() > max_url_bytes) {
        return "the URL is longer than " + std::to_string(max_url_bytes) + " bytes";
    }
    if (std::any_of(url.begin(), url.end(), [](char c) {
            return static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) == 0x7f;
        })) {
        return "the URL has a blank or a control character";
    }
    const size_t scheme    = url.rfind("https://", 0) == 0 ? 8 : 7;
    const size_t path      = url.find_first_of("/?#", scheme);
    const auto   authority = url.substr(scheme, path == std::string::npos ? std::string::npos : path - scheme);
    if (authority.empty() || authority.front() == ':') {
        return "the URL names no host";
    }
    if (authority.find('@') != std::string::npos) {
        return "the URL holds credentials: send them in a header (header.Authorization=ENV:VAR)";
    }
    return std::nullopt;
}

// header.NAME=ENV:VAR → (NAME, the variable's value).
result<std::pair<std::string, std::string>> parse_header(const std::string &server, const std::string &name,
                                                         const std::string &value) {
    const std::string where = "MCP server '" + server + "': header." + name.substr(0, 64);
    if (name.size() > 64 || !is_token(name)) {
        return error::invalid(where + ": a header name is letters, digits and -_.!#$%&'*+^`|~ (at most 64)");
    }
    static const char *const ours[] = {
        "accept", "content-type",      "content-length", "mcp-session-id", "mcp-protocol-version",
        "host",   "transfer-encoding", "expect",         "connection",     "last-event-id"};
    if (std::find(std::begin(ours), std::end(ours), lower(name)) != std::end(ours)) {
        return error::invalid(where + ": the transport sets this header itself");
    }
    if (value.rfind("ENV:", 0) != 0) {
        return error::invalid(where + ": the value must be ENV:VARIABLE (a secret never goes on a command line)");
    }
    const std::string var = value.substr(4);
    if (var.empty() || var.size() > 128 || std::isdigit(static_cast<unsigned char>(var[0])) != 0 ||
        !std::all_of(var.begin(), var.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; })) {
        return error::invalid(where + ": '" + var.substr(0, 128) +
                              "' is not an environment variable's name (letters, digits and '_', at most 128)");
    }
    const char *v = std::getenv(var.c_str());
    if (v == nullptr || *v == '\0') {
        return error::invalid(where + ": the environment variable " + var + " is not set");
    }
    const std::string text(v);
    if (text.size() > max_header_value) {
        return error::invalid(where + ": the value of " + var + " is longer than " + std::to_string(max_header_value) +
                              " bytes");
    }
    if (std::any_of(text.begin(), text.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; })) {
        return error::invalid(where + ": the value of " + var + " holds a line break");
    }
    return std::make_pair(name, text);
}

// What a JSON-RPC answer means: its result, or the server's error as ours.
result<json> rpc_result(const json &reply, const std::string &server, const std::string &method) {
    if (reply.contains("error")) {
        const auto &e = reply["error"];
        return mcp_error("the MCP server '" + server + "' answered " + method + " with an error: " +
                         (e.is_object() && e.contains("message") && e["message"].is_string()
                              ? e["message"].get<std::string>().substr(0, 1024)
                              : std::string("(no message)")));
    }
    return reply.contains("result") ? reply["result"] : json::object();
}

// The answer to a request the server sent us: ping is answered, everything else refused.
json answer_to_server(const json &request) {
    json reply = {{"jsonrpc", "2.0"}, {"id", request["id"]}};
    if (request["method"] == "ping") {
        reply["result"] = json::object();
    } else {
        reply["error"] = {{"code", -32601}, {"message", "method not supported by this client"}};
    }
    return reply;
}

// One way of exchanging JSON-RPC messages with a server. Implementations are thread-safe.
class mcp_transport {
  public:
    virtual ~mcp_transport()                        = default;
    mcp_transport()                                 = default;
    mcp_transport(const mcp_transport &)            = delete;
    mcp_transport &operator=(const mcp_transport &) = delete;

    // What must exist before initialize (the child process); nothing for HTTP.
    virtual std::optional<error> open() = 0;
    // A request's `result`, or an error: the server's JSON-RPC error, the time limit
    // (error_kind::timeout, after notifications/cancelled), a server that is gone, or an expired
    // session (code session_expired: the client initializes again and retries).
    virtual result<json> request(const std::string &method, const json &params, int32_t timeout_ms) = 0;
    virtual void         notify(const json &notification)                                           = 0;
    // True when the connection must be made again (and initialize run) before the next request.
    virtual bool                 needs_reopen() const = 0;
    virtual std::optional<error> reopen()             = 0; // an error when it may not (yet)
    virtual void                 close()              = 0; // idempotent; never throws
};

// The stdio transport: a child process, newline-delimited JSON-RPC on one socket pair.
class stdio_transport final : public mcp_transport {
  public:
    explicit stdio_transport(const mcp_server_spec &spec) : spec_(spec) {}
    ~stdio_transport() override {
        try {
            close();
        } catch (...) { // NOLINT(bugprone-empty-catch): a destructor; close() only frees what it holds
        }
    }
    stdio_transport(const stdio_transport &)            = delete;
    stdio_transport &operator=(const stdio_transport &) = delete;

    std::optional<error> open() override {
        // One socket pair is the server's stdin and stdout: our writes use MSG_NOSIGNAL (a server
        // that exited is an error here, never a SIGPIPE), and shutdown(SHUT_WR) is its end of input.
        int sv[2] = {-1, -1};
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            return mcp_error(std::string("cannot create a socket pair: ") + std::strerror(errno));
        }
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
        posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        sigset_t def;
        sigemptyset(&def);
        sigaddset(&def, SIGPIPE); // we ignore SIGPIPE; the server gets the default back
        posix_spawnattr_setsigdefault(&attr, &def);
        sigset_t none;
        sigemptyset(&none);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setpgroup(&attr, 0); // its own group: close() ends its children too
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
        std::vector<std::string> command = spec_.command;
        std::vector<char *>      argv;
        argv.reserve(command.size() + 1);
        for (auto &a : command) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        auto                env = child_environment();
        std::vector<char *> envp;
        envp.reserve(env.size() + 1);
        for (auto &e : env) {
            envp.push_back(e.data());
        }
        envp.push_back(nullptr);
        pid_t      child = -1;
        const int  rc    = posix_spawnp(&child, argv[0], &fa, &attr, argv.data(), envp.data());
        const auto why   = rc == 0 ? std::string() : std::string(std::strerror(rc));
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        ::close(sv[1]);
        if (rc != 0) {
            ::close(sv[0]);
            return mcp_error("cannot start '" + spec_.command[0] + "': " + why);
        }
        {
            std::lock_guard lock(mu_);
            pid_        = child;
            to_child_   = sv[0];
            from_child_ = sv[0];
            alive_      = true;
            stopping_   = false;
            last_start_ = clock::now();
        }
        reader_ = std::thread([this, fd = sv[0]] { read_loop(fd); });
        return std::nullopt;
    }

    void close() override {
        std::unique_lock lock(mu_);
        if (pid_ < 0) {
            return;
        }
        stopping_         = true;
        alive_            = false;
        const int w       = to_child_;
        to_child_         = -1;
        const pid_t child = pid_;
        pid_              = -1;
        cv_.notify_all();
        lock.unlock();
        {
            std::lock_guard wl(write_mu_);
            shutdown(w, SHUT_WR); // end of input: a well-behaved server exits
        }
        const auto wait_for = [child](std::chrono::milliseconds d) {
            const auto until = clock::now() + d;
            while (clock::now() < until) {
                if (waitpid(child, nullptr, WNOHANG) == child) {
                    return true;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
            return false;
        };
        if (!wait_for(std::chrono::milliseconds(1000))) {
            kill(-child, SIGTERM);
            if (!wait_for(std::chrono::milliseconds(1000))) {
                kill(-child, SIGKILL);
                waitpid(child, nullptr, 0);
            }
        }
        kill(-child, SIGKILL); // whatever it left behind in its group
        if (reader_.joinable()) {
            reader_.join();
        }
        lock.lock();
        ::close(from_child_);
        from_child_ = -1;
    }

    result<json> request(const std::string &method, const json &params, int32_t timeout_ms) override {
        int64_t id = 0;
        {
            std::lock_guard lock(mu_);
            if (!alive_) {
                return mcp_error("the MCP server '" + spec_.name + "' is not running");
            }
            id           = next_id_++;
            pending_[id] = std::nullopt;
        }
        if (!send({{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}})) {
            std::lock_guard lock(mu_);
            pending_.erase(id);
            return mcp_error("the MCP server '" + spec_.name + "' does not take input (it exited)");
        }
        std::unique_lock    lock(mu_);
        const bool          answered = cv_.wait_until(lock, clock::now() + std::chrono::milliseconds(timeout_ms),
                                                      [&] { return pending_[id].has_value() || !alive_; });
        std::optional<json> reply    = std::move(pending_[id]);
        pending_.erase(id);
        lock.unlock();
        if (!reply) {
            if (!answered) {
                send({{"jsonrpc", "2.0"},
                      {"method", "notifications/cancelled"},
                      {"params", {{"requestId", id}, {"reason", "timed out"}}}});
                return error{error_kind::timeout,
                             "the MCP server '" + spec_.name + "' did not answer " + method + " within " +
                                 std::to_string(timeout_ms) + " ms",
                             "", "mcp_timeout"};
            }
            return mcp_error("the MCP server '" + spec_.name + "' exited during " + method);
        }
        return rpc_result(*reply, spec_.name, method);
    }

    void notify(const json &notification) override { send(notification); }

    bool needs_reopen() const override {
        std::lock_guard lock(mu_);
        return !alive_;
    }

    // Starts the server again if the last start is 5 s old.
    std::optional<error> reopen() override {
        {
            std::lock_guard lock(mu_);
            if (clock::now() - last_start_ < std::chrono::seconds(5)) {
                return mcp_error("the MCP server '" + spec_.name + "' exited; it is restarted at most every 5 s");
            }
        }
        close();
        if (auto err = open()) {
            return err;
        }
        spdlog::warn("MCP server '{}' exited; started it again", spec_.name);
        return std::nullopt;
    }

  private:
    void read_loop(int fd) {
        std::string buf;
        char        chunk[65536];
        for (;;) {
            pollfd    p{fd, POLLIN, 0};
            const int ready = poll(&p, 1, 200);
            if (ready < 0 && errno != EINTR) {
                break;
            }
            if (ready <= 0) {
                std::lock_guard lock(mu_);
                if (stopping_) {
                    break;
                }
                continue;
            }
            const ssize_t n = read(fd, chunk, sizeof chunk);
            if (n <= 0) {
                break;
            }
            buf.append(chunk, static_cast<size_t>(n));
            size_t start = 0;
            for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
                on_line(std::string_view(buf).substr(start, nl - start));
            }
            buf.erase(0, start);
            if (buf.size() > max_message_bytes) {
                spdlog::warn("MCP server '{}' sent a message over {} bytes; stopping it", spec_.name,
                             max_message_bytes);
                break;
            }
        }
        std::lock_guard lock(mu_);
        alive_ = false;
        cv_.notify_all();
    }

    void on_line(std::string_view line) {
        const json msg = json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!msg.is_object()) {
            return; // not JSON-RPC (a server's stray output): ignored
        }
        const bool has_method = msg.contains("method") && msg["method"].is_string();
        if (has_method && msg.contains("id")) {
            send(answer_to_server(msg));
            return;
        }
        if (has_method || !msg.contains("id") || !msg["id"].is_number_integer()) {
            return; // a notification (log messages, list changes, progress): read and dropped
        }
        std::lock_guard lock(mu_);
        auto            it = pending_.find(msg["id"].get<int64_t>());
        if (it != pending_.end()) {
            it->second = msg;
            cv_.notify_all();
        }
    }

    bool send(const json &msg) {
        const std::string line = msg.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
        std::lock_guard   lock(write_mu_);
        int               fd = -1;
        {
            std::lock_guard l(mu_);
            fd = to_child_;
        }
        if (fd < 0) {
            return false;
        }
        // Never blocks for long: a server that stops reading its input (while we answer one of
        // its requests on the reader thread, say) must not hang the reader, or close() behind it.
        size_t off = 0;
        while (off < line.size()) {
            const ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                pollfd p{fd, POLLOUT, 0};
                if (poll(&p, 1, 2000) <= 0) {
                    return false; // its input stayed full for 2 s
                }
                continue;
            }
            if (n <= 0) {
                return false;
            }
            off += static_cast<size_t>(n);
        }
        return true;
    }

    const mcp_server_spec &spec_;

    mutable std::mutex                     mu_; // below
    std::condition_variable                cv_;
    pid_t                                  pid_      = -1;
    int                                    to_child_ = -1, from_child_ = -1;
    bool                                   alive_ = false, stopping_ = false;
    int64_t                                next_id_ = 1;
    std::map<int64_t, std::optional<json>> pending_;
    clock::time_point                      last_start_{};

    std::mutex  write_mu_;
    std::thread reader_;
};

// The streamable HTTP transport: each message a POST to the endpoint, answered by a JSON body or
// an event stream; the session id initialize returned goes with every later message.
class http_transport final : public mcp_transport {
  public:
    explicit http_transport(const mcp_server_spec &spec) : spec_(spec) {}
    ~http_transport() override {
        try {
            close();    // the DELETE that ends the session
        } catch (...) { // NOLINT(bugprone-empty-catch): a destructor; the server ends the session in time
        }
    }
    http_transport(const http_transport &)            = delete;
    http_transport &operator=(const http_transport &) = delete;

    std::optional<error> open() override { return std::nullopt; }

    result<json> request(const std::string &method, const json &params, int32_t timeout_ms) override {
        const int64_t id      = next_id_.fetch_add(1);
        const auto    session = current_session();
        const json    msg     = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};

        std::optional<json> answer;
        bool                stream = false;
        std::string         body; // a JSON answer, or the start of an error's body
        sse_parser          sse(max_message_bytes);
        auto                req = post(msg, session, std::chrono::milliseconds(timeout_ms));
        req.on_body             = [&](const curl_http_response &head, std::string_view chunk) {
            if (head.status == 200 && lower(head.header("content-type")).rfind("text/event-stream", 0) == 0) {
                stream = true;
                // Stops reading once our answer came: the server closes the stream then anyway.
                return sse.feed(chunk, [&](const std::string &, const std::string &data) {
                    return !on_stream_message(data, id, session, answer);
                });
            }
            const size_t room = head.status == 200 ? max_message_bytes : 4096;
            body.append(chunk.substr(0, room > body.size() ? room - body.size() : 0));
            return true;
        };
        auto r = http_.perform(req);
        if (!r) {
            if (r.err().kind == error_kind::timeout) {
                notify_on(session, {{"jsonrpc", "2.0"},
                                    {"method", "notifications/cancelled"},
                                    {"params", {{"requestId", id}, {"reason", "timed out"}}}});
                return error{error_kind::timeout,
                             "the MCP server '" + spec_.name + "' did not answer " + method + " within " +
                                 std::to_string(timeout_ms) + " ms",
                             "", "mcp_timeout"};
            }
            return mcp_error("the MCP server '" + spec_.name + "' failed during " + method + ": " + r.err().message);
        }
        if (sse.too_long()) {
            return mcp_error("the MCP server '" + spec_.name + "' sent an event over " +
                             std::to_string(max_message_bytes) + " bytes during " + method);
        }
        if (r->status == 404 && session) {
            {
                std::lock_guard lock(mu_);
                if (session_ == session) {
                    expired_ = true; // not if another call has opened a new session meanwhile
                }
            }
            return error{error_kind::upstream, "the MCP server '" + spec_.name + "' ended its session", "",
                         session_expired};
        }
        if (r->status != 200) {
            return mcp_error("the MCP server '" + spec_.name + "' answered " + method + " with HTTP " +
                             std::to_string(r->status) + describe_error_body(body));
        }
        if (!answer && !stream) {
            answer = find_answer(json::parse(body, nullptr, /*allow_exceptions=*/false), id);
        }
        if (!answer) {
            return mcp_error("the MCP server '" + spec_.name + "' " +
                             (stream ? "closed its event stream without answering " + method
                                     : "answered " + method + " with something that is not its JSON-RPC answer"));
        }
        auto out = rpc_result(*answer, spec_.name, method);
        if (out && method == "initialize") {
            if (auto err = start_session(*r, *out)) {
                return *err;
            }
        }
        return out;
    }

    void notify(const json &notification) override { notify_on(current_session(), notification); }

    bool needs_reopen() const override {
        std::lock_guard lock(mu_);
        return expired_;
    }

    // The session expired: the next initialize opens a new one.
    std::optional<error> reopen() override {
        std::lock_guard lock(mu_);
        session_.reset();
        negotiated_.clear();
        expired_ = false;
        spdlog::warn("MCP server '{}' ended its session; initializing again", spec_.name);
        return std::nullopt;
    }

    // Ends the session (DELETE, as the specification asks of a client that leaves); a server that
    // does not allow it answers 405, which is fine.
    void close() override {
        std::optional<std::string> session;
        {
            std::lock_guard lock(mu_);
            session.swap(session_);
        }
        if (!session) {
            return;
        }
        curl_http_request req;
        req.method         = "DELETE";
        req.url            = spec_.url;
        req.headers        = common_headers(session);
        req.timeout        = side_message_budget;
        req.max_body_bytes = 4096;
        static_cast<void>(http_.perform(req));
    }

  private:
    std::optional<std::string> current_session() const {
        std::lock_guard lock(mu_);
        return session_;
    }

    std::vector<std::pair<std::string, std::string>> common_headers(const std::optional<std::string> &session) const {
        std::vector<std::pair<std::string, std::string>> h = spec_.headers;
        if (session) {
            h.emplace_back("Mcp-Session-Id", *session);
        }
        std::lock_guard lock(mu_);
        if (!negotiated_.empty()) {
            h.emplace_back("MCP-Protocol-Version", negotiated_);
        }
        return h;
    }

    curl_http_request post(const json &msg, const std::optional<std::string> &session,
                           std::chrono::milliseconds timeout) const {
        curl_http_request req;
        req.method  = "POST";
        req.url     = spec_.url;
        req.headers = common_headers(session);
        req.headers.emplace_back("Content-Type", "application/json");
        req.headers.emplace_back("Accept", "application/json, text/event-stream");
        req.body           = msg.dump(-1, ' ', false, json::error_handler_t::replace);
        req.timeout        = timeout;
        req.max_body_bytes = max_message_bytes;
        return req;
    }

    // A notification (or our answer to the server's request): accepted with 202, nothing to read.
    void notify_on(const std::optional<std::string> &session, const json &msg) {
        auto req           = post(msg, session, side_message_budget);
        req.max_body_bytes = size_t{64} << 10;
        auto r             = http_.perform(req);
        if (!r || (r->status != 202 && r->status != 200)) {
            spdlog::debug("MCP server '{}' did not take a notification: {}", spec_.name,
                          r ? "HTTP " + std::to_string(r->status) : r.err().message);
        }
    }

    // One message of the event stream that answers our request `id`: true once it is the answer.
    bool on_stream_message(const std::string &data, int64_t id, const std::optional<std::string> &session,
                           std::optional<json> &answer) {
        const json msg = json::parse(data, nullptr, /*allow_exceptions=*/false);
        const auto one = [&](const json &m) {
            if (!m.is_object()) {
                return;
            }
            const bool has_method = m.contains("method") && m["method"].is_string();
            if (has_method && m.contains("id")) {
                notify_on(session, answer_to_server(m)); // a request of the server's (ping)
            } else if (!has_method && m.contains("id") && m["id"].is_number_integer() && m["id"].get<int64_t>() == id) {
                answer = m;
            }
        };
        if (msg.is_array()) {
            for (const auto &m : msg) {
                one(m);
            }
        } else {
            one(msg);
        }
        return answer.has_value();
    }

    // The answer to `id` in a JSON body: one message, or a batch (2025-03-26).
    static std::optional<json> find_answer(const json &body, int64_t id) {
        const auto is_ours = [id](const json &m) {
            return m.is_object() && m.contains("id") && m["id"].is_number_integer() && m["id"].get<int64_t>() == id &&
                   (m.contains("result") || m.contains("error"));
        };
        if (is_ours(body)) {
            return body;
        }
        if (body.is_array()) {
            for (const auto &m : body) {
                if (is_ours(m)) {
                    return m;
                }
            }
        }
        return std::nullopt;
    }

    // ": MESSAGE" from a JSON-RPC error body, or the start of the body as text.
    static std::string describe_error_body(const std::string &body) {
        const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
        if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
            j["error"]["message"].is_string()) {
            return ": " + j["error"]["message"].get<std::string>().substr(0, 512);
        }
        std::string text = body.substr(0, 512);
        for (char &c : text) {
            if (static_cast<unsigned char>(c) < 0x20) {
                c = ' ';
            }
        }
        return text.empty() ? std::string() : ": " + text;
    }

    // After initialize: the session the server assigned (if any) and the protocol version agreed.
    std::optional<error> start_session(const curl_http_response &r, const json &result) {
        const std::string id = r.header("mcp-session-id");
        if (id.size() > max_session_id || !std::all_of(id.begin(), id.end(), [](char c) {
                return static_cast<unsigned char>(c) >= 0x21 && static_cast<unsigned char>(c) <= 0x7e;
            })) {
            return mcp_error("the MCP server '" + spec_.name +
                             "' sent an Mcp-Session-Id that is not visible ASCII "
                             "of at most " +
                             std::to_string(max_session_id) + " bytes");
        }
        std::string version = protocol_version;
        if (result.contains("protocolVersion") && result["protocolVersion"].is_string() &&
            result["protocolVersion"].get<std::string>().size() <= 32 &&
            is_token(result["protocolVersion"].get<std::string>())) {
            version = result["protocolVersion"].get<std::string>();
        }
        std::lock_guard lock(mu_);
        session_    = id.empty() ? std::nullopt : std::optional<std::string>(id);
        negotiated_ = version;
        expired_    = false;
        return std::nullopt;
    }

    const mcp_server_spec &spec_;
    curl_http_client       http_;
    std::atomic<int64_t>   next_id_{1};

    mutable std::mutex         mu_; // below
    std::optional<std::string> session_;
    std::string                negotiated_; // the protocol version initialize agreed on
    bool                       expired_ = false;
};

} // namespace

result<mcp_server_spec> parse_mcp_server_spec(const std::string &text) {
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
        return error::invalid("expected NAME=stdio:COMMAND... or NAME=http://HOST:PORT/PATH, got '" +
                              text.substr(0, 128) + "'");
    }
    mcp_server_spec s;
    s.name = text.substr(0, eq);
    if (s.name.size() > 64 || !std::all_of(s.name.begin(), s.name.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
        })) {
        return error::invalid("MCP server name '" + s.name.substr(0, 64) +
                              "': use letters, digits, '_' and '-' (at most 64)");
    }
    std::vector<std::string> parts;
    std::stringstream        in(text.substr(eq + 1));
    for (std::string p; std::getline(in, p, ';');) {
        parts.push_back(p);
    }
    if (!parts.empty() && parts[0].rfind("stdio:", 0) == 0) {
        std::stringstream words(parts[0].substr(6));
        for (std::string w; words >> w;) {
            s.command.push_back(w);
        }
        if (s.command.empty()) {
            return error::invalid("MCP server '" + s.name + "': stdio: needs a command");
        }
    } else if (!parts.empty() && (parts[0].rfind("http://", 0) == 0 || parts[0].rfind("https://", 0) == 0)) {
        if (auto why = check_url(parts[0])) {
            return error::invalid("MCP server '" + s.name + "': " + *why);
        }
        s.transport = mcp_transport_kind::http;
        s.url       = parts[0];
    } else {
        return error::invalid("MCP server '" + s.name +
                              "': the transport must be stdio:COMMAND or an http:// or https:// URL (streamable HTTP)");
    }
    for (size_t i = 1; i < parts.size(); ++i) {
        const auto &p   = parts[i];
        const auto  k   = p.find('=');
        const auto  key = p.substr(0, k), value = k == std::string::npos ? std::string() : p.substr(k + 1);
        if (key == "allowed-tools" && !value.empty()) {
            std::stringstream names(value);
            for (std::string n; std::getline(names, n, ',');) {
                if (!n.empty()) {
                    s.allowed_tools.push_back(n);
                }
            }
        } else if (key == "timeout-ms") {
            char      *end = nullptr;
            const long ms  = std::strtol(value.c_str(), &end, 10);
            if (value.empty() || *end != '\0' || ms < 100 || ms > 600'000) {
                return error::invalid("MCP server '" + s.name + "': timeout-ms must be 100 to 600000");
            }
            s.timeout_ms = static_cast<int32_t>(ms);
        } else if (key.rfind("header.", 0) == 0) {
            if (s.transport != mcp_transport_kind::http) {
                return error::invalid("MCP server '" + s.name + "': header." + key.substr(7, 64) +
                                      " is for http:// and https:// servers only");
            }
            if (s.headers.size() == max_headers) {
                return error::invalid("MCP server '" + s.name + "': more than " + std::to_string(max_headers) +
                                      " headers");
            }
            auto h = parse_header(s.name, key.substr(7), value);
            if (!h) {
                return h.err();
            }
            for (const auto &[name, v] : s.headers) {
                if (lower(name) == lower(h->first)) {
                    return error::invalid("MCP server '" + s.name + "': header." + h->first + " is given twice");
                }
            }
            s.headers.push_back(std::move(*h));
        } else {
            return error::invalid("MCP server '" + s.name + "': unknown option '" + key.substr(0, 32) +
                                  "' (allowed-tools, timeout-ms" +
                                  (s.transport == mcp_transport_kind::http ? ", header.NAME" : "") + ")");
        }
    }
    return s;
}

struct mcp_client::impl {
    mcp_server_spec                spec;
    std::unique_ptr<mcp_transport> transport;

    std::mutex lifecycle; // one (re)connection and handshake at a time

    mutable std::mutex         mu; // below
    std::vector<mcp_tool_info> tools;

    ~impl() {
        try {
            if (transport) {
                transport->close();
            }
        } catch (...) { // NOLINT(bugprone-empty-catch): a destructor; nothing is left to undo
        }
    }

    std::optional<error> handshake() {
        auto init = transport->request("initialize",
                                       {{"protocolVersion", protocol_version},
                                        {"capabilities", json::object()},
                                        {"clientInfo", {{"name", "inferbox"}, {"version", "1"}}}},
                                       spec.timeout_ms);
        if (!init) {
            return init.err();
        }
        transport->notify({{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}});
        std::vector<mcp_tool_info> listed;
        json                       cursor = nullptr;
        for (int page = 0; page < 16; ++page) {
            json params = json::object();
            if (!cursor.is_null()) {
                params["cursor"] = cursor;
            }
            auto r = transport->request("tools/list", params, spec.timeout_ms);
            if (!r) {
                return r.err();
            }
            for (const auto &t : r->value("tools", json::array())) {
                if (!t.is_object() || !t.contains("name") || !t["name"].is_string() || listed.size() >= max_tools) {
                    continue;
                }
                mcp_tool_info info;
                info.name        = t["name"].get<std::string>();
                info.description = t.contains("description") && t["description"].is_string()
                                       ? t["description"].get<std::string>().substr(0, 2048)
                                       : std::string();
                json schema =
                    t.contains("inputSchema") && t["inputSchema"].is_object() ? t["inputSchema"] : json::object();
                schema.erase("$schema");
                info.input_schema  = schema.dump();
                const bool allowed = spec.allowed_tools.empty() ||
                                     std::find(spec.allowed_tools.begin(), spec.allowed_tools.end(), info.name) !=
                                         spec.allowed_tools.end();
                if (allowed) {
                    listed.push_back(std::move(info));
                }
            }
            cursor = r->contains("nextCursor") ? (*r)["nextCursor"] : json(nullptr);
            if (!cursor.is_string()) {
                break;
            }
        }
        std::lock_guard lock(mu);
        tools = std::move(listed);
        return std::nullopt;
    }

    // Connects again when the transport needs it (a process that exited, a session that expired),
    // and runs the handshake on the new connection.
    std::optional<error> ensure_ready() {
        std::lock_guard l(lifecycle);
        if (!transport->needs_reopen()) {
            return std::nullopt;
        }
        if (auto err = transport->reopen()) {
            return err;
        }
        return handshake();
    }

    // A request, once more on a new session when the server ended the one it was sent on.
    result<json> call(const std::string &method, const json &params) {
        if (auto err = ensure_ready()) {
            return *err;
        }
        auto r = transport->request(method, params, spec.timeout_ms);
        if (!r && r.err().code == session_expired) {
            if (auto err = ensure_ready()) {
                return *err;
            }
            r = transport->request(method, params, spec.timeout_ms);
        }
        return r;
    }
};

mcp_client::mcp_client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
mcp_client::~mcp_client() = default;

result<std::shared_ptr<mcp_client>> mcp_client::start(mcp_server_spec spec) {
    auto p  = std::make_unique<impl>();
    p->spec = std::move(spec);
    if (p->spec.transport == mcp_transport_kind::http) {
        p->transport = std::make_unique<http_transport>(p->spec);
    } else {
        p->transport = std::make_unique<stdio_transport>(p->spec);
    }
    if (auto err = p->transport->open()) {
        return *err;
    }
    if (auto err = p->handshake()) {
        return *err; // ~impl closes the transport
    }
    for (const auto &name : p->spec.allowed_tools) {
        if (std::none_of(p->tools.begin(), p->tools.end(), [&](const auto &t) { return t.name == name; })) {
            return error::invalid("MCP server '" + p->spec.name + "' has no tool '" + name + "' (allowed-tools)");
        }
    }
    return std::shared_ptr<mcp_client>(new mcp_client(std::move(p)));
}

const std::string &mcp_client::name() const {
    return impl_->spec.name;
}

std::vector<mcp_tool_info> mcp_client::tools() const {
    std::lock_guard lock(impl_->mu);
    return impl_->tools;
}

result<std::string> mcp_client::call_tool(const std::string &tool, const std::string &arguments_json) {
    json args = json::parse(arguments_json, nullptr, /*allow_exceptions=*/false);
    if (!args.is_object()) {
        return error::invalid("the arguments are not a JSON object");
    }
    auto r = impl_->call("tools/call", {{"name", tool}, {"arguments", std::move(args)}});
    if (!r) {
        return r.err();
    }
    std::string out;
    for (const auto &c : r->value("content", json::array())) {
        const std::string type = c.is_object() ? c.value("type", std::string()) : std::string();
        if (!out.empty()) {
            out += "\n";
        }
        if (type == "text" && c.contains("text") && c["text"].is_string()) {
            out += c["text"].get<std::string>();
        } else if (type == "resource" && c.contains("resource") && c["resource"].is_object() &&
                   c["resource"].contains("text") && c["resource"]["text"].is_string()) {
            out += c["resource"]["text"].get<std::string>();
        } else if (type == "resource_link") {
            out += "[resource " + c.value("uri", std::string()) + "]";
        } else {
            out +=
                "[" + (type.empty() ? std::string("content") : type) + " " + c.value("mimeType", std::string()) + "]";
        }
        if (out.size() > max_output_bytes) {
            break;
        }
    }
    if (out.empty() && r->contains("structuredContent")) {
        out = (*r)["structuredContent"].dump(-1, ' ', false, json::error_handler_t::replace);
    }
    if (out.size() > max_output_bytes) {
        out.resize(max_output_bytes);
        out += "\n[cut at " + std::to_string(max_output_bytes) + " bytes]";
    }
    if (r->value("isError", false)) {
        return mcp_error(out.empty() ? "the tool reported an error" : out);
    }
    return out;
}

namespace {

class mcp_tool final : public builtin_tool {
  public:
    mcp_tool(std::shared_ptr<mcp_client> client, mcp_tool_info info)
        : client_(std::move(client)), info_(std::move(info)) {}

    tool_function function() const override {
        return {info_.name,
                info_.description.empty() ? "A tool of the MCP server '" + client_->name() + "'" : info_.description,
                info_.input_schema};
    }
    std::string  kind() const override { return "mcp"; }
    std::string  server() const override { return client_->name(); }
    std::string  item_type() const override { return "mcp_call"; }
    tool_outcome run(const std::string &arguments_json) const override {
        auto r = client_->call_tool(info_.name, arguments_json);
        return r ? tool_outcome{std::move(*r), ""} : tool_outcome{"", r.err().message};
    }

  private:
    std::shared_ptr<mcp_client> client_;
    mcp_tool_info               info_;
};

} // namespace

std::shared_ptr<builtin_tool> make_mcp_tool(std::shared_ptr<mcp_client> client, mcp_tool_info tool) {
    return std::make_shared<mcp_tool>(std::move(client), std::move(tool));
}

} // namespace inferbox

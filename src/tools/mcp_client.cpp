#include "tools/mcp_client.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
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
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char **environ;

namespace inferbox {

using json  = nlohmann::json;
using clock = std::chrono::steady_clock;

namespace {

constexpr const char *protocol_version = "2025-06-18";
constexpr size_t      max_line_bytes   = size_t{8} << 20;  // one JSON-RPC message from the server
constexpr size_t      max_output_bytes = size_t{16} << 10; // what a call gives the model
constexpr size_t      max_tools        = 256;

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

} // namespace

result<mcp_server_spec> parse_mcp_server_spec(const std::string &text) {
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
        return error::invalid("expected NAME=stdio:COMMAND..., got '" + text.substr(0, 128) + "'");
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
    if (parts.empty() || parts[0].rfind("stdio:", 0) != 0) {
        return error::invalid("MCP server '" + s.name +
                              "': the transport must be stdio:COMMAND (streamable HTTP is not supported yet)");
    }
    std::stringstream words(parts[0].substr(6));
    for (std::string w; words >> w;) {
        s.command.push_back(w);
    }
    if (s.command.empty()) {
        return error::invalid("MCP server '" + s.name + "': stdio: needs a command");
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
        } else {
            return error::invalid("MCP server '" + s.name + "': unknown option '" + key.substr(0, 32) +
                                  "' (allowed-tools, timeout-ms)");
        }
    }
    return s;
}

struct mcp_client::impl {
    mcp_server_spec spec;

    std::mutex lifecycle; // one start or stop at a time

    mutable std::mutex                     mu; // below
    std::condition_variable                cv;
    pid_t                                  pid      = -1;
    int                                    to_child = -1, from_child = -1;
    bool                                   alive = false, stopping = false;
    int64_t                                next_id = 1;
    std::map<int64_t, std::optional<json>> pending;
    std::vector<mcp_tool_info>             tools;
    clock::time_point                      last_start{};

    std::mutex  write_mu;
    std::thread reader;

    ~impl() { stop(); }

    std::optional<error> spawn() {
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
        posix_spawnattr_setpgroup(&attr, 0); // its own group: stop() ends its children too
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
        std::vector<char *> argv;
        argv.reserve(spec.command.size() + 1);
        for (auto &a : spec.command) {
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
        close(sv[1]);
        if (rc != 0) {
            close(sv[0]);
            return mcp_error("cannot start '" + spec.command[0] + "': " + why);
        }
        {
            std::lock_guard lock(mu);
            pid        = child;
            to_child   = sv[0];
            from_child = sv[0];
            alive      = true;
            stopping   = false;
            last_start = clock::now();
        }
        reader = std::thread([this, fd = sv[0]] { read_loop(fd); });
        return std::nullopt;
    }

    void stop() {
        std::unique_lock lock(mu);
        if (pid < 0) {
            return;
        }
        stopping          = true;
        alive             = false;
        const int w       = to_child;
        to_child          = -1;
        const pid_t child = pid;
        pid               = -1;
        cv.notify_all();
        lock.unlock();
        {
            std::lock_guard wl(write_mu);
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
        if (reader.joinable()) {
            reader.join();
        }
        lock.lock();
        close(from_child);
        from_child = -1;
    }

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
                std::lock_guard lock(mu);
                if (stopping) {
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
            if (buf.size() > max_line_bytes) {
                spdlog::warn("MCP server '{}' sent a message over {} bytes; stopping it", spec.name, max_line_bytes);
                break;
            }
        }
        std::lock_guard lock(mu);
        alive = false;
        cv.notify_all();
    }

    void on_line(std::string_view line) {
        const json msg = json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!msg.is_object()) {
            return; // not JSON-RPC (a server's stray output): ignored
        }
        const bool has_method = msg.contains("method") && msg["method"].is_string();
        if (has_method && msg.contains("id")) {
            // A request from the server: we answer ping and support nothing else.
            json reply = {{"jsonrpc", "2.0"}, {"id", msg["id"]}};
            if (msg["method"] == "ping") {
                reply["result"] = json::object();
            } else {
                reply["error"] = {{"code", -32601}, {"message", "method not supported by this client"}};
            }
            send(reply);
            return;
        }
        if (has_method || !msg.contains("id") || !msg["id"].is_number_integer()) {
            return; // a notification (log messages, list changes, progress): read and dropped
        }
        std::lock_guard lock(mu);
        auto            it = pending.find(msg["id"].get<int64_t>());
        if (it != pending.end()) {
            it->second = msg;
            cv.notify_all();
        }
    }

    bool send(const json &msg) {
        const std::string line = msg.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
        std::lock_guard   lock(write_mu);
        int               fd = -1;
        {
            std::lock_guard l(mu);
            fd = to_child;
        }
        if (fd < 0) {
            return false;
        }
        // Never blocks for long: a server that stops reading its input (while we answer one of
        // its requests on the reader thread, say) must not hang the reader, or stop() behind it.
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

    result<json> request(const std::string &method, json params, int32_t timeout_ms) {
        int64_t id = 0;
        {
            std::lock_guard lock(mu);
            if (!alive) {
                return mcp_error("the MCP server '" + spec.name + "' is not running");
            }
            id          = next_id++;
            pending[id] = std::nullopt;
        }
        if (!send({{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}})) {
            std::lock_guard lock(mu);
            pending.erase(id);
            return mcp_error("the MCP server '" + spec.name + "' does not take input (it exited)");
        }
        std::unique_lock    lock(mu);
        const bool          answered = cv.wait_until(lock, clock::now() + std::chrono::milliseconds(timeout_ms),
                                                     [&] { return pending[id].has_value() || !alive; });
        std::optional<json> reply    = std::move(pending[id]);
        pending.erase(id);
        lock.unlock();
        if (!reply) {
            if (!answered) {
                send({{"jsonrpc", "2.0"},
                      {"method", "notifications/cancelled"},
                      {"params", {{"requestId", id}, {"reason", "timed out"}}}});
                return error{error_kind::timeout,
                             "the MCP server '" + spec.name + "' did not answer " + method + " within " +
                                 std::to_string(timeout_ms) + " ms",
                             "", "mcp_timeout"};
            }
            return mcp_error("the MCP server '" + spec.name + "' exited during " + method);
        }
        if (reply->contains("error")) {
            const auto &e = (*reply)["error"];
            return mcp_error("the MCP server '" + spec.name + "' answered " + method + " with an error: " +
                             (e.is_object() && e.contains("message") && e["message"].is_string()
                                  ? e["message"].get<std::string>().substr(0, 1024)
                                  : std::string("(no message)")));
        }
        return reply->contains("result") ? (*reply)["result"] : json::object();
    }

    std::optional<error> handshake() {
        auto init = request("initialize",
                            {{"protocolVersion", protocol_version},
                             {"capabilities", json::object()},
                             {"clientInfo", {{"name", "inferbox"}, {"version", "1"}}}},
                            spec.timeout_ms);
        if (!init) {
            return init.err();
        }
        send({{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}});
        std::vector<mcp_tool_info> listed;
        json                       cursor = nullptr;
        for (int page = 0; page < 16; ++page) {
            json params = json::object();
            if (!cursor.is_null()) {
                params["cursor"] = cursor;
            }
            auto r = request("tools/list", params, spec.timeout_ms);
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

    // Starts the server again if it is gone and the last start is 5 s old.
    std::optional<error> ensure_running() {
        std::lock_guard l(lifecycle);
        {
            std::lock_guard lock(mu);
            if (alive) {
                return std::nullopt;
            }
            if (clock::now() - last_start < std::chrono::seconds(5)) {
                return mcp_error("the MCP server '" + spec.name + "' exited; it is restarted at most every 5 s");
            }
        }
        stop();
        if (auto err = spawn()) {
            return err;
        }
        spdlog::warn("MCP server '{}' exited; started it again", spec.name);
        return handshake();
    }
};

mcp_client::mcp_client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
mcp_client::~mcp_client() = default;

result<std::shared_ptr<mcp_client>> mcp_client::start(mcp_server_spec spec) {
    auto p  = std::make_unique<impl>();
    p->spec = std::move(spec);
    if (auto err = p->spawn()) {
        return *err;
    }
    if (auto err = p->handshake()) {
        p->stop();
        return *err;
    }
    for (const auto &name : p->spec.allowed_tools) {
        if (std::none_of(p->tools.begin(), p->tools.end(), [&](const auto &t) { return t.name == name; })) {
            p->stop();
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
    if (auto err = impl_->ensure_running()) {
        return *err;
    }
    auto r = impl_->request("tools/call", {{"name", tool}, {"arguments", std::move(args)}}, impl_->spec.timeout_ms);
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

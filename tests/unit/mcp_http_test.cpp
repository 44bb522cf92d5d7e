// The MCP streamable HTTP transport (tools/mcp_client.h) and its HTTP pieces (tools/curl_http.h):
// the event-stream parser on bytes cut anywhere, and the client against a scripted HTTP server on
// a loopback port, for what the real server-everything never does on purpose (the integration
// test in agents.test.mjs calls it): a session that expires (404 → initialize again, the call
// retried once), an answer that never comes (cancelled at the timeout), an answer over the size
// bound, and the session's DELETE when the client goes.
#include "tools/curl_http.h"
#include "tools/mcp_client.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace inferbox {
namespace {

using json = nlohmann::json;

// --- the event-stream parser --------------------------------------------------------------------

std::vector<std::pair<std::string, std::string>> parse_in_pieces(const std::string &text, size_t piece) {
    sse_parser                                       p(1 << 20);
    std::vector<std::pair<std::string, std::string>> events;
    for (size_t i = 0; i < text.size(); i += piece) {
        EXPECT_TRUE(p.feed(std::string_view(text).substr(i, piece), [&](const std::string &e, const std::string &d) {
            events.emplace_back(e, d);
            return true;
        }));
    }
    return events;
}

TEST(sse_parser, EventsAreTheSameWhereverTheBytesAreCut) {
    const std::string text = ": keep-alive\r\n"
                             "event: message\r\n"
                             "id: 1\r\n"
                             "data: {\"a\":\r\n"
                             "data:1}\r\n"
                             "\r\n"
                             "retry: 10\n"
                             "\n" // no data: no event
                             "data: second\r"
                             "\r"
                             "event: custom\n"
                             "data: third\n"
                             "\n"
                             "data: unfinished"; // never dispatched: no blank line after it
    const std::vector<std::pair<std::string, std::string>> expected = {
        {"message", "{\"a\":\n1}"}, {"message", "second"}, {"custom", "third"}};
    for (size_t piece : {size_t{1}, size_t{2}, size_t{3}, size_t{7}, text.size()}) {
        EXPECT_EQ(parse_in_pieces(text, piece), expected) << "pieces of " << piece;
    }
}

TEST(sse_parser, ALineOrAnEventOverTheBoundStopsIt) {
    sse_parser line(16);
    EXPECT_FALSE(
        line.feed("data: " + std::string(32, 'x'), [](const std::string &, const std::string &) { return true; }));
    EXPECT_TRUE(line.too_long());
    sse_parser event(16);
    EXPECT_FALSE(event.feed("data: 0123456789\ndata: 0123456789\n",
                            [](const std::string &, const std::string &) { return true; }));
    EXPECT_TRUE(event.too_long());
    sse_parser stop(1024); // on_event's false stops it, not a bound
    EXPECT_FALSE(stop.feed("data: a\n\ndata: b\n\n", [](const std::string &, const std::string &) { return false; }));
    EXPECT_FALSE(stop.too_long());
}

// --- a scripted HTTP server ---------------------------------------------------------------------

struct seen_request { // NOLINT(bugprone-exception-escape): a record; copying it may throw bad_alloc only
    std::string                        method;
    std::map<std::string, std::string> headers; // names in lower case
    json                               body;    // null when there was none
};

// One connection per request (answers carry Connection: close), each on its own thread; the
// handler returns the whole raw response.
class scripted_server {
  public:
    using handler = std::function<std::string(const seen_request &)>;

    explicit scripted_server(handler h) : handler_(std::move(h)) {
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family      = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port        = 0;
        EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0);
        EXPECT_EQ(listen(fd_, 16), 0);
        socklen_t len = sizeof addr;
        getsockname(fd_, reinterpret_cast<sockaddr *>(&addr), &len);
        port_     = ntohs(addr.sin_port);
        acceptor_ = std::thread([this] { accept_loop(); });
    }
    ~scripted_server() {
        stop_ = true;
        shutdown(fd_, SHUT_RDWR);
        close(fd_);
        acceptor_.join();
        for (auto &t : connections_) {
            t.join();
        }
    }
    scripted_server(const scripted_server &)            = delete;
    scripted_server &operator=(const scripted_server &) = delete;

    std::string               url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/mcp"; }
    std::vector<seen_request> seen() const {
        std::lock_guard lock(mu_);
        return seen_;
    }
    bool stopping() const { return stop_; }

  private:
    void accept_loop() {
        for (;;) {
            const int c = accept(fd_, nullptr, nullptr);
            if (c < 0) {
                return;
            }
            if (stop_) {
                close(c);
                return;
            }
            connections_.emplace_back([this, c] { serve(c); });
        }
    }

    void serve(int c) {
        std::string in;
        char        buf[4096];
        size_t      head_end = std::string::npos;
        while ((head_end = in.find("\r\n\r\n")) == std::string::npos) {
            const ssize_t n = recv(c, buf, sizeof buf, 0);
            if (n <= 0) {
                close(c);
                return;
            }
            in.append(buf, static_cast<size_t>(n));
        }
        seen_request r;
        r.method      = in.substr(0, in.find(' '));
        size_t length = 0;
        for (size_t pos = in.find("\r\n") + 2; pos < head_end;) {
            const size_t eol   = in.find("\r\n", pos);
            const auto   line  = in.substr(pos, eol - pos);
            const auto   colon = line.find(':');
            std::string  name  = line.substr(0, colon);
            std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
            r.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
            pos             = eol + 2;
        }
        if (r.headers.count("content-length") != 0) {
            length = std::stoul(r.headers["content-length"]);
        }
        while (in.size() < head_end + 4 + length) {
            const ssize_t n = recv(c, buf, sizeof buf, 0);
            if (n <= 0) {
                break;
            }
            in.append(buf, static_cast<size_t>(n));
        }
        r.body = length == 0 ? json(nullptr) : json::parse(in.substr(head_end + 4, length), nullptr, false);
        {
            std::lock_guard lock(mu_);
            seen_.push_back(r);
        }
        const std::string out = handler_(r);
        for (size_t off = 0; off < out.size();) {
            const ssize_t n = send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
            if (n <= 0) {
                break;
            }
            off += static_cast<size_t>(n);
        }
        close(c);
    }

    handler                   handler_;
    int                       fd_   = -1;
    uint16_t                  port_ = 0;
    std::atomic<bool>         stop_{false};
    std::thread               acceptor_;
    std::vector<std::thread>  connections_; // touched by the acceptor only, joined after it
    mutable std::mutex        mu_;
    std::vector<seen_request> seen_;
};

std::string respond(int status, const std::string &content_type, const std::string &body,
                    const std::string &extra_headers = "") {
    return "HTTP/1.1 " + std::to_string(status) + " X\r\nConnection: close\r\n" +
           (content_type.empty() ? std::string() : "Content-Type: " + content_type + "\r\n") + extra_headers +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

json rpc_answer(const seen_request &r, json result) {
    return {{"jsonrpc", "2.0"}, {"id", r.body["id"]}, {"result", std::move(result)}};
}

const json echo_tool = {
    {"name", "echo"},
    {"description", "Echoes back the input"},
    {"inputSchema",
     {{"type", "object"}, {"properties", {{"message", {{"type", "string"}}}}}, {"required", {"message"}}}}};

// An MCP server on the scripted HTTP server: sessions s1, s2, ...; tools/list answered in an event
// stream (after a notification), tools/call in a JSON body; `expire_first_call` answers the first
// tools/call with 404, as a server that dropped the session does.
struct fake_mcp {
    std::mutex mu;
    int        sessions          = 0;
    bool       expire_first_call = false, expired_once = false;

    std::string answer(const seen_request &r) {
        std::lock_guard lock(mu);
        if (r.method == "DELETE") {
            return respond(200, "", "");
        }
        const std::string method  = r.body.value("method", "");
        const auto        sid     = r.headers.find("mcp-session-id");
        const std::string current = "s" + std::to_string(sessions);
        if (method == "initialize") {
            ++sessions;
            return respond(200, "application/json",
                           rpc_answer(r, {{"protocolVersion", "2025-03-26"},
                                          {"capabilities", {{"tools", json::object()}}},
                                          {"serverInfo", {{"name", "fake"}, {"version", "1"}}}})
                               .dump(),
                           "Mcp-Session-Id: s" + std::to_string(sessions) + "\r\n");
        }
        if (sid == r.headers.end() || sid->second != current) {
            return respond(400, "application/json", R"({"error":{"code":-32000,"message":"No valid session ID"}})");
        }
        if (!r.body.contains("id")) {
            return respond(202, "", ""); // a notification
        }
        if (method == "tools/list") {
            const std::string note = json{{"jsonrpc", "2.0"},
                                          {"method", "notifications/message"},
                                          {"params", {{"level", "info"}, {"data", "listing"}}}}
                                         .dump();
            return respond(200, "text/event-stream",
                           "event: message\ndata: " + note + "\n\nid: 7\ndata: " +
                               rpc_answer(r, {{"tools", json::array({echo_tool})}}).dump() + "\n\n");
        }
        if (method == "tools/call") {
            if (expire_first_call && !expired_once) {
                expired_once = true;
                return respond(404, "application/json", R"({"error":{"code":-32001,"message":"Session not found"}})");
            }
            const std::string text = "Echo: " + r.body["params"]["arguments"].value("message", "");
            return respond(200, "application/json",
                           rpc_answer(r, {{"content", json::array({{{"type", "text"}, {"text", text}}})}}).dump());
        }
        return respond(
            200, "application/json",
            json{{"jsonrpc", "2.0"}, {"id", r.body["id"]}, {"error", {{"code", -32601}, {"message", "no"}}}}.dump());
    }
};

mcp_server_spec http_spec(const std::string &url, const std::string &options = "") {
    auto s = parse_mcp_server_spec("fake=" + url + options);
    EXPECT_TRUE(s) << s.err().message;
    return *s;
}

TEST(mcp_http, AnExpiredSessionIsInitializedAgainAndTheCallRetriedOnce) {
    ::setenv("INFERBOX_TEST_MCP_TOKEN", "Bearer t0ken", 1);
    fake_mcp fake;
    fake.expire_first_call = true;
    std::vector<seen_request> seen;
    {
        scripted_server server([&](const seen_request &r) { return fake.answer(r); });
        {
            auto c = mcp_client::start(http_spec(server.url(), ";header.Authorization=ENV:INFERBOX_TEST_MCP_TOKEN"));
            ASSERT_TRUE(c) << c.err().message;
            ASSERT_EQ((*c)->tools().size(), 1u);
            EXPECT_EQ((*c)->tools()[0].name, "echo");
            auto out = (*c)->call_tool("echo", R"({"message": "hi"})");
            ASSERT_TRUE(out) << out.err().message;
            EXPECT_EQ(*out, "Echo: hi");
        } // the client goes: DELETE of its session
        seen = server.seen();
    }
    std::vector<std::string> trail;
    for (const auto &r : seen) {
        trail.push_back(r.method == "DELETE" ? "DELETE " + r.headers.at("mcp-session-id")
                                             : r.body.value("method", "") + " " +
                                                   (r.headers.count("mcp-session-id") ? r.headers.at("mcp-session-id")
                                                                                      : std::string("-")));
        EXPECT_EQ(r.headers.at("authorization"), "Bearer t0ken"); // the operator's header, every time
        if (r.method == "POST") {
            EXPECT_EQ(r.headers.at("accept"), "application/json, text/event-stream");
            EXPECT_EQ(r.headers.at("content-type"), "application/json");
        }
    }
    EXPECT_EQ(trail, (std::vector<std::string>{"initialize -", "notifications/initialized s1", "tools/list s1",
                                               "tools/call s1", "initialize -", "notifications/initialized s2",
                                               "tools/list s2", "tools/call s2", "DELETE s2"}));
    // The version initialize agreed on goes with every later request.
    EXPECT_EQ(seen[2].headers.at("mcp-protocol-version"), "2025-03-26");
    EXPECT_EQ(seen[0].headers.count("mcp-protocol-version"), 0u);
}

TEST(mcp_http, ACallPastItsTimeoutIsCancelledAndFailsInTime) {
    fake_mcp        fake;
    scripted_server server([&](const seen_request &r) {
        if (r.body.is_object() && r.body.value("method", "") == "tools/call") {
            // Never answers in time (but lets the test end).
            for (int i = 0; i < 300 && !server.stopping(); ++i) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
            return respond(500, "", "");
        }
        return fake.answer(r);
    });
    auto            c = mcp_client::start(http_spec(server.url(), ";timeout-ms=300"));
    ASSERT_TRUE(c) << c.err().message;
    const auto started = std::chrono::steady_clock::now();
    auto       out     = (*c)->call_tool("echo", R"({"message": "hi"})");
    ASSERT_FALSE(out);
    EXPECT_EQ(out.err().kind, error_kind::timeout);
    EXPECT_NE(out.err().message.find("did not answer tools/call within 300 ms"), std::string::npos)
        << out.err().message;
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(3));
    const auto seen      = server.seen();
    const bool cancelled = std::any_of(seen.begin(), seen.end(), [](const seen_request &r) {
        return r.body.is_object() && r.body.value("method", "") == "notifications/cancelled" &&
               r.body["params"]["reason"] == "timed out";
    });
    EXPECT_TRUE(cancelled);
}

TEST(mcp_http, AnAnswerOverTheBoundIsRefusedNamingIt) {
    fake_mcp        fake;
    scripted_server server([&](const seen_request &r) {
        if (r.body.is_object() && r.body.value("method", "") == "tools/call") {
            return respond(200, "application/json", std::string((size_t{8} << 20) + 16, ' '));
        }
        return fake.answer(r);
    });
    auto            c = mcp_client::start(http_spec(server.url()));
    ASSERT_TRUE(c) << c.err().message;
    auto out = (*c)->call_tool("echo", R"({"message": "hi"})");
    ASSERT_FALSE(out);
    EXPECT_NE(out.err().message.find("answered with more than 8388608 bytes"), std::string::npos) << out.err().message;
}

TEST(mcp_http, AServerThatIsNotThereIsAnErrorNamingTheUrl) {
    int         fd = socket(AF_INET, SOCK_STREAM, 0); // a port nobody listens on: bound, never listening
    sockaddr_in addr{};
    addr.sin_family      = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0);
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len);
    const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/mcp";
    auto              c   = mcp_client::start(http_spec(url));
    close(fd);
    ASSERT_FALSE(c);
    EXPECT_NE(c.err().message.find("the MCP server 'fake' failed during initialize: cannot reach " + url),
              std::string::npos)
        << c.err().message;
}

TEST(mcp_http, AnHttpErrorIsReportedWithTheServersMessage) {
    scripted_server server([](const seen_request &) {
        return respond(401, "application/json", R"({"error":{"code":-32000,"message":"a token is needed"}})");
    });
    auto            c = mcp_client::start(http_spec(server.url()));
    ASSERT_FALSE(c);
    EXPECT_NE(c.err().message.find("answered initialize with HTTP 401: a token is needed"), std::string::npos)
        << c.err().message;
}

} // namespace
} // namespace inferbox

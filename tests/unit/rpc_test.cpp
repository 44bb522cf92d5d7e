// The RPC client's own parts (engine/rpc.h), no worker needed: the endpoint list's validation
// table, and the start-up probe against fake workers on loopback: one that never answers, one
// that hangs up, one that answers with another protocol version, one that speaks protocol 7,
// and a port nobody listens on.

#include "engine/rpc.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

using namespace inferbox;

TEST(rpc, parses_endpoint_lists) {
    auto one = parse_rpc_endpoints("10.0.0.2:50052");
    ASSERT_TRUE(one) << one.err().message;
    ASSERT_EQ(one->size(), 1U);
    EXPECT_EQ((*one)[0].host, "10.0.0.2");
    EXPECT_EQ((*one)[0].port, 50052);
    EXPECT_EQ((*one)[0].text(), "10.0.0.2:50052");

    auto two = parse_rpc_endpoints("worker-0.rpc.default.svc:50052,worker_1:1");
    ASSERT_TRUE(two) << two.err().message;
    ASSERT_EQ(two->size(), 2U);
    EXPECT_EQ((*two)[1].host, "worker_1");
    EXPECT_EQ((*two)[1].port, 1);
}

TEST(rpc, refuses_bad_endpoint_lists_naming_the_entry) {
    const std::pair<const char *, const char *> cases[] = {
        {"", "--rpc is empty"},
        {"a:1,", "empty entry"},
        {",a:1", "empty entry"},
        {"host", "'host' has no port"},
        {"host:", "port must be a number from 1 to 65535"},
        {"host:0", "port must be a number from 1 to 65535"},
        {"host:65536", "port must be a number from 1 to 65535"},
        {"host:12x", "port must be a number from 1 to 65535"},
        {"host:-1", "port must be a number from 1 to 65535"},
        {":50052", "the host must be"},
        {"[::1]:50052", "IPv6"},
        {"fe80::1:50052", "IPv6"},
        {"a b:1", "the host must be"},
        {"a:1,a:1", "lists a:1 twice"},
    };
    for (const auto &[in, want] : cases) {
        auto r = parse_rpc_endpoints(in);
        ASSERT_FALSE(r) << in;
        EXPECT_EQ(r.err().param, "rpc") << in;
        EXPECT_EQ(r.err().code, "invalid_rpc_endpoint") << in;
        EXPECT_NE(r.err().message.find(want), std::string::npos) << in << " -> " << r.err().message;
    }
    std::string many;
    for (int i = 0; i < 17; ++i) {
        many += (i ? "," : "") + std::string("w") + std::to_string(i) + ":50052";
    }
    auto r = parse_rpc_endpoints(many);
    ASSERT_FALSE(r);
    EXPECT_NE(r.err().message.find("more than 16 workers"), std::string::npos) << r.err().message;
    EXPECT_TRUE(parse_rpc_endpoints(many.substr(0, many.rfind(','))));
    EXPECT_FALSE(parse_rpc_endpoints(std::string(254, 'a') + ":1"));
}

namespace {

// A loopback listener whose one connection is handled by `serve` on a thread.
class fake_worker {
  public:
    explicit fake_worker(std::function<void(int)> serve) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family      = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len     = sizeof(a);
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr *>(&a), len) != 0 || ::listen(fd_, 4) != 0 ||
            ::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
            throw std::runtime_error("fake worker: cannot listen");
        }
        port_   = ntohs(a.sin_port);
        thread_ = std::thread([this, serve = std::move(serve)] {
            const int c = ::accept(fd_, nullptr, nullptr);
            if (c >= 0) {
                serve(c);
                ::close(c);
            }
        });
    }
    ~fake_worker() {
        ::shutdown(fd_, SHUT_RDWR);
        ::close(fd_);
        thread_.join();
    }
    fake_worker(const fake_worker &)            = delete;
    fake_worker &operator=(const fake_worker &) = delete;
    rpc_endpoint endpoint() const { return {"127.0.0.1", port_}; }

  private:
    int         fd_   = -1;
    uint16_t    port_ = 0;
    std::thread thread_;
};

// Reads the 33-byte HELLO (command 14, size 24, 24 capability bytes) and answers with `version`.
void answer_hello(int c, std::array<uint8_t, 3> version, uint64_t reply_size = 28) {
    std::array<uint8_t, 33> req{};
    size_t                  got = 0;
    while (got < req.size()) {
        const ssize_t n = ::recv(c, req.data() + got, req.size() - got, 0);
        if (n <= 0) {
            return;
        }
        got += size_t(n);
    }
    uint64_t size = 0;
    std::memcpy(&size, req.data() + 1, sizeof(size));
    if (req[0] != 14 || size != 24) {
        return;
    }
    std::array<uint8_t, 8 + 28> rsp{};
    std::memcpy(rsp.data(), &reply_size, sizeof(reply_size));
    rsp[8]  = version[0];
    rsp[9]  = version[1];
    rsp[10] = version[2];
    ::send(c, rsp.data(), rsp.size(), MSG_NOSIGNAL);
}

using std::chrono::milliseconds;

} // namespace

TEST(rpc, probe_accepts_a_protocol_7_worker) {
    fake_worker w([](int c) { answer_hello(c, {7, 0, 0}); });
    auto        v = probe_rpc_worker(w.endpoint(), milliseconds(2000));
    ASSERT_TRUE(v) << v.err().message;
    EXPECT_EQ(v->major, 7);
}

TEST(rpc, probe_times_out_on_a_worker_that_never_answers) {
    fake_worker w([](int c) {
        std::array<char, 64> buf{};
        ::recv(c, buf.data(), buf.size(), 0); // takes the HELLO, answers nothing
        std::this_thread::sleep_for(std::chrono::milliseconds(600));
    });
    const auto  t0 = std::chrono::steady_clock::now();
    auto        v  = probe_rpc_worker(w.endpoint(), milliseconds(300));
    const auto  ms = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_FALSE(v);
    EXPECT_EQ(v.err().code, "rpc_worker_unreachable");
    EXPECT_NE(v.err().message.find("did not answer the handshake within 300 ms"), std::string::npos) << v.err().message;
    EXPECT_NE(v.err().message.find(w.endpoint().text()), std::string::npos);
    EXPECT_GE(ms, 250);
    EXPECT_LT(ms, 2000);
}

TEST(rpc, probe_reports_a_hang_up_and_a_foreign_service) {
    {
        fake_worker w([](int) {}); // accepts and closes
        auto        v = probe_rpc_worker(w.endpoint(), milliseconds(2000));
        ASSERT_FALSE(v);
        EXPECT_TRUE(v.err().message.find("closed the connection") != std::string::npos ||
                    v.err().message.find("Connection reset") != std::string::npos)
            << v.err().message;
    }
    {
        fake_worker w([](int c) { answer_hello(c, {7, 0, 0}, 12); });
        auto        v = probe_rpc_worker(w.endpoint(), milliseconds(2000));
        ASSERT_FALSE(v);
        EXPECT_NE(v.err().message.find("answered the handshake with 12 bytes instead of 28"), std::string::npos)
            << v.err().message;
    }
}

TEST(rpc, probe_refuses_another_protocol_version) {
    if (!rpc_supported()) {
        GTEST_SKIP() << "this build has no RPC backend, so it knows no protocol version to compare";
    }
    fake_worker w([](int c) { answer_hello(c, {6, 1, 0}); });
    auto        v = probe_rpc_worker(w.endpoint(), milliseconds(2000));
    ASSERT_FALSE(v);
    EXPECT_NE(v.err().message.find("speaks RPC protocol 6.1.0; this build speaks 7.0"), std::string::npos)
        << v.err().message;
}

TEST(rpc, probe_reports_a_refused_connection_and_an_unknown_host) {
    uint16_t port = 0;
    {
        fake_worker w([](int) {});
        port = w.endpoint().port;
        // Connect once so the fake's accept returns and it can close.
        probe_rpc_worker(w.endpoint(), milliseconds(500));
    }
    auto v = probe_rpc_worker({"127.0.0.1", port}, milliseconds(2000));
    ASSERT_FALSE(v);
    EXPECT_NE(v.err().message.find("cannot be reached: Connection refused"), std::string::npos) << v.err().message;

    auto u = probe_rpc_worker({"no-such-host.invalid", 50052}, milliseconds(2000));
    ASSERT_FALSE(u);
    EXPECT_NE(u.err().message.find("cannot be resolved"), std::string::npos) << u.err().message;
}

// --mcp-server's spec (tools/mcp_client.h): the command is argv split on blanks (no shell), options
// after ';', and every mistake is refused naming the server and the problem.
#include "tools/mcp_client.h"

#include <gtest/gtest.h>

namespace inferbox {
namespace {

TEST(mcp_server_spec, CommandAndOptions) {
    auto s =
        parse_mcp_server_spec("everything=stdio:node /srv/index.js stdio;allowed-tools=echo,get-sum;timeout-ms=1500");
    ASSERT_TRUE(s) << s.err().message;
    EXPECT_EQ(s->name, "everything");
    EXPECT_EQ(s->command, (std::vector<std::string>{"node", "/srv/index.js", "stdio"}));
    EXPECT_EQ(s->allowed_tools, (std::vector<std::string>{"echo", "get-sum"}));
    EXPECT_EQ(s->timeout_ms, 1500);
    auto plain = parse_mcp_server_spec("fs=stdio:mcp-server-filesystem /data");
    ASSERT_TRUE(plain);
    EXPECT_TRUE(plain->allowed_tools.empty());
    EXPECT_EQ(plain->timeout_ms, 10000);
}

TEST(mcp_server_spec, MistakesAreNamed) {
    const std::pair<const char *, const char *> cases[] = {
        {"everything", "expected NAME=stdio:COMMAND"},
        {"bad name=stdio:x", "MCP server name 'bad name'"},
        {"x=http://127.0.0.1/mcp", "the transport must be stdio:COMMAND"},
        {"x=stdio:   ", "stdio: needs a command"},
        {"x=stdio:node;timeout-ms=5", "timeout-ms must be 100 to 600000"},
        {"x=stdio:node;timeout-ms=abc", "timeout-ms must be 100 to 600000"},
        {"x=stdio:node;colour=red", "unknown option 'colour'"},
    };
    for (const auto &[text, why] : cases) {
        auto s = parse_mcp_server_spec(text);
        ASSERT_FALSE(s) << text;
        EXPECT_NE(s.err().message.find(why), std::string::npos) << text << ": " << s.err().message;
    }
}

TEST(mcp_client, AProgramThatCannotStartIsAnErrorNamingIt) {
    auto s = parse_mcp_server_spec("x=stdio:/nonexistent/mcp-server");
    ASSERT_TRUE(s);
    auto c = mcp_client::start(*s);
    ASSERT_FALSE(c);
    EXPECT_NE(c.err().message.find("cannot start '/nonexistent/mcp-server'"), std::string::npos) << c.err().message;
}

TEST(mcp_client, AProgramThatNeverAnswersFailsTheHandshakeInTime) {
    auto s = parse_mcp_server_spec("mute=stdio:sleep 30;timeout-ms=300");
    ASSERT_TRUE(s);
    const auto started = std::chrono::steady_clock::now();
    auto       c       = mcp_client::start(*s);
    ASSERT_FALSE(c);
    EXPECT_NE(c.err().message.find("did not answer initialize within 300 ms"), std::string::npos) << c.err().message;
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10)); // stopped, not waited for
}

TEST(mcp_client, AProgramThatIsNotAnMcpServerIsRefused) {
    // `cat` sends our initialize request back: we refuse it as a request we do not support, and
    // cat sends that refusal back too, which is then the (failed) answer to initialize.
    auto s = parse_mcp_server_spec("cat=stdio:cat;timeout-ms=2000");
    ASSERT_TRUE(s);
    auto c = mcp_client::start(*s);
    ASSERT_FALSE(c);
    EXPECT_NE(c.err().message.find("the MCP server 'cat' answered initialize with an error"), std::string::npos)
        << c.err().message;
}

TEST(mcp_client, AServerThatExitsAtOnceIsReportedNotWaitedFor) {
    auto s = parse_mcp_server_spec("t=stdio:true;timeout-ms=5000");
    ASSERT_TRUE(s);
    const auto started = std::chrono::steady_clock::now();
    auto       c       = mcp_client::start(*s);
    ASSERT_FALSE(c);
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(4)) << c.err().message;
}

} // namespace
} // namespace inferbox

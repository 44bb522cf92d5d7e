// --mcp-server's spec (tools/mcp_client.h): the command is argv split on blanks (no shell), or the
// endpoint URL of a streamable HTTP server with headers whose values come from the environment;
// options after ';', and every mistake is refused naming the server and the problem.
#include "tools/mcp_client.h"

#include <gtest/gtest.h>

#include <cstdlib>

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
        {"everything", "expected NAME=stdio:COMMAND... or NAME=http://HOST:PORT/PATH"},
        {"bad name=stdio:x", "MCP server name 'bad name'"},
        {"x=ftp://127.0.0.1/mcp", "the transport must be stdio:COMMAND or an http:// or https:// URL"},
        {"x=/srv/mcp", "the transport must be stdio:COMMAND or an http:// or https:// URL"},
        {"x=stdio:   ", "stdio: needs a command"},
        {"x=stdio:node;timeout-ms=5", "timeout-ms must be 100 to 600000"},
        {"x=stdio:node;timeout-ms=abc", "timeout-ms must be 100 to 600000"},
        {"x=stdio:node;colour=red", "unknown option 'colour' (allowed-tools, timeout-ms)"},
        {"x=stdio:node;header.Authorization=ENV:HOME", "header.Authorization is for http:// and https:// servers only"},
    };
    for (const auto &[text, why] : cases) {
        auto s = parse_mcp_server_spec(text);
        ASSERT_FALSE(s) << text;
        EXPECT_NE(s.err().message.find(why), std::string::npos) << text << ": " << s.err().message;
    }
}

TEST(mcp_server_spec, HttpUrlOptionsAndHeadersFromTheEnvironment) {
    ::setenv("INFERBOX_TEST_MCP_KEY", "Bearer abc", 1);
    ::setenv("INFERBOX_TEST_MCP_TENANT", "t-1", 1);
    auto s = parse_mcp_server_spec(
        "remote=https://mcp.example.com:8443/v1/mcp?x=1;allowed-tools=echo;timeout-ms=2500;"
        "header.Authorization=ENV:INFERBOX_TEST_MCP_KEY;header.X-Tenant=ENV:INFERBOX_TEST_MCP_TENANT");
    ASSERT_TRUE(s) << s.err().message;
    EXPECT_EQ(s->name, "remote");
    EXPECT_EQ(s->transport, mcp_transport_kind::http);
    EXPECT_EQ(s->url, "https://mcp.example.com:8443/v1/mcp?x=1");
    EXPECT_TRUE(s->command.empty());
    EXPECT_EQ(s->allowed_tools, (std::vector<std::string>{"echo"}));
    EXPECT_EQ(s->timeout_ms, 2500);
    using header = std::pair<std::string, std::string>;
    EXPECT_EQ(s->headers, (std::vector<header>{{"Authorization", "Bearer abc"}, {"X-Tenant", "t-1"}}));
    auto plain = parse_mcp_server_spec("local=http://127.0.0.1:3001/mcp");
    ASSERT_TRUE(plain) << plain.err().message;
    EXPECT_EQ(plain->transport, mcp_transport_kind::http);
    EXPECT_EQ(plain->url, "http://127.0.0.1:3001/mcp");
    EXPECT_TRUE(plain->headers.empty());
    EXPECT_EQ(plain->timeout_ms, 10000);
    auto stdio = parse_mcp_server_spec("s=stdio:node x.js");
    ASSERT_TRUE(stdio);
    EXPECT_EQ(stdio->transport, mcp_transport_kind::stdio);
}

TEST(mcp_server_spec, HttpMistakesAreNamed) {
    ::setenv("INFERBOX_TEST_MCP_KEY", "Bearer abc", 1);
    ::setenv("INFERBOX_TEST_MCP_NEWLINE", "a\r\nInjected: yes", 1);
    ::unsetenv("INFERBOX_TEST_MCP_UNSET");
    std::string many = "x=http://h/mcp";
    for (int i = 0; i < 17; ++i) {
        many += ";header.X-H" + std::to_string(i) + "=ENV:INFERBOX_TEST_MCP_KEY";
    }
    const std::pair<std::string, const char *> cases[] = {
        {"x=http://", "the URL names no host"},
        {"x=http://:80/mcp", "the URL names no host"},
        {"x=http://user:secret@h/mcp", "the URL holds credentials: send them in a header"},
        {"x=http://h/a b", "the URL has a blank or a control character"},
        {"x=http://h/" + std::string(2100, 'a'), "the URL is longer than 2048 bytes"},
        {"x=http://h/mcp;header.Authorization=Bearer abc", "header.Authorization: the value must be ENV:VARIABLE"},
        {"x=http://h/mcp;header.Authorization=ENV:INFERBOX_TEST_MCP_UNSET",
         "the environment variable INFERBOX_TEST_MCP_UNSET is not set"},
        {"x=http://h/mcp;header.Authorization=ENV:1BAD", "'1BAD' is not an environment variable's name"},
        {"x=http://h/mcp;header.X=ENV:INFERBOX_TEST_MCP_NEWLINE",
         "the value of INFERBOX_TEST_MCP_NEWLINE holds a line break"},
        {"x=http://h/mcp;header.Mcp-Session-Id=ENV:INFERBOX_TEST_MCP_KEY", "the transport sets this header itself"},
        {"x=http://h/mcp;header.accept=ENV:INFERBOX_TEST_MCP_KEY", "the transport sets this header itself"},
        {"x=http://h/mcp;header.Bad Name=ENV:INFERBOX_TEST_MCP_KEY", "a header name is letters, digits"},
        {"x=http://h/mcp;header.A=ENV:INFERBOX_TEST_MCP_KEY;header.a=ENV:INFERBOX_TEST_MCP_KEY",
         "header.a is given twice"},
        {many, "more than 16 headers"},
        {"x=http://h/mcp;colour=red", "unknown option 'colour' (allowed-tools, timeout-ms, header.NAME)"},
        {"x=http://h/mcp;timeout-ms=99", "timeout-ms must be 100 to 600000"},
    };
    for (const auto &[text, why] : cases) {
        auto s = parse_mcp_server_spec(text);
        ASSERT_FALSE(s) << text.substr(0, 200);
        EXPECT_NE(s.err().message.find(why), std::string::npos) << text.substr(0, 200) << ": " << s.err().message;
        EXPECT_EQ(s.err().message.find("Bearer abc"), std::string::npos) << "a header's value is never shown";
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

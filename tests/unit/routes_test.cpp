// The route table: one row per path and method, the docs' endpoint list rendered from it, and the
// body limit it gives each request.
#include "api/routes.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

using namespace inferbox;

#ifndef INFERBOX_SOURCE_DIR
#error "INFERBOX_SOURCE_DIR must name the repository root"
#endif

TEST(routes, one_row_per_path_and_method_each_with_a_handler) {
    std::set<std::pair<std::string, int>> seen;
    for (const auto &r : api_router::routes()) {
        EXPECT_TRUE(seen.emplace(r.path, static_cast<int>(r.verb)).second) << "duplicate row: " << r.path;
        EXPECT_NE(r.handler, nullptr) << r.path;
        EXPECT_NE(std::string(r.summary), "") << r.path;
        EXPECT_EQ(r.path[0], '/') << r.path;
    }
    // The probes and the console's page and files are open (the page asks for a key and sends it
    // on its API calls); everything else needs a key when keys are on.
    for (const auto &r : api_router::routes()) {
        const std::string p = r.path;
        EXPECT_EQ(r.access == route_access::open,
                  p.rfind("/v1/health/", 0) == 0 || p == "/health" || p == "/" || p == "/assets/{file}")
            << p;
    }
}

TEST(routes, docs_api_md_lists_the_table) {
    std::ifstream     in(std::string(INFERBOX_SOURCE_DIR) + "/docs/api.md");
    std::stringstream doc;
    doc << in.rdbuf();
    const std::string text  = doc.str();
    const std::string begin = "<!-- routes:begin (generated from api_router::routes(); a unit test checks it) -->\n";
    const std::string end   = "<!-- routes:end -->";
    const auto        b     = text.find(begin);
    const auto        e     = text.find(end);
    ASSERT_NE(b, std::string::npos) << "docs/api.md has no routes:begin marker";
    ASSERT_NE(e, std::string::npos);
    EXPECT_EQ(text.substr(b + begin.size(), e - b - begin.size()), api_router::routes_markdown())
        << "docs/api.md's endpoint list differs from the route table; paste this:\n"
        << api_router::routes_markdown();
}

TEST(routes, body_limits_come_from_the_table) {
    // Routes without a limit of their own get the server's (the upload route: files_api_test.cpp).
    EXPECT_EQ(api_router::body_limit_for("/v1/chat/completions", http::verb::post, 1234), 1234u);
    EXPECT_EQ(api_router::body_limit_for("/v1/models/x?y=1", http::verb::get, 99), 99u);
    EXPECT_EQ(api_router::body_limit_for("/nowhere", http::verb::post, 7), 7u);
}

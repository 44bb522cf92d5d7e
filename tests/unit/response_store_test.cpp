// Stored Responses: what is put comes back to its owner only, deletes are per owner, and the size
// bound drops the oldest first.
#include "api/response_store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

using namespace inferbox;
using json = nlohmann::json;

namespace {

class ResponseStore : public ::testing::Test { // NOLINT(readability-identifier-naming)
  protected:
    void SetUp() override {
        dir_ =
            std::filesystem::temp_directory_path() / ("inferbox-store-test-" + std::to_string(std::random_device{}()));
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    std::unique_ptr<response_store> open(response_store_limits limits = {}) {
        auto s = response_store::open(dir_ / "sub" / "responses.sqlite3", limits);
        EXPECT_TRUE(s.ok()) << s.err().message;
        return s.ok() ? std::move(*s) : nullptr;
    }
    static json response(const std::string &id, size_t pad = 0) {
        return {{"id", id},
                {"object", "response"},
                {"output", json::array({{{"type", "message"}, {"text", std::string(pad, 'x')}}})}};
    }

    std::filesystem::path dir_;
};

} // namespace

TEST_F(ResponseStore, round_trip_per_owner_and_across_reopening) {
    {
        auto s = open();
        ASSERT_TRUE(s);
        ASSERT_FALSE(s->put("alice", response("resp_1"), json::array({{{"type", "message"}, {"id", "msg_1"}}})));
        auto got = s->get("alice", "resp_1");
        ASSERT_TRUE(got);
        EXPECT_EQ(got->response, response("resp_1"));
        EXPECT_EQ(got->input_items[0]["id"], "msg_1");
        EXPECT_FALSE(s->get("bob", "resp_1")); // another key never sees it
        EXPECT_FALSE(s->remove("bob", "resp_1"));
        EXPECT_FALSE(s->get("alice", "resp_2"));
    }
    auto again = open(); // survives a restart
    ASSERT_TRUE(again->get("alice", "resp_1"));
    EXPECT_TRUE(again->remove("alice", "resp_1"));
    EXPECT_FALSE(again->get("alice", "resp_1"));
    EXPECT_FALSE(again->remove("alice", "resp_1"));
}

TEST_F(ResponseStore, items_are_found_by_id_for_their_owner_until_their_response_goes) {
    auto s = open();
    json r = {{"id", "resp_9"}, {"output", json::array({{{"type", "function_call"}, {"id", "fc_1"}, {"name", "f"}}})}};
    ASSERT_FALSE(s->put("alice", r, json::array({{{"type", "message"}, {"id", "msg_in"}}})));
    auto item = s->item("alice", "fc_1");
    ASSERT_TRUE(item);
    EXPECT_EQ((*item)["name"], "f");
    EXPECT_TRUE(s->item("alice", "msg_in"));
    EXPECT_FALSE(s->item("bob", "fc_1"));
    ASSERT_TRUE(s->remove("alice", "resp_9"));
    EXPECT_FALSE(s->item("alice", "fc_1"));
}

TEST_F(ResponseStore, the_size_bound_drops_the_oldest_first) {
    response_store_limits limits;
    limits.max_bytes = 10000;
    auto s           = open(limits);
    for (int i = 0; i < 8; ++i) {
        ASSERT_FALSE(s->put("", response("resp_" + std::to_string(i), 2000), json::array()));
    }
    EXPECT_LE(s->total_bytes(), 10000);
    EXPECT_FALSE(s->get("", "resp_0"));
    EXPECT_TRUE(s->get("", "resp_7"));
    EXPECT_TRUE(s->get("", "resp_6"));
    // One response larger than the whole bound is refused, naming the limit.
    auto err = s->put("", response("resp_big", 20000), json::array());
    ASSERT_TRUE(err);
    EXPECT_NE(err->message.find("10000 bytes"), std::string::npos) << err->message;
}

TEST(ResponseOwner, hashes_keys) {
    EXPECT_EQ(response_owner(""), "");
    EXPECT_EQ(response_owner("k1").size(), 32u);
    EXPECT_NE(response_owner("k1"), response_owner("k2"));
    EXPECT_EQ(response_owner("k1").find("k1"), std::string::npos);
}

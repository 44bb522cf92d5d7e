// The console's server side without a browser: conversations per owner with their bounds, the
// dashboard's metric series, and the query strings its list and stats calls send.
#include "api/query_string.h"
#include "console/conversation_store.h"
#include "metrics/timeline.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

using namespace inferbox;
using json = nlohmann::json;

namespace {

class Conversations : public ::testing::Test { // NOLINT(readability-identifier-naming)
  protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() /
               ("inferbox-conversations-test-" + std::to_string(std::random_device{}()));
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    std::unique_ptr<conversation_store> open(conversation_limits limits = {}) {
        auto s = conversation_store::open(dir_ / "sub" / "console.sqlite3", limits);
        EXPECT_TRUE(s.ok()) << s.err().message;
        return s.ok() ? std::move(*s) : nullptr;
    }
    static json chat(const std::string &user, const std::string &assistant) {
        return json::array({{{"role", "user"}, {"content", user}},
                            {{"role", "assistant"}, {"content", assistant}, {"stats", {{"ttft_ms", 12.5}}}}});
    }

    std::filesystem::path dir_;
};

} // namespace

TEST_F(Conversations, create_get_update_delete_per_owner_across_reopening) {
    std::string id;
    {
        auto store = open();
        auto made  = store->create("alice", {{"messages", chat("Tell me about otters\nplease", "Otters swim.")}});
        ASSERT_TRUE(made.ok()) << made.err().message;
        id = (*made)["id"].get<std::string>();
        EXPECT_EQ(id.rfind("conv_", 0), 0U);
        EXPECT_EQ((*made)["title"], "Tell me about otters"); // the first user line
        EXPECT_EQ((*made)["messages"][1]["stats"]["ttft_ms"], 12.5);
    }
    auto store = open(); // reopened: it persisted
    auto got   = store->get("alice", id);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ((*got)["messages"].size(), 2U);
    EXPECT_FALSE(store->get("bob", id).has_value()); // another key sees nothing
    EXPECT_FALSE(store->update("bob", id, {{"title", "mine now"}}).ok());
    EXPECT_FALSE(store->remove("bob", id));

    auto renamed = store->update("alice", id, {{"title", "Otters"}});
    ASSERT_TRUE(renamed.ok()) << renamed.err().message;
    EXPECT_EQ((*renamed)["title"], "Otters");
    EXPECT_EQ((*renamed)["messages"].size(), 2U); // fields not named are kept
    EXPECT_TRUE(store->remove("alice", id));
    EXPECT_FALSE(store->get("alice", id).has_value());
    auto gone = store->update("alice", id, {{"title", "back?"}});
    ASSERT_FALSE(gone.ok());
    EXPECT_EQ(gone.err().kind, error_kind::not_found);
}

TEST_F(Conversations, list_searches_titles_and_messages_newest_first) {
    auto store = open();
    ASSERT_TRUE(store->create("alice", {{"title", "Otters"}, {"messages", chat("a", "b")}}).ok());
    ASSERT_TRUE(store->create("alice", {{"title", "Beavers"}, {"messages", chat("dams", "They BUILD dams")}}).ok());
    ASSERT_TRUE(store->create("bob", {{"title", "Otters too"}}).ok());
    auto all = store->list("alice", "", 50);
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 2U);
    EXPECT_EQ((*all)[0].title, "Beavers"); // updated last
    EXPECT_EQ((*all)[0].message_count, 2);
    auto hit = store->list("alice", "build", 50); // message text, case-insensitive
    ASSERT_TRUE(hit.ok());
    ASSERT_EQ(hit->size(), 1U);
    EXPECT_EQ((*hit)[0].title, "Beavers");
    EXPECT_EQ(store->list("alice", "100%", 50)->size(), 0U); // no pattern characters
    EXPECT_EQ(store->list("alice", "", 1)->size(), 1U);
    EXPECT_FALSE(store->list("alice", "", 0).ok());
    EXPECT_FALSE(store->list("alice", std::string(201, 'q'), 10).ok());
}

TEST_F(Conversations, partial_updates_merge_with_the_stored_row_not_a_stale_copy) {
    auto store = open();
    auto made  = store->create("alice", {{"title", "first"}, {"messages", chat("a", "b")}});
    ASSERT_TRUE(made.ok());
    const auto id = (*made)["id"].get<std::string>();
    // A rename and a save from two tabs, one after the other: each keeps the other's change.
    ASSERT_TRUE(store->update("alice", id, {{"title", "renamed"}}).ok());
    ASSERT_TRUE(store->update("alice", id, {{"messages", chat("c", "d")}}).ok());
    auto got = store->get("alice", id);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ((*got)["title"], "renamed");
    EXPECT_EQ((*got)["messages"][0]["content"], "c");
    EXPECT_EQ((*got)["created_at"], (*made)["created_at"]);
    // Bad fields are refused before anything is read or written.
    EXPECT_EQ(store->update("alice", id, {{"title", 7}}).err().param, "title");
    EXPECT_EQ(store->update("alice", "conv_missing", {{"title", "x"}}).err().kind, error_kind::not_found);
}

TEST_F(Conversations, bad_documents_are_refused_naming_the_field) {
    auto       store   = open();
    const auto refused = [&](const json &body, const std::string &param) {
        auto r = store->create("alice", body);
        ASSERT_FALSE(r.ok()) << body.dump();
        EXPECT_EQ(r.err().kind, error_kind::invalid_request);
        EXPECT_EQ(r.err().param, param) << r.err().message;
    };
    refused({{"title", 3}}, "title");
    refused({{"title", std::string(201, 't')}}, "title");
    refused({{"messages", "hi"}}, "messages");
    refused({{"messages", json::array({{{"role", "robot"}, {"content", "x"}}})}}, "messages[0].role");
    refused({{"messages", json::array({{{"role", "user"}, {"content", nullptr}}})}}, "messages[0].content");
    refused({{"settings", "warm"}}, "settings");
    refused({{"colour", "blue"}}, "colour");
    EXPECT_FALSE(store->create("alice", json::array()).ok());
    // An assistant turn that only called tools has no text.
    EXPECT_TRUE(
        store->create("alice", {{"messages", json::array({{{"role", "assistant"}, {"content", nullptr}}})}}).ok());
}

TEST_F(Conversations, size_and_count_bounds_refuse_with_their_limit) {
    conversation_limits lim;
    lim.max_bytes           = 2000;
    lim.max_messages        = 3;
    lim.max_per_owner       = 2;
    lim.max_bytes_per_owner = 6000; // a row counts its document and its search text (~2x the text)
    auto store              = open(lim);
    auto big                = store->create("alice", {{"messages", chat(std::string(2100, 'x'), "y")}});
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(big.err().kind, error_kind::payload_too_large);
    EXPECT_EQ(big.err().code, "conversation_too_large");
    EXPECT_NE(big.err().message.find("2000"), std::string::npos) << big.err().message;
    auto many = json::array();
    for (int i = 0; i < 4; ++i) {
        many.push_back({{"role", "user"}, {"content", "m"}});
    }
    EXPECT_EQ(store->create("alice", {{"messages", many}}).err().code, "too_many_messages");

    auto first = store->create("alice", {{"messages", chat(std::string(1500, 'a'), "y")}});
    ASSERT_TRUE(first.ok());
    auto second = store->create("alice", {{"messages", chat(std::string(1600, 'b'), "y")}});
    ASSERT_FALSE(second.ok()); // ~3.2k + ~3.4k over the owner's 6k
    EXPECT_EQ(second.err().code, "conversation_storage_full");
    ASSERT_TRUE(store->create("alice", {{"title", "small"}}).ok());
    EXPECT_EQ(store->create("alice", {{"title", "third"}}).err().code, "too_many_conversations");
    EXPECT_TRUE(store->create("bob", {{"title", "bob's first"}}).ok()); // bounds are per owner
    // Growing an existing conversation counts its new size once, not twice.
    const auto id = (*first)["id"].get<std::string>();
    EXPECT_TRUE(store->update("alice", id, {{"messages", chat(std::string(1700, 'a'), "y")}}).ok());
}

TEST(Timeline, rates_and_latencies_per_interval_and_a_bounded_window) {
    registry         reg;
    auto             a = std::make_shared<serving_metrics>(reg, "a");
    auto             b = std::make_shared<serving_metrics>(reg, "b");
    metrics_timeline tl(3);
    tl.record(1000, {a, b}); // the baseline
    a->generation_tokens.inc(30);
    b->generation_tokens.inc(10);
    a->prompt_tokens.inc(200);
    a->requests_running.set(2);
    b->requests_waiting.set(1);
    a->kv_cache_usage.set(0.25);
    b->kv_cache_usage.set(0.5);
    a->time_to_first_token.observe(0.1);
    b->time_to_first_token.observe(0.3);
    a->time_per_output_token.observe(0.02);
    tl.record(3000, {a, b}); // two seconds later
    auto s = tl.since(0);
    ASSERT_EQ(s.size(), 2U);
    EXPECT_EQ(s[0].output_tokens_per_s, 0);
    EXPECT_FALSE(s[0].ttft_ms.has_value());
    EXPECT_DOUBLE_EQ(s[1].output_tokens_per_s, 20.0); // 40 tokens over 2 s
    EXPECT_DOUBLE_EQ(s[1].prompt_tokens_per_s, 100.0);
    EXPECT_EQ(s[1].requests_running, 2);
    EXPECT_EQ(s[1].requests_waiting, 1);
    EXPECT_DOUBLE_EQ(s[1].kv_cache_usage, 0.5); // the fullest model
    ASSERT_TRUE(s[1].ttft_ms.has_value());
    EXPECT_NEAR(*s[1].ttft_ms, 200.0, 1e-9); // the mean of 100 and 300 ms
    ASSERT_TRUE(s[1].itl_ms.has_value());
    EXPECT_NEAR(*s[1].itl_ms, 20.0, 1e-9);

    tl.record(4000, {a}); // b left: its counters must not make a rate negative
    EXPECT_EQ(tl.since(3000).at(0).output_tokens_per_s, 0);
    EXPECT_FALSE(tl.since(3000).at(0).ttft_ms.has_value()); // nothing new in the interval
    tl.record(5000, {a});
    ASSERT_EQ(tl.since(0).size(), 3U); // the window keeps the newest 3
    EXPECT_EQ(tl.since(0).front().t_ms, 3000);
    EXPECT_TRUE(tl.since(5000).empty());
}

TEST(Timeline, the_sampler_thread_records_until_stopped) {
    registry         reg;
    auto             m = std::make_shared<serving_metrics>(reg, "m");
    metrics_timeline tl;
    tl.start([m] { return std::vector<std::shared_ptr<serving_metrics>>{m}; }, std::chrono::milliseconds(5));
    for (int i = 0; i < 400 && tl.since(0).size() < 3; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    tl.stop();
    const auto n = tl.since(0).size();
    EXPECT_GE(n, 3U);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    EXPECT_EQ(tl.since(0).size(), n); // stopped: no more samples
}

TEST(QueryString, parameters_are_decoded_and_bounded) {
    auto p = query_params("/v1/console/conversations?q=otters+%26+beavers&limit=5&&flag");
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->at("q"), "otters & beavers");
    EXPECT_EQ(p->at("limit"), "5");
    EXPECT_EQ(p->at("flag"), "");
    EXPECT_TRUE(query_params("/v1/console/stats")->empty());
    EXPECT_FALSE(query_params("/x?q=%zz").ok());
    EXPECT_FALSE(query_params("/x?q=%2").ok());
    std::string many = "/x?";
    for (int i = 0; i < 33; ++i) {
        many += "a" + std::to_string(i) + "=1&";
    }
    EXPECT_FALSE(query_params(many).ok());
    EXPECT_EQ(percent_decoded("a%2Fb+c").value(), "a/b+c"); // paths keep '+'
}

TEST(HeaderLists, accept_encoding_explicit_gzip_beats_any_and_q_zero_refuses) {
    EXPECT_TRUE(accepts_gzip("gzip"));
    EXPECT_TRUE(accepts_gzip("br, GZIP;q=0.5"));
    EXPECT_TRUE(accepts_gzip("*"));
    EXPECT_TRUE(accepts_gzip("*;q=0, gzip"));
    EXPECT_FALSE(accepts_gzip(""));
    EXPECT_FALSE(accepts_gzip("br, deflate"));
    EXPECT_FALSE(accepts_gzip("gzip;q=0"));
    EXPECT_FALSE(accepts_gzip("gzip; Q=0.000"));
    EXPECT_FALSE(accepts_gzip("*, gzip;q=0"));
    EXPECT_FALSE(accepts_gzip("*;q=0"));
}

TEST(HeaderLists, if_none_match_finds_the_tag_in_a_list_weakly) {
    EXPECT_TRUE(if_none_match_lists("\"a\"", "\"a\""));
    EXPECT_TRUE(if_none_match_lists("\"x\", W/\"a\" ,\"y\"", "\"a\""));
    EXPECT_FALSE(if_none_match_lists("\"ab\"", "\"a\""));
    EXPECT_FALSE(if_none_match_lists("", "\"a\""));
    EXPECT_FALSE(if_none_match_lists("\"a-gzip\"", "\"a\""));
}

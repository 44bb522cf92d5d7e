// The vector store catalogue (retrieval/vector_store_catalog.h), the Vector Stores API's request
// readers and shapes (api/vector_stores.h) and the file_search tool's output (tools/file_search.h):
// everything behind /v1/vector_stores that needs no model.

#include "api/vector_stores.h"
#include "retrieval/vector_store_catalog.h"
#include "tools/file_search.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

namespace inferbox {
namespace {

using json = nlohmann::json;
using namespace retrieval;

class VectorStoreCatalog : public ::testing::Test { // NOLINT(readability-identifier-naming)
  protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() /
               ("inferbox-vector-stores-test-" + std::to_string(std::random_device{}()));
    }
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    std::unique_ptr<vector_store_catalog> open(const vector_store_limits &limits = {}) {
        auto c = vector_store_catalog::open(dir_, limits);
        EXPECT_TRUE(c) << (c ? "" : c.err().message);
        return c ? std::move(*c) : nullptr;
    }
    // A chunk whose embedding points along axis `axis` of 4.
    static chunk_input chunk(const std::string &text, size_t axis) {
        chunk_input c;
        c.text            = text;
        c.embedding       = std::vector<float>(4, 0.01F);
        c.embedding[axis] = 1;
        return c;
    }
    std::filesystem::path dir_;
};

TEST_F(VectorStoreCatalog, CreatesListsRenamesAndDeletesPerOwner) {
    auto c = open();
    auto a = c->create("alice", "notes", R"({"team":"x"})", {});
    ASSERT_TRUE(a);
    EXPECT_EQ(a->id.rfind("vs_", 0), 0U);
    EXPECT_EQ(a->id.size(), 27U);
    EXPECT_EQ(a->name, "notes");
    auto b = c->create("alice", "more", "{}", {});
    ASSERT_TRUE(b);
    EXPECT_TRUE(c->get("alice", a->id));
    EXPECT_FALSE(c->get("bob", a->id)); // another key's store is not there at all
    auto page = c->list("alice", 10, false, "");
    ASSERT_TRUE(page);
    ASSERT_EQ(page->data.size(), 2U);
    EXPECT_EQ(page->data[0].id, b->id); // newest first
    auto first = c->list("alice", 1, true, "");
    ASSERT_TRUE(first);
    EXPECT_TRUE(first->has_more);
    auto next = c->list("alice", 1, true, first->data[0].id);
    ASSERT_TRUE(next);
    EXPECT_EQ(next->data[0].id, b->id);
    EXPECT_FALSE(next->has_more);
    EXPECT_TRUE(c->list("bob", 10, false, "")->data.empty());
    EXPECT_FALSE(c->list("bob", 10, false, a->id)); // an id bob lacks is an error, not a page

    auto renamed = c->modify("alice", a->id, std::string("renamed"), std::nullopt);
    ASSERT_TRUE(renamed);
    EXPECT_EQ(renamed->name, "renamed");
    EXPECT_EQ(renamed->metadata_json, R"({"team":"x"})");
    EXPECT_FALSE(c->modify("bob", a->id, std::string("x"), std::nullopt));
    EXPECT_FALSE(c->remove("bob", a->id));
    EXPECT_TRUE(c->remove("alice", a->id));
    EXPECT_FALSE(c->get("alice", a->id));
}

TEST_F(VectorStoreCatalog, BoundsNameStoresAndChunking) {
    vector_store_limits limits;
    limits.max_stores_per_owner = 1;
    auto c                      = open(limits);
    auto big                    = c->create("k", std::string(300, 'n'), "{}", {});
    ASSERT_FALSE(big);
    EXPECT_EQ(big.err().param, "name");
    ASSERT_TRUE(c->create("k", "one", "{}", {}));
    auto second = c->create("k", "two", "{}", {});
    ASSERT_FALSE(second);
    EXPECT_EQ(second.err().code, "too_many_vector_stores");
    EXPECT_NE(second.err().message.find("(1, --vector-stores-max-count)"), std::string::npos);
    EXPECT_TRUE(c->create("other", "two", "{}", {})); // per key

    chunking_strategy s{true, 99, 0};
    EXPECT_TRUE(check_chunking(s));
    s = {true, 4096, 2048};
    EXPECT_FALSE(check_chunking(s));
    s        = {true, 1000, 501};
    auto err = check_chunking(s);
    ASSERT_TRUE(err);
    EXPECT_EQ(err->param, "chunking_strategy.static.chunk_overlap_tokens");
}

TEST_F(VectorStoreCatalog, FilesGoInProgressThenCompletedOrFailed) {
    vector_store_limits limits;
    limits.max_files_per_store = 2;
    limits.max_chunks_per_file = 2;
    auto c                     = open(limits);
    auto s                     = c->create("k", "s", "{}", {true, 200, 50});
    ASSERT_TRUE(s);
    auto f = c->add_file("k", s->id, "file-a", std::nullopt);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->status, store_file_status::in_progress);
    EXPECT_EQ(f->chunking.max_tokens, 200); // the store's strategy
    auto again = c->add_file("k", s->id, "file-a", std::nullopt);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.err().code, "file_already_in_store");
    EXPECT_FALSE(c->add_file("other", s->id, "file-b", std::nullopt)); // not their store
    ASSERT_TRUE(c->add_file("k", s->id, "file-b", std::nullopt));
    auto third = c->add_file("k", s->id, "file-c", std::nullopt);
    ASSERT_FALSE(third);
    EXPECT_EQ(third.err().code, "too_many_files");

    ASSERT_FALSE(c->add_chunks(s->id, "file-a", "a.txt", {chunk("alpha apples", 0), chunk("alpha pears", 1)}));
    auto done = c->get_file("k", s->id, "file-a");
    ASSERT_TRUE(done);
    EXPECT_EQ(done->status, store_file_status::completed);
    EXPECT_EQ(done->n_chunks, 2);
    auto over = c->add_chunks(s->id, "file-b", "b.txt", {chunk("x", 0), chunk("y", 1), chunk("z", 2)});
    ASSERT_TRUE(over);
    EXPECT_EQ(over->code, "too_many_chunks");
    c->fail_file(s->id, "file-b", *over);
    auto failed = c->get_file("k", s->id, "file-b");
    ASSERT_TRUE(failed);
    EXPECT_EQ(failed->status, store_file_status::failed);
    EXPECT_EQ(failed->error_code, "too_many_chunks");

    auto store = c->get("k", s->id);
    EXPECT_EQ(store->n_completed, 1);
    EXPECT_EQ(store->n_failed, 1);
    EXPECT_EQ(store->usage_bytes, static_cast<int64_t>(std::string("alpha applesalpha pears").size()));
    auto only_failed = c->list_files("k", s->id, 10, false, "", store_file_status::failed);
    ASSERT_TRUE(only_failed);
    ASSERT_EQ(only_failed->data.size(), 1U);
    EXPECT_EQ(only_failed->data[0].file_id, "file-b");
}

TEST_F(VectorStoreCatalog, SearchRanksKeywordsAcrossStoresAndFiltersFiles) {
    auto c  = open();
    auto s1 = c->create("k", "one", "{}", {});
    auto s2 = c->create("k", "two", "{}", {});
    ASSERT_TRUE(s1 && s2);
    ASSERT_TRUE(c->add_file("k", s1->id, "file-a", std::nullopt));
    ASSERT_TRUE(c->add_file("k", s2->id, "file-b", std::nullopt));
    ASSERT_FALSE(c->add_chunks(s1->id, "file-a", "a.txt", {chunk("the zebra sleeps", 0), chunk("cats purr", 1)}));
    ASSERT_FALSE(c->add_chunks(s2->id, "file-b", "b.txt", {chunk("dogs bark", 2), chunk("parrots talk", 3)}));
    // The query's vector favours file-b's chunk, the keyword file-a's: both rankings agree on
    // nothing but the keyword hit comes first in one and the vector hit first in the other.
    const std::vector<float> q    = {1, 0, 0, 0};
    auto                     hits = c->search("k", {s1->id, s2->id}, "zebra", q, 5, {});
    ASSERT_TRUE(hits) << hits.err().message;
    ASSERT_FALSE(hits->empty());
    EXPECT_EQ((*hits)[0].file_id, "file-a");
    EXPECT_EQ((*hits)[0].filename, "a.txt");
    EXPECT_EQ((*hits)[0].text, "the zebra sleeps");
    EXPECT_NEAR((*hits)[0].score, 1.0, 1e-9); // first in both rankings

    auto keyword_only = c->search("k", {s2->id}, "parrots", {}, 5, {});
    ASSERT_TRUE(keyword_only);
    ASSERT_EQ(keyword_only->size(), 1U);
    EXPECT_EQ((*keyword_only)[0].text, "parrots talk");

    store_search_options only_b;
    only_b.filter = attribute_filter{filter_op::eq, "file_id", {std::string("file-b")}, {}};
    auto filtered = c->search("k", {s1->id, s2->id}, "zebra dogs", q, 5, only_b);
    ASSERT_TRUE(filtered);
    for (const auto &h : *filtered) {
        EXPECT_EQ(h.file_id, "file-b");
    }
    auto foreign = c->search("other", {s1->id}, "zebra", q, 5, {});
    ASSERT_FALSE(foreign);
    EXPECT_EQ(foreign.err().code, "vector_store_not_found");
    auto wrong_dim = c->search("k", {s1->id}, "zebra", {1, 0}, 5, {});
    ASSERT_FALSE(wrong_dim);
    EXPECT_EQ(wrong_dim.err().code, "embedding_dimension_mismatch");
    EXPECT_FALSE(c->search("k", {s1->id}, "zebra", q, 51, {}));
    EXPECT_FALSE(c->search("k", {s1->id}, std::string(5000, 'q'), q, 5, {}));

    auto removed = c->remove_file("k", s1->id, "file-a");
    ASSERT_TRUE(removed);
    EXPECT_TRUE(*removed);
    auto after = c->search("k", {s1->id}, "zebra", q, 5, {});
    ASSERT_TRUE(after);
    EXPECT_TRUE(after->empty());
}

TEST_F(VectorStoreCatalog, SurvivesReopenAndFailsInterruptedFiles) {
    std::string id;
    {
        auto c = open();
        auto s = c->create("k", "kept", "{}", {});
        ASSERT_TRUE(s);
        id = s->id;
        ASSERT_TRUE(c->add_file("k", id, "file-a", std::nullopt));
        ASSERT_FALSE(c->add_chunks(id, "file-a", "a.txt", {chunk("persistent walrus", 0)}));
        ASSERT_TRUE(c->add_file("k", id, "file-b", std::nullopt)); // never finished: the server "stops"
    }
    auto c = open();
    auto s = c->get("k", id);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->n_completed, 1);
    EXPECT_EQ(s->n_failed, 1);
    EXPECT_EQ(c->get_file("k", id, "file-b")->error_code, "server_error");
    auto hits = c->search("k", {id}, "walrus", {1, 0, 0, 0}, 3, {});
    ASSERT_TRUE(hits);
    ASSERT_EQ(hits->size(), 1U);
    EXPECT_EQ((*hits)[0].text, "persistent walrus");
    EXPECT_TRUE(c->remove("k", id));
    EXPECT_FALSE(std::filesystem::exists(dir_ / id));
}

TEST_F(VectorStoreCatalog, KeepsAttributesAndFiltersBeforeTakingTheBestK) {
    auto c = open();
    auto s = c->create("k", "s", "{}", {});
    ASSERT_TRUE(s);
    // Ten files about zebras without the attribute, one with it and a weaker match: a filtered
    // search for the best 2 must still find the one, however far down the whole ranking it is.
    for (int i = 0; i < 10; ++i) {
        const std::string id = "file-" + std::to_string(i);
        ASSERT_TRUE(c->add_file("k", s->id, id, std::nullopt, R"({"lang":"de","n":)" + std::to_string(i) + "}"));
        ASSERT_FALSE(c->add_chunks(s->id, id, id + ".txt", {chunk("zebra zebra zebra stripes", 0)}));
    }
    auto tagged = c->add_file("k", s->id, "file-x", std::nullopt, R"({"lang":"en","n":99,"ok":true})");
    ASSERT_TRUE(tagged);
    EXPECT_EQ(tagged->attributes_json, R"({"lang":"en","n":99,"ok":true})");
    ASSERT_FALSE(c->add_chunks(s->id, "file-x", "x.txt", {chunk("one zebra among many other words here", 3)}));
    const std::vector<float> q = {1, 0, 0, 0};

    auto unfiltered = c->search("k", {s->id}, "zebra", q, 2, {});
    ASSERT_TRUE(unfiltered);
    ASSERT_EQ(unfiltered->size(), 2U);
    for (const auto &h : *unfiltered) {
        EXPECT_NE(h.file_id, "file-x");
    }
    store_search_options en;
    en.filter  = attribute_filter{filter_op::eq, "lang", {std::string("en")}, {}};
    auto found = c->search("k", {s->id}, "zebra", q, 2, en);
    ASSERT_TRUE(found) << found.err().message;
    ASSERT_EQ(found->size(), 1U);
    EXPECT_EQ((*found)[0].file_id, "file-x");
    EXPECT_EQ((*found)[0].attributes_json, R"({"lang":"en","n":99,"ok":true})");

    // Numbers and booleans come back typed from the stored text.
    store_search_options numeric;
    numeric.filter = attribute_filter{
        filter_op::all_of,
        "",
        {},
        {attribute_filter{filter_op::gte, "n", {5.0}, {}}, attribute_filter{filter_op::lt, "n", {8.0}, {}}}};
    auto mid = c->search("k", {s->id}, "zebra", q, 10, numeric);
    ASSERT_TRUE(mid);
    std::vector<std::string> ids;
    for (const auto &h : *mid) {
        ids.push_back(h.file_id);
    }
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(ids, (std::vector<std::string>{"file-5", "file-6", "file-7"}));
    store_search_options flagged;
    flagged.filter = attribute_filter{filter_op::eq, "ok", {true}, {}};
    auto ok        = c->search("k", {s->id}, "zebra", q, 10, flagged);
    ASSERT_TRUE(ok);
    ASSERT_EQ(ok->size(), 1U);
    EXPECT_EQ((*ok)[0].file_id, "file-x");
    store_search_options nobody;
    nobody.filter = attribute_filter{filter_op::eq, "lang", {std::string("fr")}, {}};
    EXPECT_TRUE(c->search("k", {s->id}, "zebra", q, 10, nobody)->empty());

    // Updating the attributes changes what the filter picks; another key cannot.
    auto changed = c->set_file_attributes("k", s->id, "file-3", R"({"lang":"en"})");
    ASSERT_TRUE(changed);
    EXPECT_EQ(changed->attributes_json, R"({"lang":"en"})");
    EXPECT_EQ(c->get_file("k", s->id, "file-3")->attributes_json, R"({"lang":"en"})");
    EXPECT_EQ(c->search("k", {s->id}, "zebra", q, 10, en)->size(), 2U);
    EXPECT_FALSE(c->set_file_attributes("other", s->id, "file-3", "{}"));
    auto missing = c->set_file_attributes("k", s->id, "file-none", "{}");
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.err().code, "file_not_found");
}

TEST_F(VectorStoreCatalog, ScoreThresholdDropsWeakResults) {
    auto c = open();
    auto s = c->create("k", "s", "{}", {});
    ASSERT_TRUE(s);
    ASSERT_TRUE(c->add_file("k", s->id, "file-a", std::nullopt));
    ASSERT_FALSE(c->add_chunks(s->id, "file-a", "a.txt",
                               {chunk("the zebra sleeps", 0), chunk("cats purr", 1), chunk("dogs bark", 2)}));
    const std::vector<float> q   = {1, 0, 0, 0};
    auto                     all = c->search("k", {s->id}, "zebra", q, 10, {});
    ASSERT_TRUE(all);
    ASSERT_GE(all->size(), 2U);
    EXPECT_NEAR((*all)[0].score, 1.0, 1e-9);
    ASSERT_LT(all->back().score, 1.0);
    store_search_options strict;
    strict.score_threshold = 0.99;
    auto top               = c->search("k", {s->id}, "zebra", q, 10, strict);
    ASSERT_TRUE(top);
    ASSERT_EQ(top->size(), 1U);
    EXPECT_EQ((*top)[0].text, "the zebra sleeps");
    strict.score_threshold = 1.5;
    auto bad               = c->search("k", {s->id}, "zebra", q, 10, strict);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.err().param, "ranking_options.score_threshold");
}

TEST_F(VectorStoreCatalog, ExpiresAfterDaysOfInactivity) {
    vector_store_limits limits;
    limits.seconds_per_day = 1; // a "day" of one second
    auto c                 = open(limits);
    EXPECT_FALSE(c->create("k", "bad", "{}", {}, 366));
    auto s = c->create("k", "short", "{}", {}, 2);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->expires_days, 2);
    EXPECT_EQ(s->expires_at, s->last_active_at + 2);
    EXPECT_FALSE(s->expired);
    auto kept = c->create("k", "kept", "{}", {});
    ASSERT_TRUE(kept);
    EXPECT_EQ(kept->expires_at, 0);
    ASSERT_TRUE(c->add_file("k", s->id, "file-a", std::nullopt));
    ASSERT_FALSE(c->add_chunks(s->id, "file-a", "a.txt", {chunk("walrus", 0)}));
    ASSERT_TRUE(std::filesystem::exists(dir_ / s->id));
    auto longer = c->modify("k", s->id, std::nullopt, std::nullopt, int64_t{3});
    ASSERT_TRUE(longer);
    EXPECT_EQ(longer->expires_at, longer->last_active_at + 3);
    auto again = c->modify("k", s->id, std::nullopt, std::nullopt, int64_t{2});
    ASSERT_TRUE(again);

    std::this_thread::sleep_for(std::chrono::milliseconds(3100));
    auto expired = c->get("k", s->id);
    ASSERT_TRUE(expired);
    EXPECT_TRUE(expired->expired);
    EXPECT_EQ(expired->n_completed, 0); // its files went with it
    EXPECT_FALSE(std::filesystem::exists(dir_ / s->id));
    EXPECT_FALSE(c->get("k", kept->id)->expired);
    auto search = c->search("k", {s->id}, "walrus", {1, 0, 0, 0}, 3, {});
    ASSERT_FALSE(search);
    EXPECT_EQ(search.err().code, "vector_store_expired");
    EXPECT_EQ(search.err().kind, error_kind::not_found);
    auto add = c->add_file("k", s->id, "file-b", std::nullopt);
    ASSERT_FALSE(add);
    EXPECT_EQ(add.err().code, "vector_store_expired");
    EXPECT_EQ(c->modify("k", s->id, std::string("x"), std::nullopt).err().code, "vector_store_expired");
    auto page = c->list("k", 10, false, "");
    ASSERT_TRUE(page);
    EXPECT_EQ(page->data.size(), 2U); // listed as expired until deleted
    EXPECT_TRUE(c->remove("k", s->id));
    EXPECT_FALSE(c->get("k", s->id));
}

TEST_F(VectorStoreCatalog, UpgradesACatalogueFromBeforeAttributesAndExpiry) {
    // The tables as the first release made them, with one store and one file.
    std::filesystem::create_directories(dir_);
    sqlite3 *db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "catalogue.sqlite3").c_str(), &db), SQLITE_OK);
    const char *old =
        "CREATE TABLE stores (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, "
        "name TEXT NOT NULL, metadata TEXT NOT NULL, chunk_static INTEGER NOT NULL, chunk_max INTEGER NOT NULL, "
        "chunk_overlap INTEGER NOT NULL, created INTEGER NOT NULL, last_active INTEGER NOT NULL);"
        "CREATE TABLE files (seq INTEGER PRIMARY KEY AUTOINCREMENT, store_id TEXT NOT NULL, file_id TEXT NOT NULL, "
        "created INTEGER NOT NULL, status INTEGER NOT NULL, error_code TEXT NOT NULL, error_message TEXT NOT NULL, "
        "chunk_static INTEGER NOT NULL, chunk_max INTEGER NOT NULL, chunk_overlap INTEGER NOT NULL, "
        "n_chunks INTEGER NOT NULL, usage_bytes INTEGER NOT NULL, UNIQUE (store_id, file_id));"
        "INSERT INTO stores (id, owner, name, metadata, chunk_static, chunk_max, chunk_overlap, created, last_active) "
        "VALUES ('vs_000000000000000000000001', 'k', 'old', '{}', 0, 800, 400, 1, 1);"
        "INSERT INTO files (store_id, file_id, created, status, error_code, error_message, chunk_static, chunk_max, "
        "chunk_overlap, n_chunks, usage_bytes) VALUES ('vs_000000000000000000000001', 'file-a', 1, 1, '', '', 0, "
        "800, 400, 0, 0);";
    ASSERT_EQ(sqlite3_exec(db, old, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    sqlite3_close(db);

    {
        auto c = open();
        ASSERT_TRUE(c);
        auto s = c->get("k", "vs_000000000000000000000001");
        ASSERT_TRUE(s);
        EXPECT_EQ(s->name, "old");
        EXPECT_EQ(s->expires_at, 0);
        EXPECT_FALSE(s->expired);
        auto f = c->get_file("k", s->id, "file-a");
        ASSERT_TRUE(f);
        EXPECT_EQ(f->attributes_json, "{}");
        ASSERT_TRUE(c->set_file_attributes("k", s->id, "file-a", R"({"round":1})"));
        ASSERT_TRUE(c->modify("k", s->id, std::nullopt, std::nullopt, int64_t{30}));
    }
    // The second open finds the columns already there, and what was written in them.
    auto c = open();
    ASSERT_TRUE(c);
    auto s = c->get("k", "vs_000000000000000000000001");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->expires_days, 30);
    EXPECT_EQ(s->expires_at, s->last_active_at + int64_t{30} * 86400);
    EXPECT_EQ(c->get_file("k", s->id, "file-a")->attributes_json, R"({"round":1})");
}

TEST(VectorStoreApi, ReadsChunkingStrategies) {
    auto a = parse_chunking_strategy(json{{"type", "auto"}});
    ASSERT_TRUE(a);
    EXPECT_FALSE(a->is_static);
    auto s = parse_chunking_strategy(
        json::parse(R"({"type":"static","static":{"max_chunk_size_tokens":300,"chunk_overlap_tokens":100}})"));
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->is_static);
    EXPECT_EQ(s->max_tokens, 300);
    EXPECT_EQ(s->overlap_tokens, 100);
    auto big = parse_chunking_strategy(
        json::parse(R"({"type":"static","static":{"max_chunk_size_tokens":5000,"chunk_overlap_tokens":0}})"));
    ASSERT_FALSE(big);
    EXPECT_EQ(big.err().param, "chunking_strategy.static.max_chunk_size_tokens");
    EXPECT_NE(big.err().message.find("100 to 4096"), std::string::npos);
    EXPECT_FALSE(parse_chunking_strategy(json{{"type", "static"}}));
    EXPECT_FALSE(parse_chunking_strategy(json{{"type", "other"}}));
}

TEST(VectorStoreApi, ReadsSearchRequests) {
    auto r = parse_search_request(
        json::parse(
            R"({"query":"zebra","max_num_results":3,"filters":{"type":"eq","key":"file_id","value":"file-1"}})"),
        4096);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->query, "zebra");
    EXPECT_EQ(r->max_num_results, 3U);
    ASSERT_TRUE(r->options.filter);
    EXPECT_EQ(r->options.filter->key, "file_id");
    EXPECT_EQ(std::get<std::string>(r->options.filter->values.at(0)), "file-1");
    auto many = parse_search_request(json::parse(R"({"query":["a","b"],"filters":{"type":"or","filters":[
        {"type":"eq","key":"file_id","value":"f1"},{"type":"in","key":"file_id","value":["f2","f3"]}]}})"),
                                     4096);
    ASSERT_TRUE(many);
    EXPECT_EQ(many->query, "a b");
    ASSERT_TRUE(many->options.filter);
    EXPECT_EQ(many->options.filter->children.size(), 2U);
    EXPECT_FALSE(parse_search_request(json{{"query", ""}}, 4096));
    EXPECT_FALSE(parse_search_request(json{{"query", "x"}, {"max_num_results", 51}}, 4096));
    EXPECT_FALSE(parse_search_request(json{{"query", "x"}, {"rewrite_query", "true"}}, 4096));
    auto rewritten = parse_search_request(json{{"query", "Where is the zebra?"}, {"rewrite_query", true}}, 4096);
    ASSERT_TRUE(rewritten);
    EXPECT_EQ(rewritten->query, "zebra");
    EXPECT_FALSE(parse_search_request(json{{"query", "x"}, {"colour", 1}}, 4096));
    auto attr = parse_search_request(
        json::parse(R"({"query":"x","filters":{"type":"eq","key":"author","value":"me"},"ranking_options":{
            "ranker":"auto","score_threshold":0.5}})"),
        4096);
    ASSERT_TRUE(attr) << attr.err().message;
    EXPECT_EQ(attr->options.filter->key, "author");
    EXPECT_EQ(attr->options.score_threshold, 0.5);
    auto bad_filter = parse_search_request(json::parse(R"({"query":"x","filters":{"type":"eq","key":"a"}})"), 4096);
    ASSERT_FALSE(bad_filter);
    EXPECT_EQ(bad_filter.err().param, "filters.value");
    auto bad_threshold =
        parse_search_request(json::parse(R"({"query":"x","ranking_options":{"score_threshold":2}})"), 4096);
    ASSERT_FALSE(bad_threshold);
    EXPECT_EQ(bad_threshold.err().param, "ranking_options.score_threshold");
    auto long_query = parse_search_request(json{{"query", std::string(100, 'q')}}, 64);
    ASSERT_FALSE(long_query);
    EXPECT_NE(long_query.err().message.find("at most 64"), std::string::npos);
}

TEST(VectorStoreApi, ShapesObjectsAsOpenAI) {
    vector_store_record s;
    s.id            = "vs_1";
    s.name          = "n";
    s.metadata_json = R"({"a":"b"})";
    s.n_in_progress = 1;
    s.n_completed   = 2;
    auto j          = vector_store_json(s);
    EXPECT_EQ(j["object"], "vector_store");
    EXPECT_EQ(j["status"], "in_progress");
    EXPECT_EQ(j["file_counts"]["total"], 3);
    EXPECT_EQ(j["metadata"]["a"], "b");
    vector_store_file_record f;
    f.file_id       = "file-1";
    f.store_id      = "vs_1";
    f.status        = store_file_status::failed;
    f.error_code    = "invalid_file";
    f.error_message = "bad";
    auto fj         = vector_store_file_json(f);
    EXPECT_EQ(fj["object"], "vector_store.file");
    EXPECT_EQ(fj["status"], "failed");
    EXPECT_EQ(fj["last_error"]["code"], "invalid_file");
    f.attributes_json = R"({"lang":"en"})";
    EXPECT_EQ(vector_store_file_json(f)["attributes"]["lang"], "en");
    EXPECT_EQ(j["expires_after"], nullptr);
    EXPECT_EQ(j["expires_at"], nullptr);
    s.expires_days = 7;
    s.expires_at   = 1000;
    s.expired      = true;
    auto expiring  = vector_store_json(s);
    EXPECT_EQ(expiring["status"], "expired");
    EXPECT_EQ(expiring["expires_after"]["anchor"], "last_active_at");
    EXPECT_EQ(expiring["expires_after"]["days"], 7);
    EXPECT_EQ(expiring["expires_at"], 1000);
    auto page = search_page_json("q", {store_hit{"vs_1", "file-1", "a.txt", "hello", 0.5, R"({"n":1})"}});
    EXPECT_EQ(page["data"][0]["attributes"]["n"], 1);
    EXPECT_EQ(page["object"], "vector_store.search_results.page");
    EXPECT_EQ(page["data"][0]["content"][0]["text"], "hello");
    EXPECT_EQ(page["data"][0]["filename"], "a.txt");
    EXPECT_EQ(ingest_error_code(error::invalid("x", "", "unsupported_file_type")), "unsupported_file");
    EXPECT_EQ(ingest_error_code(error{error_kind::internal, "x", "", ""}), "server_error");
}

TEST(FileSearchTool, CapsOutputBytesAtCharacterBoundaries) {
    std::vector<store_hit> hits = {{"vs", "f1", "a.txt", "héllo wörld", 0.9, R"({"k":"v"})"},
                                   {"vs", "f2", "b.txt", "second", 0.4}};
    auto                   all  = json::parse(file_search_output(hits, 1000));
    ASSERT_EQ(all.size(), 2U);
    EXPECT_EQ(all[0]["attributes"]["k"], "v");
    EXPECT_EQ(all[1]["attributes"], json::object());
    EXPECT_EQ(all[1]["text"], "second");
    // 2 bytes: "h" and half of "é" fit; the half is dropped, which leaves 1 byte for the second.
    auto cut = json::parse(file_search_output(hits, 2));
    ASSERT_EQ(cut.size(), 2U);
    EXPECT_EQ(cut[0]["text"], "h");
    EXPECT_EQ(cut[1]["text"], "s");
    // 1 byte: only the first hit's "h".
    auto one = json::parse(file_search_output(hits, 1));
    ASSERT_EQ(one.size(), 1U);
    EXPECT_EQ(json::parse(file_search_output(hits, 0)).size(), 0U);
}

} // namespace
} // namespace inferbox

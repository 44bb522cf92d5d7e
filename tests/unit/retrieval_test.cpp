// The retrieval library (src/retrieval): chunking on boundaries and UTF-8, overlap and limits; the
// FTS5 query builder on hostile text; reciprocal rank fusion on a hand-computed example; the
// document index's add, search, filter, delete and replace, its recall against exact search, its
// persistence across reopening, and its recovery from a corrupt, truncated, stale or missing
// index file; concurrent searches beside writes.
#include "common/utf8.h"
#include "retrieval/chunker.h"
#include "retrieval/document_index.h"
#include "retrieval/fts_query.h"
#include "retrieval/fusion.h"
#include "retrieval/hnsw_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <thread>

using namespace inferbox;
using namespace inferbox::retrieval;

namespace {

std::string words(size_t n, const std::string &word = "word") {
    std::string out;
    for (size_t i = 0; i < n; ++i) {
        out += (i == 0 ? "" : " ") + word + std::to_string(i);
    }
    return out;
}

void expect_chunks_point_into(const std::string &text, const std::vector<text_chunk> &chunks, size_t max_tokens,
                              const token_counter &count = approximate_tokens) {
    for (const auto &c : chunks) {
        EXPECT_EQ(text.substr(c.offset, c.text.size()), c.text);
        EXPECT_TRUE(utf8_valid(c.text));
        EXPECT_LE(c.n_tokens, max_tokens);
        EXPECT_LE(count(c.text), max_tokens) << c.text;
        EXPECT_FALSE(c.text.empty());
    }
}

} // namespace

TEST(RetrievalChunker, respects_the_limit_overlaps_and_covers_the_text) {
    const std::string text = words(100); // 100 one-token words
    chunking_options  opts;
    opts.max_tokens     = 20;
    opts.overlap_tokens = 5;
    auto chunks         = chunk_text(text, opts);
    ASSERT_TRUE(chunks.ok()) << chunks.err().message;
    ASSERT_GT(chunks->size(), 5U);
    expect_chunks_point_into(text, *chunks, 20);
    EXPECT_EQ(chunks->front().offset, 0U);
    EXPECT_EQ(chunks->back().offset + chunks->back().text.size(), text.size());
    for (size_t i = 0; i + 1 < chunks->size(); ++i) {
        const auto &a = (*chunks)[i];
        const auto &b = (*chunks)[i + 1];
        EXPECT_EQ(a.n_tokens, 20U) << "no break to prefer: chunks are full";
        // The next chunk starts inside this one, by exactly the overlap: five shared words.
        const auto shared = text.substr(b.offset, a.offset + a.text.size() - b.offset);
        EXPECT_EQ(approximate_tokens(shared), 5U) << shared;
        EXPECT_GT(b.offset, a.offset);
    }
}

TEST(RetrievalChunker, prefers_paragraph_then_sentence_breaks) {
    // 14 words, a paragraph break, 14 more: with room for 20, the first chunk ends at the break.
    const std::string para = words(13, "p") + " end.\n\n" + words(14, "q");
    chunking_options  opts;
    opts.max_tokens     = 20;
    opts.overlap_tokens = 0;
    auto chunks         = chunk_text(para, opts);
    ASSERT_TRUE(chunks.ok());
    ASSERT_EQ(chunks->size(), 2U);
    EXPECT_EQ((*chunks)[0].text, words(13, "p") + " end.");
    EXPECT_EQ((*chunks)[1].text, words(14, "q"));

    // Sentences of 6 words, no paragraphs: a chunk of at most 20 ends after the third sentence.
    std::string sentences;
    for (int s = 0; s < 8; ++s) {
        sentences += words(5, "s" + std::to_string(s) + "w") + " stop. ";
    }
    chunks = chunk_text(sentences, opts);
    ASSERT_TRUE(chunks.ok());
    expect_chunks_point_into(sentences, *chunks, 20);
    for (size_t i = 0; i + 1 < chunks->size(); ++i) {
        EXPECT_EQ((*chunks)[i].text.back(), '.') << (*chunks)[i].text;
        EXPECT_EQ((*chunks)[i].n_tokens, 18U);
    }

    // CJK sentences end at 。 without a space.
    std::string cjk;
    for (int s = 0; s < 6; ++s) {
        cjk += "これは文です。";
    }
    chunking_options by_chars = opts;
    by_chars.max_tokens       = 16;
    by_chars.count_tokens     = [](std::string_view s) {
        return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
    };
    chunks = chunk_text(cjk, by_chars);
    ASSERT_TRUE(chunks.ok());
    ASSERT_EQ(chunks->size(), 3U);
    EXPECT_EQ((*chunks)[0].text, "これは文です。これは文です。");
}

TEST(RetrievalChunker, cuts_long_words_between_characters_only) {
    std::string text;
    for (int i = 0; i < 500; ++i) {
        text += "日本語😀é";
    }
    text += " tail";
    for (const size_t max : {1U, 3U, 10U, 64U}) {
        chunking_options opts;
        opts.max_tokens     = max;
        opts.overlap_tokens = 0;
        auto chunks         = chunk_text(text, opts);
        ASSERT_TRUE(chunks.ok()) << chunks.err().message;
        expect_chunks_point_into(text, *chunks, max);
        std::string joined;
        for (const auto &c : *chunks) {
            joined += c.text;
        }
        joined.erase(std::remove(joined.begin(), joined.end(), ' '), joined.end());
        // No overlap: the pieces add up to the text (without the space, which may fall between).
        EXPECT_TRUE(joined == text.substr(0, text.size() - 5) + "tail") << "max " << max;
    }
    // A counter that counts bytes: a 4-byte character over a 2-token limit stands alone, whole.
    chunking_options bytes;
    bytes.max_tokens     = 2;
    bytes.overlap_tokens = 0;
    bytes.count_tokens   = [](std::string_view s) { return s.size(); };
    auto chunks          = chunk_text("😀😀a", bytes);
    ASSERT_TRUE(chunks.ok());
    ASSERT_EQ(chunks->size(), 3U);
    EXPECT_EQ((*chunks)[0].text, "😀");
    EXPECT_EQ((*chunks)[2].text, "a");
}

TEST(RetrievalChunker, limits_and_bad_input_are_errors_naming_the_limit) {
    chunking_options opts;
    EXPECT_TRUE(chunk_text("", opts)->empty());
    EXPECT_TRUE(chunk_text(" \n\t\n ", opts)->empty());

    opts.max_tokens = 0;
    EXPECT_NE(chunk_text("a", opts).err().message.find("65536"), std::string::npos);
    opts.max_tokens     = 100;
    opts.overlap_tokens = 51;
    EXPECT_EQ(chunk_text("a", opts).err().param, "chunk_overlap_tokens");

    opts.overlap_tokens     = 0;
    opts.max_document_bytes = 10;
    auto big                = chunk_text(std::string(11, 'a'), opts);
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(big.err().kind, error_kind::payload_too_large);
    EXPECT_NE(big.err().message.find("10"), std::string::npos);

    opts.max_document_bytes = 1 << 20;
    opts.max_tokens         = 2;
    opts.max_chunks         = 3;
    auto many               = chunk_text(words(10), opts);
    ASSERT_FALSE(many.ok());
    EXPECT_EQ(many.err().code, "too_many_chunks");
    EXPECT_NE(many.err().message.find("more than 3 chunks"), std::string::npos);

    auto bad = chunk_text("ok \xC3\x28 no", chunking_options{});
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.err().message.find("byte offset 3"), std::string::npos) << bad.err().message;
    EXPECT_FALSE(chunk_text("\xED\xA0\x80", chunking_options{}).ok()) << "a surrogate is not UTF-8";
}

TEST(RetrievalFtsQuery, quotes_every_term_of_hostile_text) {
    EXPECT_EQ(*fts_match_expression("hello world"), "\"hello\" OR \"world\"");
    EXPECT_EQ(*fts_match_expression("\""), "\"\"\"\"");
    EXPECT_EQ(*fts_match_expression("NEAR( a"), "\"NEAR(\" OR \"a\"");
    EXPECT_EQ(*fts_match_expression("x OR y"), "\"x\" OR \"OR\" OR \"y\"");
    EXPECT_EQ(*fts_match_expression("pre* col:val"), "\"pre*\" OR \"col:val\"");
    EXPECT_EQ(*fts_match_expression("\"unbalanced phrase"), "\"\"\"unbalanced\" OR \"phrase\"");
    EXPECT_EQ(*fts_match_expression("Foo foo FOO"), "\"Foo\"");
    EXPECT_EQ(*fts_match_expression(" \t\n\x01 "), "");
    EXPECT_EQ(*fts_match_expression(std::string("a\0z", 3)), "\"a\" OR \"z\"");
    EXPECT_TRUE(utf8_valid(*fts_match_expression("bad \xFF byte")));

    fts_query_limits limits;
    limits.max_bytes = 8;
    EXPECT_NE(fts_match_expression("123456789", limits).err().message.find("limit is 8"), std::string::npos);
    limits.max_bytes = 100;
    limits.max_terms = 2;
    EXPECT_TRUE(fts_match_expression("a b a B", limits).ok());
    EXPECT_NE(fts_match_expression("a b c", limits).err().message.find("more than 2"), std::string::npos);
}

TEST(RetrievalFusion, reciprocal_rank_fusion_matches_a_hand_computed_example) {
    // Vector: 1, 2, 3. Keyword: 3, 1, 4. With k = 60:
    //   1: 1/61 + 1/62 = 0.032523   3: 1/63 + 1/61 = 0.032266   2: 1/62 = 0.016129   4: 1/63 = 0.015873
    // scaled by the best possible, 2/61.
    const auto fused = reciprocal_rank_fusion({{1, 2, 3}, {3, 1, 4}}, 60);
    ASSERT_EQ(fused.size(), 4U);
    EXPECT_EQ(fused[0].id, 1);
    EXPECT_EQ(fused[1].id, 3);
    EXPECT_EQ(fused[2].id, 2);
    EXPECT_EQ(fused[3].id, 4);
    EXPECT_NEAR(fused[0].score, (1.0 / 61 + 1.0 / 62) * 61 / 2, 1e-12);
    EXPECT_NEAR(fused[3].score, (1.0 / 63) * 61 / 2, 1e-12);
    // First everywhere scores 1; a repeat within one ranking counts once.
    const auto top = reciprocal_rank_fusion({{7, 7, 8}, {7}}, 60);
    EXPECT_DOUBLE_EQ(top[0].score, 1.0);
    EXPECT_NEAR(top[1].score, (1.0 / 62) * 61 / 2, 1e-12);
}

namespace {

class RetrievalIndex : public ::testing::Test { // NOLINT(readability-identifier-naming)
  protected:
    static constexpr size_t dim = 16;

    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() /
               ("inferbox-retrieval-test-" + std::to_string(std::random_device{}()));
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    std::unique_ptr<document_index> open(index_options opts = {}) {
        opts.dimension = dim;
        auto index     = document_index::open(dir_, opts);
        EXPECT_TRUE(index.ok()) << index.err().message;
        return index.ok() ? std::move(*index) : nullptr;
    }
    std::vector<float> random_vector() {
        std::normal_distribution<float> g(0, 1);
        std::vector<float>              v(dim);
        for (auto &x : v) {
            x = g(rng_);
        }
        return v;
    }
    // A document of n chunks with random vectors; chunk i's text is "<id> chunk i <extra>".
    std::vector<chunk_input> document(const std::string &id, size_t n, const std::string &extra = "") {
        std::vector<chunk_input> chunks;
        for (size_t i = 0; i < n; ++i) {
            chunks.push_back(chunk_input{id + " chunk " + std::to_string(i) + " " + extra, random_vector(),
                                         static_cast<int64_t>(i * 100)});
        }
        return chunks;
    }
    static std::set<std::string> documents_of(const std::vector<search_hit> &hits) {
        std::set<std::string> out;
        for (const auto &h : hits) {
            out.insert(h.document_id);
        }
        return out;
    }

    std::filesystem::path dir_;
    std::mt19937          rng_{7};
};

} // namespace

TEST_F(RetrievalIndex, add_search_replace_and_remove) {
    auto index = open();
    ASSERT_TRUE(index);
    auto a = document("a", 5);
    auto b = document("b", 5);
    ASSERT_EQ(*index->add_document("a", "a.txt", a), 5U);
    ASSERT_EQ(*index->add_document("b", "b.md", b), 5U);

    // A chunk's own vector (scaled: cosine ignores length) finds it first, with similarity 1.
    auto query = b[3].embedding;
    for (auto &x : query) {
        x *= 3;
    }
    auto hits = index->vector_search(query, 3);
    ASSERT_TRUE(hits.ok()) << hits.err().message;
    ASSERT_EQ(hits->size(), 3U);
    EXPECT_EQ((*hits)[0].document_id, "b");
    EXPECT_EQ((*hits)[0].document_name, "b.md");
    EXPECT_EQ((*hits)[0].position, 3);
    EXPECT_EQ((*hits)[0].offset, 300);
    EXPECT_EQ((*hits)[0].text, "b chunk 3 ");
    EXPECT_NEAR((*hits)[0].score, 1.0, 1e-5);
    EXPECT_GE((*hits)[0].score, (*hits)[1].score);

    // Replacing b: its old chunks are gone, the new ones are found.
    auto b2 = document("b", 2, "replaced");
    ASSERT_EQ(*index->add_document("b", "b2.md", b2), 2U);
    hits = index->vector_search(b[3].embedding, 10);
    ASSERT_TRUE(hits.ok());
    EXPECT_EQ(hits->size(), 7U);
    for (const auto &h : *hits) {
        EXPECT_TRUE(h.document_id == "a" || h.text.find("replaced") != std::string::npos) << h.text;
    }

    EXPECT_EQ(*index->remove_document("a"), 5U);
    EXPECT_EQ(*index->remove_document("a"), 0U);
    EXPECT_FALSE(index->has_document("a"));
    hits = index->vector_search(a[0].embedding, 10);
    ASSERT_TRUE(hits.ok());
    EXPECT_EQ(documents_of(*hits), std::set<std::string>{"b"});
    const auto stats = index->stats();
    EXPECT_EQ(stats.documents, 1U);
    EXPECT_EQ(stats.chunks, 2U);
    EXPECT_EQ(stats.graph_deleted, 10U);
}

TEST_F(RetrievalIndex, many_deletions_compact_the_graph) {
    auto index = open();
    ASSERT_TRUE(index);
    ASSERT_TRUE(index->add_document("keep", "", document("keep", 10)).ok());
    ASSERT_TRUE(index->add_document("big", "", document("big", 1100)).ok());
    ASSERT_EQ(*index->remove_document("big"), 1100U);
    const auto stats = index->stats();
    EXPECT_EQ(stats.graph_deleted, 0U) << "over 1024 deleted and more than the live ones: rebuilt";
    EXPECT_EQ(stats.graph_elements, 10U);
    EXPECT_EQ(documents_of(*index->vector_search(random_vector(), 20)), std::set<std::string>{"keep"});
}

TEST_F(RetrievalIndex, filters_by_document_exactly_and_through_the_graph) {
    for (const size_t exact : {size_t{4096}, size_t{0}}) {
        index_options opts;
        opts.exact_search_chunks = exact; // 0: every filtered search goes through the graph
        auto index               = open(opts);
        ASSERT_TRUE(index);
        for (int d = 0; d < 10; ++d) {
            const auto id = "doc" + std::to_string(d);
            ASSERT_TRUE(index->add_document(id, id, document(id, 30)).ok());
        }
        const auto q    = random_vector();
        auto       hits = index->vector_search(q, 10, search_filter{{"doc3", "doc7", "missing"}});
        ASSERT_TRUE(hits.ok()) << hits.err().message;
        EXPECT_EQ(hits->size(), 10U);
        EXPECT_EQ(documents_of(*hits), (std::set<std::string>{"doc3", "doc7"}));
        // The same ten as an exact search over those sixty chunks.
        auto all = index->vector_search(q, 300);
        ASSERT_TRUE(all.ok());
        std::vector<int64_t> expected;
        for (const auto &h : *all) {
            if ((h.document_id == "doc3" || h.document_id == "doc7") && expected.size() < 10) {
                expected.push_back(h.chunk_id);
            }
        }
        std::vector<int64_t> got;
        for (const auto &h : *hits) {
            got.push_back(h.chunk_id);
        }
        EXPECT_EQ(got, expected);
        EXPECT_TRUE(index->vector_search(q, 5, search_filter{{"missing"}})->empty());
        index.reset();
        std::filesystem::remove_all(dir_);
    }
}

TEST_F(RetrievalIndex, recall_against_exact_search_on_a_small_set) {
    auto index = open();
    ASSERT_TRUE(index);
    std::vector<std::vector<float>> vectors;
    for (int d = 0; d < 20; ++d) {
        auto chunks = document("d" + std::to_string(d), 50);
        for (const auto &c : chunks) {
            auto v = c.embedding;
            normalize(v);
            vectors.push_back(v);
        }
        ASSERT_TRUE(index->add_document("d" + std::to_string(d), "", chunks).ok());
    }
    size_t found = 0, wanted = 0;
    for (int q = 0; q < 50; ++q) {
        auto query = random_vector();
        auto unit  = query;
        normalize(unit);
        std::vector<std::pair<float, size_t>> exact;
        for (size_t i = 0; i < vectors.size(); ++i) {
            exact.emplace_back(dot_product(unit.data(), vectors[i].data(), dim), i);
        }
        std::sort(exact.rbegin(), exact.rend());
        auto hits = index->vector_search(query, 10);
        ASSERT_TRUE(hits.ok());
        std::set<std::string> got;
        for (const auto &h : *hits) {
            got.insert(h.document_id + "/" + std::to_string(h.position));
        }
        for (size_t i = 0; i < 10; ++i) {
            const size_t v = exact[i].second;
            found += got.count("d" + std::to_string(v / 50) + "/" + std::to_string(v % 50));
            ++wanted;
        }
    }
    EXPECT_GE(static_cast<double>(found) / static_cast<double>(wanted), 0.95);
}

TEST_F(RetrievalIndex, keyword_search_ranks_by_bm25_and_survives_hostile_queries) {
    auto index = open();
    ASSERT_TRUE(index);
    std::vector<chunk_input> chunks{
        {"The quick brown fox jumps over the lazy dog.", random_vector(), 0},
        {"Foxes are foxes: a fox, another fox and more foxes.", random_vector(), 50},
        {"Nothing to see here; NEAR OR AND NOT are plain words.", random_vector(), 100},
    };
    ASSERT_TRUE(index->add_document("f", "f.txt", chunks).ok());
    auto hits = index->keyword_search("fox", 10);
    ASSERT_TRUE(hits.ok()) << hits.err().message;
    ASSERT_EQ(hits->size(), 2U);
    EXPECT_EQ((*hits)[0].position, 1) << "more occurrences of the (stemmed) term rank first";
    EXPECT_GT((*hits)[0].score, (*hits)[1].score);

    for (const char *q : {"\"", "*", "NEAR(", "OR", "fox OR", "\"unbalanced fox", "AND NOT", "col:fox", "fox*", "(fox",
                          "^fox", "+-", "\x01\x02", "caf\xC3", "NEAR(fox dog, 1)"}) {
        auto r = index->keyword_search(std::string(q), 5);
        EXPECT_TRUE(r.ok()) << q << ": " << r.err().message;
    }
    EXPECT_EQ(index->keyword_search("OR", 5)->size(), 1U) << "OR is a word to match, not an operator";
    // Three phrases, "near fox", "dog" and "1": only the first chunk has one of them.
    EXPECT_EQ(index->keyword_search("NEAR(fox dog, 1)", 5)->size(), 1U);
    EXPECT_TRUE(index->keyword_search("   ", 5)->empty());
    EXPECT_EQ(index->keyword_search("fox", 5, search_filter{{"other"}})->size(), 0U);
    EXPECT_EQ(index->keyword_search("fox", 5, search_filter{{"f"}})->size(), 2U);
    EXPECT_FALSE(index->keyword_search("fox", 0).ok());
    EXPECT_FALSE(index->keyword_search(std::string(5000, 'a'), 5).ok());
}

TEST_F(RetrievalIndex, hybrid_fuses_both_rankings_and_applies_the_reranker) {
    auto index = open();
    ASSERT_TRUE(index);
    auto chunks       = document("h", 20);
    chunks[4].text    = "the zebra is a striped animal";
    chunks[9].text    = "zebra crossing";
    const auto target = chunks[4].embedding;
    ASSERT_TRUE(index->add_document("h", "h.txt", chunks).ok());

    hybrid_options opts;
    opts.k    = 5;
    auto hits = index->hybrid_search("zebra animal", target, opts);
    ASSERT_TRUE(hits.ok()) << hits.err().message;
    ASSERT_EQ(hits->size(), 5U);
    EXPECT_EQ((*hits)[0].position, 4);
    EXPECT_DOUBLE_EQ((*hits)[0].score, 1.0) << "first in both rankings";
    for (const auto &h : *hits) {
        EXPECT_GE(h.score, 0.0);
        EXPECT_LE(h.score, 1.0);
    }

    // The reranker's order wins: it prefers "zebra crossing".
    opts.rerank = [](const std::string &, const std::vector<std::string> &texts) -> result<std::vector<double>> {
        std::vector<double> s;
        s.reserve(texts.size());
        for (const auto &t : texts) {
            s.push_back(t == "zebra crossing" ? 0.9 : 0.1);
        }
        return s;
    };
    opts.score_threshold = 0.5;
    hits                 = index->hybrid_search("zebra animal", target, opts);
    ASSERT_TRUE(hits.ok());
    ASSERT_EQ(hits->size(), 1U);
    EXPECT_EQ((*hits)[0].position, 9);
    EXPECT_DOUBLE_EQ((*hits)[0].score, 0.9);

    opts.rerank = [](const std::string &, const std::vector<std::string> &) -> result<std::vector<double>> {
        return std::vector<double>{0.5};
    };
    EXPECT_FALSE(index->hybrid_search("zebra", target, opts).ok()) << "one score for twenty texts";
    opts.rerank = [](const std::string &, const std::vector<std::string> &texts) -> result<std::vector<double>> {
        return std::vector<double>(texts.size(), std::nan(""));
    };
    EXPECT_FALSE(index->hybrid_search("zebra", target, opts).ok());
}

TEST_F(RetrievalIndex, bad_input_is_refused_with_the_field_named) {
    index_options opts;
    opts.max_chunks = 8;
    auto index      = open(opts);
    ASSERT_TRUE(index);
    auto chunks                = document("x", 2);
    chunks[1].embedding.back() = std::nanf("");
    EXPECT_EQ(index->add_document("x", "", chunks).err().param, "chunks[1].embedding");
    chunks              = document("x", 2);
    chunks[0].embedding = std::vector<float>(dim, 0.0F);
    EXPECT_EQ(index->add_document("x", "", chunks).err().param, "chunks[0].embedding");
    chunks = document("x", 2);
    chunks[1].embedding.pop_back();
    EXPECT_NE(index->add_document("x", "", chunks).err().message.find("15 dimensions"), std::string::npos);
    chunks         = document("x", 2);
    chunks[0].text = "bad \xFF";
    EXPECT_EQ(index->add_document("x", "", chunks).err().param, "chunks[0].text");
    EXPECT_FALSE(index->add_document("", "", document("x", 1)).ok());
    EXPECT_FALSE(index->add_document(std::string(300, 'i'), "", document("x", 1)).ok());
    EXPECT_EQ(index->add_document("y", "", document("y", 9)).err().code, "index_full");
    EXPECT_FALSE(index->has_document("x"));
    EXPECT_FALSE(index->vector_search(std::vector<float>(3, 1.0F), 1).ok());
    EXPECT_FALSE(index->vector_search(random_vector(), 1001).ok());
    search_filter many;
    many.document_ids.assign(1001, "d");
    EXPECT_NE(index->vector_search(random_vector(), 1, many).err().message.find("1000"), std::string::npos);

    // A folder made for 16 dimensions refuses to open for 32.
    index.reset();
    index_options other;
    other.dimension = 32;
    auto reopened   = document_index::open(dir_, other);
    ASSERT_FALSE(reopened.ok());
    EXPECT_NE(reopened.err().message.find("16-dimensional"), std::string::npos);
}

TEST_F(RetrievalIndex, persists_across_reopening_without_a_rebuild) {
    std::vector<float> probe;
    int64_t            probe_id = 0;
    {
        auto index = open();
        ASSERT_TRUE(index);
        for (int d = 0; d < 5; ++d) {
            auto chunks = document("p" + std::to_string(d), 10, "persisted");
            if (d == 2) {
                probe = chunks[6].embedding;
            }
            ASSERT_TRUE(index->add_document("p" + std::to_string(d), "name", chunks).ok());
        }
        ASSERT_TRUE(index->remove_document("p4").ok());
        ASSERT_FALSE(index->save().has_value());
        EXPECT_FALSE(index->stats().dirty);
        probe_id = (*index->vector_search(probe, 1))[0].chunk_id;
        ASSERT_TRUE(index->add_document("p5", "late", document("p5", 3)).ok()); // saved by the destructor
    }
    auto index = open(index_options{});
    ASSERT_TRUE(index);
    const auto stats = index->stats();
    EXPECT_FALSE(stats.rebuilt_at_open) << stats.rebuild_reason;
    EXPECT_EQ(stats.documents, 5U);
    EXPECT_EQ(stats.chunks, 43U);
    auto hits = index->vector_search(probe, 1);
    ASSERT_TRUE(hits.ok());
    EXPECT_EQ((*hits)[0].chunk_id, probe_id);
    EXPECT_EQ((*hits)[0].document_id, "p2");
    EXPECT_EQ(index->keyword_search("persisted", 100)->size(), 40U);
}

TEST_F(RetrievalIndex, a_corrupt_truncated_stale_or_missing_index_file_is_rebuilt) {
    std::vector<float> probe;
    {
        auto index = open();
        ASSERT_TRUE(index);
        for (int d = 0; d < 4; ++d) {
            auto chunks = document("c" + std::to_string(d), 25);
            if (d == 1) {
                probe = chunks[7].embedding;
            }
            ASSERT_TRUE(index->add_document("c" + std::to_string(d), "", chunks).ok());
        }
    }
    const auto file              = dir_ / "index.hnsw";
    const auto size              = std::filesystem::file_size(file);
    auto       damage_and_reopen = [&](const std::function<void()> &damage, const std::string &reason) {
        damage();
        auto index = open();
        ASSERT_TRUE(index);
        const auto stats = index->stats();
        EXPECT_TRUE(stats.rebuilt_at_open);
        EXPECT_NE(stats.rebuild_reason.find(reason), std::string::npos) << stats.rebuild_reason;
        EXPECT_EQ(stats.chunks, 100U);
        auto hits = index->vector_search(probe, 1);
        ASSERT_TRUE(hits.ok());
        EXPECT_EQ((*hits)[0].document_id, "c1");
        EXPECT_EQ((*hits)[0].position, 7);
        index.reset();
        // The rebuild saved a good file again: the next open loads it.
        auto again = open();
        ASSERT_TRUE(again);
        EXPECT_FALSE(again->stats().rebuilt_at_open);
    };
    damage_and_reopen(
        [&] {
            std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
            f.seekp(static_cast<std::streamoff>(size / 2));
            f.write("\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 8);
        },
        "checksum");
    damage_and_reopen([&] { std::filesystem::resize_file(file, size / 3); }, "checksum");
    damage_and_reopen(
        [&] {
            std::ofstream f(file, std::ios::binary | std::ios::trunc);
            std::mt19937  garbage(1);
            for (int i = 0; i < 4096; ++i) {
                f.put(static_cast<char>(garbage()));
            }
        },
        "checksum");
    damage_and_reopen([&] { std::filesystem::remove(file); }, "cannot be opened");

    // Stale: a file saved before the last change, put back after it (a crash between a write and
    // the next save leaves the same state).
    std::filesystem::copy_file(file, dir_ / "old.hnsw");
    {
        auto index = open();
        ASSERT_TRUE(index->add_document("c9", "", document("c9", 5)).ok());
    }
    std::filesystem::copy_file(dir_ / "old.hnsw", file, std::filesystem::copy_options::overwrite_existing);
    auto index = open();
    ASSERT_TRUE(index);
    EXPECT_TRUE(index->stats().rebuilt_at_open);
    EXPECT_EQ(index->stats().chunks, 105U);
    EXPECT_TRUE(index->has_document("c9"));
}

TEST_F(RetrievalIndex, a_file_with_a_matching_checksum_but_a_bad_structure_is_refused) {
    // The checksum guards against damage; the structural checks guard hnswlib even when the
    // checksum was recorded for a bad file.
    std::filesystem::create_directories(dir_);
    const auto        file = dir_ / "bad.hnsw";
    std::vector<char> bytes(96 + 100, 0);
    const size_t      huge = size_t{1} << 40;
    std::memcpy(bytes.data() + 16, &huge, sizeof huge); // cur_element_count
    std::ofstream(file, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    const auto sha = sha256_file(file);
    ASSERT_TRUE(sha.ok());
    auto loaded = hnsw_index::load(file, dim, hnsw_params{}, *sha, 10);
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.err().code, "index_corrupt");

    // A real file, loaded with the right and the wrong expectations.
    auto index = hnsw_index::create(dim, hnsw_params{}, 0);
    ASSERT_TRUE(index.ok());
    for (uint64_t i = 1; i <= 50; ++i) {
        auto v = random_vector();
        normalize(v);
        ASSERT_FALSE((*index)->add(i, v.data()).has_value());
    }
    EXPECT_TRUE((*index)->add(7, random_vector().data()).has_value()) << "a label is never reused";
    const auto saved = (*index)->save(dir_ / "good.hnsw");
    ASSERT_TRUE(saved.ok()) << saved.err().message;
    EXPECT_TRUE(hnsw_index::load(dir_ / "good.hnsw", dim, hnsw_params{}, *saved, 50).ok());
    EXPECT_FALSE(hnsw_index::load(dir_ / "good.hnsw", dim, hnsw_params{}, *saved, 49).ok());
    EXPECT_FALSE(hnsw_index::load(dir_ / "good.hnsw", dim * 2, hnsw_params{}, *saved, 50).ok());
    hnsw_params other_m;
    other_m.m = 8;
    EXPECT_FALSE(hnsw_index::load(dir_ / "good.hnsw", dim, other_m, *saved, 50).ok());
}

TEST_F(RetrievalIndex, searches_run_concurrently_with_writes) {
    auto index = open();
    ASSERT_TRUE(index);
    ASSERT_TRUE(index->add_document("seed", "", document("seed", 50, "alpha")).ok());
    std::vector<std::vector<chunk_input>> docs;
    docs.reserve(20);
    for (int d = 0; d < 20; ++d) {
        docs.push_back(document("w" + std::to_string(d), 10, "alpha"));
    }
    std::vector<std::vector<float>> queries;
    queries.reserve(4);
    for (int q = 0; q < 4; ++q) {
        queries.push_back(random_vector());
    }
    std::atomic<int>         failures{0};
    std::atomic<bool>        done{false};
    std::vector<std::thread> readers;
    readers.reserve(4);
    for (int t = 0; t < 4; ++t) {
        readers.emplace_back([&, t] {
            while (!done) {
                const bool ok = index->vector_search(queries[static_cast<size_t>(t)], 5).ok() &&
                                index->keyword_search("alpha", 5).ok() &&
                                index->hybrid_search("alpha chunk", queries[static_cast<size_t>(t)], {}).ok();
                failures += ok ? 0 : 1;
            }
        });
    }
    for (int d = 0; d < 20; ++d) {
        ASSERT_TRUE(index->add_document("w" + std::to_string(d), "", docs[static_cast<size_t>(d)]).ok());
        if (d % 5 == 4) {
            ASSERT_TRUE(index->remove_document("w" + std::to_string(d - 2)).ok());
            ASSERT_FALSE(index->save().has_value());
        }
    }
    done = true;
    for (auto &r : readers) {
        r.join();
    }
    EXPECT_EQ(failures, 0);
    EXPECT_EQ(index->stats().chunks, 50U + 200U - 40U);
}

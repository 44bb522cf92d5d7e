// /v1/embeddings and /v1/ranking request parsing (every input form, every limit and error) and
// the response encodings (base64 float32, the embeddings body).

#include "api/embeddings_schema.h"
#include "api/errors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

using namespace inferbox;
using json = nlohmann::json;

namespace {

result<embedding_request> parse_emb(const char *body, int32_t max_inputs = 4) {
    return parse_embedding_request(json::parse(body), embedding_limits{max_inputs});
}

result<ranking_request> parse_rank(const char *body, int32_t max_inputs = 4) {
    return parse_ranking_request(json::parse(body), embedding_limits{max_inputs});
}

struct bad_case {
    const char *body;
    const char *param;
    const char *message; // substring
};

// Decodes standard base64 (test helper, independent of the encoder under test).
std::vector<unsigned char> unbase64(const std::string &s) {
    auto val = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') {
            return c - 'A';
        }
        if (c >= 'a' && c <= 'z') {
            return c - 'a' + 26;
        }
        if (c >= '0' && c <= '9') {
            return c - '0' + 52;
        }
        return c == '+' ? 62 : 63;
    };
    std::vector<unsigned char> out;
    uint32_t                   acc = 0;
    int                        n   = 0;
    for (char c : s) {
        if (c == '=') {
            break;
        }
        acc = (acc << 6) | static_cast<uint32_t>(val(c));
        n += 6;
        if (n >= 8) {
            n -= 8;
            out.push_back(static_cast<unsigned char>((acc >> n) & 0xFF));
        }
    }
    return out;
}

} // namespace

TEST(EmbeddingRequest, AStringIsOneInput) {
    auto r = parse_emb(R"({"input":"hello","model":"m"})");
    ASSERT_TRUE(r) << r.err().message;
    ASSERT_EQ(r->inputs.size(), 1u);
    EXPECT_EQ(std::get<std::string>(r->inputs[0]), "hello");
    EXPECT_EQ(r->model, "m");
    EXPECT_EQ(r->encoding, embedding_encoding::float32);
    EXPECT_FALSE(r->dimensions);
    EXPECT_EQ(r->truncate, truncate_mode::none);
    EXPECT_EQ(r->input_type, "");
}

TEST(EmbeddingRequest, AnArrayOfStrings) {
    auto r = parse_emb(R"({"input":["a","b","c"]})");
    ASSERT_TRUE(r) << r.err().message;
    ASSERT_EQ(r->inputs.size(), 3u);
    EXPECT_EQ(std::get<std::string>(r->inputs[2]), "c");
}

TEST(EmbeddingRequest, ATokenArrayIsOneInput) {
    auto r = parse_emb(R"({"input":[1,403,407]})");
    ASSERT_TRUE(r) << r.err().message;
    ASSERT_EQ(r->inputs.size(), 1u);
    EXPECT_EQ(std::get<std::vector<token_id>>(r->inputs[0]), (std::vector<token_id>{1, 403, 407}));
}

TEST(EmbeddingRequest, AnArrayOfTokenArrays) {
    auto r = parse_emb(R"({"input":[[1,2],[3],[2147483647]]})");
    ASSERT_TRUE(r) << r.err().message;
    ASSERT_EQ(r->inputs.size(), 3u);
    EXPECT_EQ(std::get<std::vector<token_id>>(r->inputs[1]), (std::vector<token_id>{3}));
    EXPECT_EQ(std::get<std::vector<token_id>>(r->inputs[2]), (std::vector<token_id>{2147483647}));
}

TEST(EmbeddingRequest, OptionsAreRead) {
    auto r = parse_emb(
        R"({"input":"x","encoding_format":"base64","dimensions":16,"truncate":"END","input_type":"query","user":"u"})");
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(r->encoding, embedding_encoding::base64);
    EXPECT_EQ(r->dimensions, 16);
    EXPECT_EQ(r->truncate, truncate_mode::end);
    EXPECT_EQ(r->input_type, "query");
    EXPECT_EQ(r->user, "u");
    auto s = parse_emb(R"({"input":"x","truncate":"start","input_type":"passage","dimensions":2.0,
                          "encoding_format":"float","model":null})");
    ASSERT_TRUE(s) << s.err().message;
    EXPECT_EQ(s->truncate, truncate_mode::start);
    EXPECT_EQ(s->input_type, "passage");
    EXPECT_EQ(s->dimensions, 2);
    EXPECT_EQ(s->encoding, embedding_encoding::float32);
    auto n = parse_emb(R"({"input":"x","truncate":"NONE"})");
    ASSERT_TRUE(n);
    EXPECT_EQ(n->truncate, truncate_mode::none);
}

TEST(EmbeddingRequest, TheInputLimitAppliesToEveryArrayForm) {
    EXPECT_TRUE(parse_emb(R"({"input":["a","b","c","d"]})"));
    EXPECT_TRUE(parse_emb(R"({"input":[1,2,3,4,5,6,7,8]})")); // one input of 8 tokens
    for (const char *body : {R"({"input":["a","b","c","d","e"]})", R"({"input":[[1],[2],[3],[4],[5]]})"}) {
        auto r = parse_emb(body);
        ASSERT_FALSE(r) << body;
        EXPECT_EQ(r.err().param, "input");
        EXPECT_NE(r.err().message.find("has 5 entries; the limit is 4"), std::string::npos) << r.err().message;
    }
}

TEST(EmbeddingRequest, ErrorsNameTheParam) {
    const bad_case cases[] = {
        {R"({})", "input", "input is required"},
        {R"({"input":null})", "input", "input is required"},
        {R"({"input":""})", "input", "input is an empty string"},
        {R"({"input":[]})", "input", "input is an empty array"},
        {R"({"input":["a",""]})", "input", "input[1] is an empty string"},
        {R"({"input":[[1],[]]})", "input", "input[1] is an empty token array"},
        {R"({"input":[[]]})", "input", "input[0] is an empty token array"},
        {R"({"input":5})", "input", "input must be a string or an array, got number"},
        {R"({"input":{"a":1}})", "input", "got object"},
        {R"({"input":["a",1]})", "input", "input[1] is number"},
        {R"({"input":["a",["b"]]})", "input", "input[1] is array"},
        {R"({"input":[[1],"a"]})", "input", "input[1] is string"},
        {R"({"input":[true]})", "input", "input[0] is boolean"},
        {R"({"input":[1,-2]})", "input", "token id -2, outside [0, 2^31)"},
        {R"({"input":[1,2147483648]})", "input", "token id 2147483648"},
        {R"({"input":[1,1.5]})", "input", "element 1 is number"},
        {R"({"input":[[1,"x"]]})", "input", "input[0] must hold only integer token ids"},
        {R"({"input":"x","encoding_format":"int8"})", "encoding_format", "\"float\" or \"base64\"; got \"int8\""},
        {R"({"input":"x","encoding_format":1})", "encoding_format", "got number"},
        {R"({"input":"x","dimensions":0})", "dimensions", "between 1 and"},
        {R"({"input":"x","dimensions":-3})", "dimensions", "between 1 and"},
        {R"({"input":"x","dimensions":1.5})", "dimensions", "integer"},
        {R"({"input":"x","dimensions":"8"})", "dimensions", "integer"},
        {R"({"input":"x","dimensions":1e300})", "dimensions", "between 1 and"},
        {R"({"input":"x","truncate":"MIDDLE"})", "truncate", "\"NONE\", \"START\", \"END\"; got \"MIDDLE\""},
        {R"({"input":"x","truncate":true})", "truncate", "got boolean"},
        {R"({"input":"x","input_type":"document"})", "input_type", "\"query\" or \"passage\"; got \"document\""},
        {R"({"input":"x","input_type":3})", "input_type", "got number"},
        {R"({"input":"x","model":7})", "model", "model must be a string"},
        {R"({"input":"x","user":[]})", "user", "user must be a string"},
    };
    for (const auto &c : cases) {
        auto r = parse_emb(c.body);
        ASSERT_FALSE(r) << c.body;
        EXPECT_EQ(r.err().kind, error_kind::invalid_request) << c.body;
        EXPECT_EQ(r.err().param, c.param) << c.body;
        EXPECT_NE(r.err().message.find(c.message), std::string::npos) << c.body << " -> " << r.err().message;
        EXPECT_EQ(map_error(r.err().kind).status, 400u);
    }
}

TEST(RankingRequest, NimShape) {
    auto r = parse_rank(R"({"model":"m","query":{"text":"q"},"passages":[{"text":"a"},{"text":"b"}],
                           "truncate":"END"})");
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(r->model, "m");
    EXPECT_EQ(r->query, "q");
    EXPECT_EQ(r->passages, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(r->truncate, truncate_mode::end);
}

TEST(RankingRequest, ErrorsNameTheParam) {
    const bad_case cases[] = {
        {R"({"passages":[{"text":"a"}]})", "query", "query must be an object"},
        {R"({"query":"q","passages":[{"text":"a"}]})", "query", "query must be an object"},
        {R"({"query":{"text":""},"passages":[{"text":"a"}]})", "query", "query.text is an empty string"},
        {R"({"query":{"text":1},"passages":[{"text":"a"}]})", "query", "query must be an object"},
        {R"({"query":{"text":"q"}})", "passages", "non-empty array"},
        {R"({"query":{"text":"q"},"passages":[]})", "passages", "non-empty array"},
        {R"({"query":{"text":"q"},"passages":["a"]})", "passages", "passages[0] must be an object"},
        {R"({"query":{"text":"q"},"passages":[{"text":"a"},{"text":""}]})", "passages",
         "passages[1].text is an empty string"},
        {R"({"query":{"text":"q"},"passages":[{"text":"a"},{"text":"b"},{"text":"c"},{"text":"d"},{"text":"e"}]})",
         "passages", "has 5 entries; the limit is 4"},
        {R"({"query":{"text":"q"},"passages":[{"text":"a"}],"truncate":"BOTH"})", "truncate", "\"NONE\""},
        {R"({"query":{"text":"q"},"passages":[{"text":"a"}],"model":false})", "model", "must be a string"},
    };
    for (const auto &c : cases) {
        auto r = parse_rank(c.body);
        ASSERT_FALSE(r) << c.body;
        EXPECT_EQ(r.err().param, c.param) << c.body;
        EXPECT_NE(r.err().message.find(c.message), std::string::npos) << c.body << " -> " << r.err().message;
    }
}

TEST(Base64, Rfc4648Vectors) {
    const auto enc = [](const char *s) {
        return base64_encode(reinterpret_cast<const unsigned char *>(s), std::strlen(s));
    };
    EXPECT_EQ(enc(""), "");
    EXPECT_EQ(enc("f"), "Zg==");
    EXPECT_EQ(enc("fo"), "Zm8=");
    EXPECT_EQ(enc("foo"), "Zm9v");
    EXPECT_EQ(enc("foob"), "Zm9vYg==");
    EXPECT_EQ(enc("fooba"), "Zm9vYmE=");
    EXPECT_EQ(enc("foobar"), "Zm9vYmFy");
    const unsigned char high[] = {0xFF, 0xFE, 0xFD};
    EXPECT_EQ(base64_encode(high, 3), "//79");
}

TEST(Base64, EmbeddingsAreLittleEndianFloat32) {
    EXPECT_EQ(embedding_base64({1.0f}), "AACAPw=="); // 0x3F800000 little-endian: 00 00 80 3F
    const std::vector<float> v     = {0.25f, -1.5f, 3.1415927f, -0.0f, 1e-20f};
    const auto               bytes = unbase64(embedding_base64(v));
    ASSERT_EQ(bytes.size(), v.size() * 4);
    for (size_t i = 0; i < v.size(); ++i) {
        uint32_t bits = 0;
        for (size_t k = 0; k < 4; ++k) {
            bits |= static_cast<uint32_t>(bytes[i * 4 + k]) << (8 * k);
        }
        float back = 0;
        std::memcpy(&back, &bits, 4);
        EXPECT_EQ(std::signbit(back), std::signbit(v[i]));
        EXPECT_EQ(back, v[i]);
    }
}

TEST(EmbeddingResponse, OpenAIShapeWithExactFloats) {
    const std::vector<std::vector<float>> vs   = {{0.1f, -0.2f, 1e-7f}, {1.0f, 0.0f, -0.0f}};
    const auto                            body = embedding_response_body("mod\"el", vs, embedding_encoding::float32, 9);
    const auto                            j    = json::parse(body);
    EXPECT_EQ(j["object"], "list");
    EXPECT_EQ(j["model"], "mod\"el");
    EXPECT_EQ(j["usage"]["prompt_tokens"], 9);
    EXPECT_EQ(j["usage"]["total_tokens"], 9);
    ASSERT_EQ(j["data"].size(), 2u);
    for (size_t i = 0; i < vs.size(); ++i) {
        EXPECT_EQ(j["data"][i]["object"], "embedding");
        EXPECT_EQ(j["data"][i]["index"], i);
        ASSERT_EQ(j["data"][i]["embedding"].size(), vs[i].size());
        for (size_t k = 0; k < vs[i].size(); ++k) {
            // Shortest round-trip text: reads back as exactly the same float32.
            EXPECT_EQ(static_cast<float>(j["data"][i]["embedding"][k].get<double>()), vs[i][k]);
        }
    }
    EXPECT_NE(body.find("0.1,-0.2,1e-07"), std::string::npos) << body;
}

TEST(EmbeddingResponse, Base64Form) {
    const auto j = json::parse(embedding_response_body("m", {{1.0f}, {1.0f, 1.0f}}, embedding_encoding::base64, 2));
    EXPECT_EQ(j["data"][0]["embedding"], "AACAPw==");
    EXPECT_EQ(j["data"][1]["embedding"], "AACAPwAAgD8=");
}

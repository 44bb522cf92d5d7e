#include "api/errors.h"
#include "api/schema.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

using namespace inferbox;
using json = nlohmann::json;

namespace {

struct case_t {
    api_kind    kind;
    const char *body;
    const char *param;   // expected error param; nullptr = valid
    const char *message; // substring of the expected message
};

const case_t cases[] = {
    {api_kind::completion, R"({"prompt":"hi"})", nullptr, nullptr},
    {api_kind::completion, R"({"prompt":[1,2,3],"max_tokens":5,"temperature":0})", nullptr, nullptr},
    {api_kind::completion, R"({"prompt":["a","b"],"n":2,"stop":["x","y"],"seed":-5})", nullptr, nullptr},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"hi"}]})", nullptr, nullptr},
    {api_kind::chat,
     R"({"messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"logprobs":true,"top_logprobs":3})",
     nullptr, nullptr},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"hi"}],"temperature":null})", nullptr, nullptr},
    {api_kind::completion, R"({"prompt":"hi","temperature":5})", "temperature",
     "temperature must be between 0 and 2, got 5"},
    {api_kind::completion, R"({"prompt":"hi","temperature":"hot"})", "temperature",
     "must be a number between 0 and 2, got string"},
    {api_kind::completion, R"({"prompt":"hi","max_tokens":-1})", "max_tokens", "max_tokens must be between 1 and"},
    {api_kind::completion, R"({"prompt":"hi","max_tokens":0})", "max_tokens", "max_tokens must be between 1 and"},
    {api_kind::completion, R"({"prompt":"hi","max_tokens":2.5})", "max_tokens", "must be an integer"},
    {api_kind::completion, R"({"prompt":"hi","max_tokens":"10"})", "max_tokens", "got string"},
    {api_kind::completion, R"({"prompt":"hi","n":17})", "n", "n must be between 1 and 16, got 17"},
    {api_kind::completion, R"({"prompt":"hi","n":100000})", "n", "between 1 and 16"}, // --max-n's default
    {api_kind::completion, R"({"prompt":"hi","top_p":1.5})", "top_p", "top_p must be between 0 and 1"},
    {api_kind::completion, R"({"prompt":"hi","logprobs":6})", "logprobs", "logprobs must be between 0 and 5"},
    {api_kind::completion, R"({"prompt":"hi","stop":5})", "stop", "stop must be a string or an array of strings"},
    {api_kind::completion,
     R"({"prompt":"hi","stop":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]})", "stop",
     "the limit is 16"},
    {api_kind::completion, R"({"prompt":"hi","stream":"yes"})", "stream", "stream must be a boolean"},
    {api_kind::completion, R"({"prompt":"hi","logit_bias":{"abc":1}})", "logit_bias", "keys must be token ids"},
    {api_kind::completion, R"({"prompt":"hi","logit_bias":{"5":200}})", "logit_bias", "between -100 and 100"},
    {api_kind::completion, R"({})", "prompt", "prompt is required"},
    {api_kind::completion, R"({"prompt":[1,-2]})", "prompt", "outside [0, 2^31)"},
    {api_kind::completion, R"({"prompt":[1,"a"]})", "prompt", "must hold integers"},
    {api_kind::completion, R"({"prompt":{}})", "prompt", "got object"},
    {api_kind::completion, R"({"prompt":"hi","model":7})", "model", "model must be a string"},
    {api_kind::chat, R"({"messages":[]})", "messages", "non-empty array"},
    {api_kind::chat, R"({"messages":[{"role":"wizard","content":"x"}]})", "messages[0].role", "must be one of"},
    {api_kind::chat, R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", "messages[0].content",
     "only \"text\" parts"},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})", "top_logprobs",
     "requires logprobs"},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":21,"logprobs":true})",
     "top_logprobs", "between 0 and 20"},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"stream_options":[]})", "stream_options",
     "must be an object"},
    // Issue 24: a parameter that changes the answer is implemented or refused, never ignored.
    {api_kind::completion, R"({"prompt":"hi","best_of":1000})", "best_of",
     "best_of 1000 is not supported: inferbox does not rank extra candidates"},
    {api_kind::completion, R"({"prompt":"hi","n":2,"best_of":3})", "best_of", "set it equal to n (2)"},
    {api_kind::completion, R"({"prompt":"hi","best_of":"3"})", "best_of", "best_of string is not supported"},
    {api_kind::completion, R"({"prompt":"hi","n":2,"best_of":2})", nullptr, nullptr},
    {api_kind::completion, R"({"prompt":"hi","best_of":null})", nullptr, nullptr},
    // An empty model id is a client bug; a control character names no model.
    {api_kind::completion, R"({"prompt":"hi","model":""})", "model", "model is an empty string"},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"model":"a\u0000b"})", "model",
     "control character (code 0) at byte 1"},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"model":"tab\there"})", "model",
     "control character (code 9) at byte 3"},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"model":null})", nullptr, nullptr},
    // Every regex is validated the same way, wherever it sits.
    {api_kind::chat,
     R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object","properties":{"a":{"type":"string","pattern":"(("}}}}}})",
     "response_format.json_schema.schema", "the pattern at /properties/a/pattern is not a usable regular expression"},
    {api_kind::chat,
     R"({"messages":[{"role":"user","content":"x"}],"guided_json":{"type":"string","pattern":"[z-a]"}})", "guided_json",
     "the pattern at /pattern is not a usable regular expression: class range out of order"},
    {api_kind::completion, R"({"prompt":"x","guided_json":"{\"type\":\"string\",\"pattern\":\"a{2,1}\"}"})",
     "guided_json", "has min > max"},
    {api_kind::chat,
     R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"q":{"type":"string","pattern":"(("}}}}}]})",
     "tools[0].function.parameters", "not a usable regular expression"},
    {api_kind::completion, R"({"prompt":"x","guided_regex":"(abc"})", "guided_regex", "unterminated group"},
    // Continuing the final assistant message (vLLM's fields; mid-stream failover sends them).
    {api_kind::chat,
     R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"Once"}],"continue_final_message":true})",
     nullptr, nullptr},
    {api_kind::chat,
     R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"Once"}],"continue_final_message":true,"add_generation_prompt":false})",
     nullptr, nullptr},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"add_generation_prompt":true})", nullptr, nullptr},
    {api_kind::chat,
     R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"Once"}],"continue_final_message":true,"add_generation_prompt":true})",
     "add_generation_prompt", "cannot both be true"},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"add_generation_prompt":false})",
     "add_generation_prompt", "add_generation_prompt false is supported only with continue_final_message true"},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"continue_final_message":true})",
     "messages[0].role", "needs an assistant message last; messages[0] is a user message"},
    {api_kind::chat,
     R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}],"continue_final_message":true})",
     "messages[1].tool_calls", "cannot be continued"},
    {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"continue_final_message":"yes"})",
     "continue_final_message", "continue_final_message must be a boolean"},
};

} // namespace

TEST(schema, table_of_bodies_gives_exact_errors) {
    api_limits limits;
    for (const auto &c : cases) {
        auto body = parse_json_body(c.body, limits.max_json_depth);
        ASSERT_TRUE(body.ok()) << c.body;
        auto r = parse_request(c.kind, *body, limits);
        if (c.param == nullptr) {
            EXPECT_TRUE(r.ok()) << c.body << " -> " << (r.ok() ? "" : r.err().message);
            continue;
        }
        ASSERT_FALSE(r.ok()) << c.body;
        EXPECT_EQ(r.err().kind, error_kind::invalid_request) << c.body;
        EXPECT_EQ(r.err().param, c.param) << c.body;
        EXPECT_NE(r.err().message.find(c.message), std::string::npos) << c.body << " -> " << r.err().message;
    }
}

TEST(schema, values_reach_the_typed_request) {
    auto body = parse_json_body(
        R"({"prompt":["a",[5,6]],"max_tokens":7,"temperature":0,"top_k":3,"seed":4294967297,"stop":"x","n":2,"echo":true,"logprobs":2,"logit_bias":{"5":-100}})",
        64);
    auto r = parse_request(api_kind::completion, *body, api_limits{});
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->prompts.size(), 2u);
    EXPECT_EQ(std::get<std::string>(r->prompts[0]), "a");
    EXPECT_EQ(std::get<std::vector<token_id>>(r->prompts[1]), (std::vector<token_id>{5, 6}));
    EXPECT_EQ(*r->max_tokens, 7);
    EXPECT_EQ(r->sampling.temperature, 0.0f);
    EXPECT_EQ(r->sampling.top_k, 3);
    EXPECT_EQ(*r->sampling.seed, 1u); // low 32 bits of 2^32 + 1
    EXPECT_EQ(r->stop, std::vector<std::string>{"x"});
    EXPECT_EQ(r->n, 2);
    EXPECT_TRUE(r->echo);
    EXPECT_EQ(r->sampling.top_logprobs, 2);
    ASSERT_EQ(r->sampling.logit_bias.size(), 1u);
    EXPECT_EQ(r->sampling.logit_bias[0].first, 5);
}

// A field the body leaves out takes the default written in the request structs (schema.h,
// engine/types.h), not a second copy of it in the parser.
TEST(schema, omitted_fields_take_the_struct_defaults) {
    const api_request                       want;
    const sampling_params                  &ws       = want.sampling;
    const std::pair<api_kind, const char *> bodies[] = {
        {api_kind::completion, R"({"prompt":"x","stream_options":{}})"},
        {api_kind::chat, R"({"messages":[{"role":"user","content":"x"}],"stream_options":{}})"},
    };
    for (const auto &[kind, text] : bodies) {
        auto body = parse_json_body(text, 64);
        ASSERT_TRUE(body.ok()) << text;
        auto r = parse_request(kind, *body, api_limits{});
        ASSERT_TRUE(r.ok()) << text << " -> " << r.err().message;
        EXPECT_EQ(r->stream, want.stream) << text;
        EXPECT_EQ(r->include_usage, want.include_usage) << text;
        EXPECT_EQ(r->speculative, want.speculative) << text;
        EXPECT_EQ(r->n, want.n) << text;
        EXPECT_EQ(r->echo, want.echo) << text;
        EXPECT_EQ(r->parallel_tool_calls, want.parallel_tool_calls) << text;
        EXPECT_EQ(r->continue_final_message, want.continue_final_message) << text;
        EXPECT_FALSE(r->lora_scale.has_value()) << text;
        const sampling_params &s = r->sampling;
        EXPECT_EQ(s.ignore_eos, ws.ignore_eos) << text;
        EXPECT_EQ(s.temperature, ws.temperature) << text;
        EXPECT_EQ(s.top_p, ws.top_p) << text;
        EXPECT_EQ(s.top_k, ws.top_k) << text;
        EXPECT_EQ(s.min_p, ws.min_p) << text;
        EXPECT_EQ(s.presence_penalty, ws.presence_penalty) << text;
        EXPECT_EQ(s.frequency_penalty, ws.frequency_penalty) << text;
        EXPECT_EQ(s.repetition_penalty, ws.repetition_penalty) << text;
    }
}

TEST(schema, max_completion_tokens_wins_over_max_tokens) {
    auto body =
        parse_json_body(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":9,"max_completion_tokens":4})", 64);
    auto r = parse_request(api_kind::chat, *body, api_limits{});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r->max_tokens, 4);
}

TEST(schema, completions_validate_max_completion_tokens_too) {
    // Completions read max_completion_tokens as max_tokens, so it is validated there as well (a
    // fuzzer found a boolean reaching the conversion: an exception, not a 400).
    for (const char *text :
         {R"({"prompt":"x","max_completion_tokens":true})", R"({"prompt":"x","max_completion_tokens":0})"}) {
        auto body = parse_json_body(text, 64);
        auto r    = parse_request(api_kind::completion, *body, api_limits{});
        ASSERT_FALSE(r.ok()) << text;
        EXPECT_EQ(r.err().param, "max_completion_tokens") << text;
    }
    auto body = parse_json_body(R"({"prompt":"x","max_completion_tokens":7})", 64);
    auto r    = parse_request(api_kind::completion, *body, api_limits{});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r->max_tokens, 7);
}

TEST(schema, malformed_and_hostile_bodies) {
    EXPECT_EQ(parse_json_body("", 64).err().code, "invalid_json");
    EXPECT_NE(parse_json_body("{\"prompt\":", 64).err().message.find("not valid JSON"), std::string::npos);
    EXPECT_NE(parse_json_body("[1,2]", 64).err().message.find("must be a JSON object, got array"), std::string::npos);
    std::string deep = std::string(100, '[') + std::string(100, ']');
    deep             = "{\"a\":" + deep + "}";
    EXPECT_NE(parse_json_body(deep, 64).err().message.find("deeper than 64"), std::string::npos);
    EXPECT_FALSE(parse_json_body("{\"a\":NaN}", 64).ok());
    // Found by request_fuzz: a number beyond double's range made the detail re-parse throw
    // json::out_of_range, which escaped and terminated the server.
    auto huge = parse_json_body(R"({"prompt":"x","max_tokens":1e400})", 64);
    ASSERT_FALSE(huge.ok());
    EXPECT_EQ(huge.err().code, "invalid_json");
    EXPECT_NE(huge.err().message.find("number overflow"), std::string::npos) << huge.err().message;
}

TEST(errors, one_mapping_to_http) {
    EXPECT_EQ(map_error(error_kind::invalid_request).status, 400u);
    EXPECT_EQ(map_error(error_kind::not_found).status, 404u);
    EXPECT_EQ(map_error(error_kind::method_not_allowed).status, 405u);
    EXPECT_EQ(map_error(error_kind::payload_too_large).status, 413u);
    EXPECT_EQ(map_error(error_kind::overloaded).status, 429u);
    EXPECT_EQ(map_error(error_kind::unavailable).status, 503u);
    EXPECT_EQ(map_error(error_kind::internal).status, 500u);
    auto j = json::parse(error_body(error::invalid("bad", "temperature")));
    EXPECT_EQ(j["error"]["message"], "bad");
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    EXPECT_EQ(j["error"]["param"], "temperature");
    EXPECT_TRUE(j["error"]["code"].is_null());
}

// Routing (AIM) without servers: the backend spec, URLs, the OpenAI stream reader, the request
// serializer, the routing policy, prefix affinity and the failover backend over scripted backends.

#include "api/schema.h"
#include "backend/backend_spec.h"
#include "backend/failover.h"
#include "backend/http_client.h"
#include "backend/routing.h"
#include "backend/sse_reader.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <mutex>

namespace inferbox {
namespace {

using json = nlohmann::json;

// --- backend_spec --------------------------------------------------------------------------------

TEST(backend_spec, ParsesEveryKey) {
    auto s = parse_backend_spec("cloud = https://api.example.com/v1/ ; models=big, small=vendor/small-v2 ;"
                                "api-key-env=CLOUD_KEY;max-in-flight=16;connect-timeout-ms=250;"
                                "first-byte-timeout-ms=9000;idle-timeout-ms=700;probe-interval-ms=0;"
                                "failure-threshold=5;open-ms=1500;label.tier=cloud;label.region=eu");
    ASSERT_TRUE(s) << s.err().message;
    EXPECT_EQ(s->name, "cloud");
    EXPECT_EQ(s->url, "https://api.example.com/v1/");
    ASSERT_EQ(s->models.size(), 2U);
    EXPECT_EQ(s->models[0].id, "big");
    EXPECT_EQ(s->models[0].remote_id, "big");
    EXPECT_EQ(s->models[1].id, "small");
    EXPECT_EQ(s->models[1].remote_id, "vendor/small-v2");
    EXPECT_EQ(s->api_key_env, "CLOUD_KEY");
    EXPECT_EQ(s->max_in_flight, 16);
    EXPECT_EQ(s->connect_timeout.count(), 250);
    EXPECT_EQ(s->first_byte_timeout.count(), 9000);
    EXPECT_EQ(s->idle_timeout.count(), 700);
    EXPECT_EQ(s->probe_interval.count(), 0);
    EXPECT_EQ(s->failure_threshold, 5);
    EXPECT_EQ(s->open_time.count(), 1500);
    EXPECT_EQ(s->labels.at("tier"), "cloud");
    EXPECT_EQ(s->labels.at("region"), "eu");
}

TEST(backend_spec, RefusesWhatItCannotUseNamingTheEntry) {
    const std::pair<const char *, const char *> cases[] = {
        {"no-url-here", "expected NAME=URL first"},
        {"bad name=http://h", "a backend name is 1 to 64"},
        {"x=ftp://h", "must start with http:// or https://"},
        {"x=http://h;colour=blue", "unknown setting 'colour'"},
        {"x=http://h;max-in-flight=0", "max-in-flight must be an integer from 1"},
        {"x=http://h;idle-timeout-ms=soon", "idle-timeout-ms must be an integer"},
        {"x=http://h;models=a,=b", "needs an id"},
        {"x=http://h;api-key-env=A;api-key-file=/k", "not both"},
        {"x=http://h;justaword", "is not key=value"},
    };
    for (const auto &[text, expected] : cases) {
        auto s = parse_backend_spec(text);
        ASSERT_FALSE(s) << text;
        EXPECT_NE(s.err().message.find(expected), std::string::npos) << text << ": " << s.err().message;
        EXPECT_EQ(s.err().message.find("backend '"), 0U) << s.err().message;
    }
}

TEST(backend_spec, KeysComeFromTheEnvironmentOrAFileAndNeverAppearInErrors) {
    auto spec = parse_backend_spec("x=http://h;api-key-env=INFERBOX_UNIT_BACKEND_KEY");
    ASSERT_TRUE(spec);
    unsetenv("INFERBOX_UNIT_BACKEND_KEY");
    auto missing = resolve_backend_key(*spec);
    ASSERT_FALSE(missing);
    EXPECT_NE(missing.err().message.find("INFERBOX_UNIT_BACKEND_KEY, which is not set"), std::string::npos);
    setenv("INFERBOX_UNIT_BACKEND_KEY", "sk-secret", 1);
    auto key = resolve_backend_key(*spec);
    ASSERT_TRUE(key);
    EXPECT_EQ(*key, "sk-secret");
    unsetenv("INFERBOX_UNIT_BACKEND_KEY");

    const std::string file = ::testing::TempDir() + "/backend.key";
    std::ofstream(file) << "  sk-from-file \r\nsecond line\n";
    auto from_file = resolve_backend_key(*parse_backend_spec("x=http://h;api-key-file=" + file));
    ASSERT_TRUE(from_file);
    EXPECT_EQ(*from_file, "sk-from-file");
    std::ofstream(file) << "\n";
    auto empty = resolve_backend_key(*parse_backend_spec("x=http://h;api-key-file=" + file));
    ASSERT_FALSE(empty);
    EXPECT_NE(empty.err().message.find("is empty"), std::string::npos);
}

TEST(http_url, SplitsBaseUrls) {
    auto u = parse_http_url("https://api.example.com/v1/");
    ASSERT_TRUE(u);
    EXPECT_TRUE(u->tls);
    EXPECT_EQ(u->host, "api.example.com");
    EXPECT_EQ(u->port, "443");
    EXPECT_EQ(u->base_path, "/v1");
    auto v6 = parse_http_url("http://[::1]:8080");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->host, "::1");
    EXPECT_EQ(v6->port, "8080");
    EXPECT_EQ(v6->base_path, "");
    for (const char *bad : {"ftp://h", "http://", "http://h:0", "http://h:70000", "http://u:p@h/v1", "http://h/v1?x=1",
                            "http://[::1", "http://h:12ab"}) {
        EXPECT_FALSE(parse_http_url(bad)) << bad;
    }
}

// --- sse_reader ----------------------------------------------------------------------------------

std::vector<backend_event> read_all(sse_reader &r, const std::string &stream, size_t piece = 7) {
    std::vector<backend_event> out;
    for (size_t i = 0; i < stream.size(); i += piece) {
        r.feed(std::string_view(stream).substr(i, piece), out); // events split across reads
    }
    r.end(out);
    return out;
}

TEST(sse_reader, ReadsChatChunksAndHoldsTheFinishForTheUsage) {
    const std::string stream =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n"
        ": a comment line\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"length\"}]}\n\n"
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,"
        "\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n"
        "data: [DONE]\n\n";
    sse_reader r("b", /*chat=*/true, /*tools=*/false, 1);
    const auto evs = read_all(r, stream);
    ASSERT_EQ(evs.size(), 3U) << "the role chunk carries nothing";
    EXPECT_EQ(evs[0].content, "Hel");
    EXPECT_EQ(evs[1].content, "lo");
    EXPECT_EQ(evs[1].finish, finish_reason::none) << "the finish waits for the usage";
    EXPECT_EQ(evs[2].finish, finish_reason::length);
    EXPECT_EQ(evs[2].n_prompt, 7);
    EXPECT_EQ(evs[2].n_generated, 2);
    EXPECT_EQ(evs[2].n_cached, 3);
    EXPECT_TRUE(r.done());
    EXPECT_FALSE(r.failed());
}

TEST(sse_reader, ReadsToolCallsAndHandsOverTheWholeMessage) {
    const std::string stream =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":"
        "\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"q\\\"\"}}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
        "\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n"
        "data: [DONE]\n\n";
    sse_reader r("b", true, /*tools=*/true, 1);
    const auto evs = read_all(r, stream, 5);
    ASSERT_EQ(evs.size(), 3U);
    ASSERT_EQ(evs[0].calls.size(), 2U) << "the call is announced, then its first arguments";
    EXPECT_TRUE(evs[0].calls[0].first);
    EXPECT_EQ(evs[0].calls[0].id, "call_a");
    EXPECT_EQ(evs[0].calls[0].name, "get");
    EXPECT_EQ(evs[0].calls[1].arguments, "{\"q\"");
    EXPECT_EQ(evs[1].calls[0].arguments, ":1}");
    EXPECT_EQ(evs[2].finish, finish_reason::stop);
    ASSERT_TRUE(evs[2].message);
    ASSERT_EQ(evs[2].message->tool_calls.size(), 1U);
    EXPECT_EQ(evs[2].message->tool_calls[0].arguments, "{\"q\":1}");
}

TEST(sse_reader, ReadsCompletionsWithLogprobsForSeveralChoices) {
    const std::string stream =
        "data: {\"choices\":[{\"index\":1,\"text\":\"b\",\"logprobs\":{\"tokens\":[\"b\"],\"token_logprobs\":[-0.5],"
        "\"top_logprobs\":[{\"b\":-0.5}]}}]}\n\n"
        "data: {\"choices\":[{\"index\":0,\"text\":\"a\",\"finish_reason\":\"stop\"},"
        "{\"index\":1,\"text\":\"\",\"finish_reason\":\"stop\"}]}\n\n"
        "data: [DONE]\n\n";
    sse_reader r("b", /*chat=*/false, false, 2);
    const auto evs = read_all(r, stream);
    ASSERT_EQ(evs.size(), 4U);
    EXPECT_EQ(evs[0].choice, 1U);
    ASSERT_EQ(evs[0].logprobs.size(), 1U);
    EXPECT_FLOAT_EQ(evs[0].logprobs[0].logprob, -0.5f);
    EXPECT_EQ(evs[0].logprobs[0].top[0].first, "b");
    EXPECT_EQ(evs[1].content, "a");
    EXPECT_EQ(evs[2].choice, 0U);
    EXPECT_EQ(evs[3].choice, 1U);
    EXPECT_EQ(evs[3].finish, finish_reason::stop);
}

TEST(sse_reader, BadStreamsAreErrorsNamingTheBackend) {
    const std::pair<std::string, const char *> cases[] = {
        {"data: {not json}\n\n", "not a JSON object"},
        {"data: {\"error\":{\"message\":\"engine on fire\"}}\n\n", "engine on fire"},
        {"data: {\"choices\":[{\"index\":5,\"text\":\"x\"}]}\n\n", "names choice 5 of a request for 1"},
        {"data: {\"choices\":[{\"index\":0,\"text\":\"x\"}]}\n\n", "ended before choice 0 finished"},
        {"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":3}]}}]}\n\n", "skips to tool call 3"},
        // Found by sse_fuzz: a choice, or a tool call, that is not an object threw out of the reader.
        {"data: {\"choices\":[0],\"usage\":{\"prompt_tokens\":3}}\n\n", "a choice that is not a JSON object"},
        {"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[7]}}]}\n\n",
         "a tool call that is not a JSON object"},
    };
    for (const auto &[stream, expected] : cases) {
        sse_reader r("gpu-box", stream.find("delta") != std::string::npos, false, 1);
        const auto evs = read_all(r, stream);
        ASSERT_FALSE(evs.empty()) << stream;
        ASSERT_TRUE(evs.back().err) << stream;
        EXPECT_EQ(evs.back().err->kind, error_kind::upstream);
        EXPECT_NE(evs.back().err->message.find("backend 'gpu-box'"), std::string::npos);
        EXPECT_NE(evs.back().err->message.find(expected), std::string::npos) << evs.back().err->message;
        EXPECT_TRUE(r.failed());
    }
    // An event that never ends is bounded.
    sse_reader                 r("b", false, false, 1, /*max_event_bytes=*/64);
    std::vector<backend_event> out;
    r.feed(std::string(100, 'x'), out);
    ASSERT_EQ(out.size(), 1U);
    EXPECT_NE(out[0].err->message.find("exceeds 64 bytes"), std::string::npos);
}

// --- request_to_json ---------------------------------------------------------------------------

TEST(request_to_json, ParsingItBackGivesTheSameRequest) {
    const std::string text = R"({
        "model": "local-name", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
            "parameters": {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}}}],
        "tool_choice": "required", "parallel_tool_calls": false,
        "max_tokens": 33, "n": 2, "stop": ["\n\n", "END"], "temperature": 0.25, "top_p": 0.5, "top_k": 7,
        "min_p": 0.1, "repetition_penalty": 1.2, "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": 42,
        "logit_bias": {"5": -100}, "logprobs": true, "top_logprobs": 3, "user": "u1"})";
    api_limits        limits;
    key_order         order;
    auto              body = parse_json_body(text, 64, &order);
    ASSERT_TRUE(body);
    auto a = parse_request(api_kind::chat, *body, limits, &order);
    ASSERT_TRUE(a) << a.err().message;
    const std::string wire = request_to_json(*a, "remote-name");
    const json        j    = json::parse(wire);
    EXPECT_EQ(j["model"], "remote-name");
    EXPECT_EQ(j["stream"], true);
    EXPECT_EQ(j["stream_options"]["include_usage"], true);
    // Property order of a schema survives (the remote's grammar follows it).
    EXPECT_LT(wire.find("\"zeta\""), wire.find("\"alpha\""));
    auto b = parse_request(api_kind::chat, j, limits);
    ASSERT_TRUE(b) << b.err().message;
    EXPECT_EQ(b->model, "remote-name");
    ASSERT_EQ(b->messages.size(), 4U);
    EXPECT_EQ(b->messages[2].tool_calls[0].arguments, "{\"city\":\"Oslo\"}");
    EXPECT_EQ(b->messages[3].tool_call_id, "call_1");
    ASSERT_EQ(b->tools.size(), 1U);
    EXPECT_EQ(json::parse(b->tools[0].parameters), json::parse(a->tools[0].parameters));
    EXPECT_EQ(b->choice, tool_choice::required);
    EXPECT_FALSE(b->parallel_tool_calls);
    EXPECT_EQ(b->max_tokens, 33);
    EXPECT_EQ(b->n, 2);
    EXPECT_EQ(b->stop, a->stop);
    EXPECT_EQ(b->user, "u1");
    const auto &x = a->sampling, &y = b->sampling;
    EXPECT_FLOAT_EQ(y.temperature, x.temperature);
    EXPECT_FLOAT_EQ(y.top_p, x.top_p);
    EXPECT_EQ(y.top_k, x.top_k);
    EXPECT_FLOAT_EQ(y.min_p, x.min_p);
    EXPECT_FLOAT_EQ(y.repetition_penalty, x.repetition_penalty);
    EXPECT_FLOAT_EQ(y.presence_penalty, x.presence_penalty);
    EXPECT_FLOAT_EQ(y.frequency_penalty, x.frequency_penalty);
    EXPECT_EQ(y.seed, x.seed);
    EXPECT_EQ(y.logit_bias, x.logit_bias);
    EXPECT_EQ(y.top_logprobs, 3);
}

TEST(request_to_json, AContinuationAsksForTheFinalMessageToBeContinued) {
    api_limits limits;
    auto       a = parse_request(api_kind::chat, json::parse(R"({"messages": [{"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Once upon"}], "continue_final_message": true})"),
                                 limits);
    ASSERT_TRUE(a) << a.err().message;
    EXPECT_TRUE(a->continue_final_message);
    const json j = json::parse(request_to_json(*a, "m"));
    EXPECT_EQ(j["continue_final_message"], true);
    EXPECT_EQ(j["add_generation_prompt"], false) << "vLLM refuses continue_final_message with its default true";
    auto b = parse_request(api_kind::chat, j, limits);
    ASSERT_TRUE(b) << b.err().message;
    EXPECT_TRUE(b->continue_final_message);
    EXPECT_EQ(b->messages.back().content, "Once upon");

    a->continue_final_message = false;
    const json plain          = json::parse(request_to_json(*a, "m"));
    EXPECT_FALSE(plain.contains("continue_final_message")) << "OpenAI refuses fields it does not know";
    EXPECT_FALSE(plain.contains("add_generation_prompt"));
}

TEST(request_to_json, CompletionsConstraintsAndDefaultsRoundTrip) {
    api_limits limits;
    auto       a =
        parse_request(api_kind::completion, json::parse(R"({"prompt": ["Once", [1, 2, 3]], "echo": true, "logprobs": 2,
                                     "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                                     "schema": {"type": "object", "properties": {"b": {"type": "string"}}}}}})"),
                      limits);
    ASSERT_TRUE(a) << a.err().message;
    const json j = json::parse(request_to_json(*a, "m"));
    EXPECT_FALSE(j.contains("top_k")) << "extensions at their defaults are left out (OpenAI refuses them)";
    EXPECT_FALSE(j.contains("max_tokens")) << "unset stays unset: the remote applies its own default";
    auto b = parse_request(api_kind::completion, j, limits);
    ASSERT_TRUE(b) << b.err().message;
    ASSERT_EQ(b->prompts.size(), 2U);
    EXPECT_EQ(std::get<std::string>(b->prompts[0]), "Once");
    EXPECT_EQ(std::get<std::vector<token_id>>(b->prompts[1]), (std::vector<token_id>{1, 2, 3}));
    EXPECT_TRUE(b->echo);
    EXPECT_EQ(b->sampling.top_logprobs, 2);
    EXPECT_EQ(b->constraint.kind, constraint_kind::json_schema);
    EXPECT_EQ(json::parse(b->constraint.schema), json::parse(a->constraint.schema));

    auto g = parse_request(api_kind::completion, json::parse(R"({"prompt": "x", "guided_regex": "[0-9]+"})"), limits);
    ASSERT_TRUE(g) << g.err().message;
    auto g2 = parse_request(api_kind::completion, json::parse(request_to_json(*g, "m")), limits);
    ASSERT_TRUE(g2) << g2.err().message;
    EXPECT_EQ(g2->constraint.kind, constraint_kind::grammar);
    EXPECT_EQ(g2->constraint.gbnf, g->constraint.gbnf) << "the regex's grammar travels as nvext.guided_grammar";
}

// --- routing policy ----------------------------------------------------------------------------

std::vector<std::string> names(const route_order &o, const std::vector<candidate_load> &c) {
    std::vector<std::string> out;
    for (size_t i : o.order) {
        out.push_back(c[i].name);
    }
    return out;
}

using strings = std::vector<std::string>;

TEST(routing, LocalFirstSpillsOnlyWhenHereIsFullAndARemoteHasRoom) {
    std::vector<candidate_load> c = {{"local", true, true, 0}, {"b1", false, true, 5}, {"b2", false, true, 1}};
    auto                        o = order_candidates(route_policy::automatic, placement_pin::automatic, c, "", "m");
    EXPECT_EQ(names(o, c), (strings{"local", "b2", "b1"})) << "remotes by load";
    EXPECT_EQ(o.reason, "local");
    c[0].admissible = false;
    o               = order_candidates(route_policy::local_first, placement_pin::automatic, c, "", "m");
    EXPECT_EQ(names(o, c), (strings{"b2", "b1", "local"})) << "local stays as the last resort";
    EXPECT_EQ(o.reason, "overflow");
    c[1].admissible = c[2].admissible = false;
    o = order_candidates(route_policy::local_first, placement_pin::automatic, c, "", "m");
    EXPECT_EQ(names(o, c).front(), "local") << "nobody has room: no point leaving";
    EXPECT_EQ(o.reason, "local");
}

TEST(routing, PinsAndOnlyPoliciesNarrowTheCandidates) {
    const std::vector<candidate_load> c = {{"local", true, false, 9}, {"b1", false, true, 0}};
    auto o = order_candidates(route_policy::local_first, placement_pin::local_only, c, "", "m");
    EXPECT_EQ(names(o, c), (strings{"local"})) << "local-only never leaves, even when full";
    EXPECT_EQ(o.reason, "pinned");
    o = order_candidates(route_policy::automatic, placement_pin::remote_only, c, "", "m");
    EXPECT_EQ(names(o, c), (strings{"b1"}));
    o = order_candidates(route_policy::remote_only, placement_pin::automatic, c, "", "m");
    EXPECT_EQ(names(o, c), (strings{"b1"}));
    o = order_candidates(route_policy::remote_first, placement_pin::automatic, c, "", "m");
    EXPECT_EQ(names(o, c), (strings{"b1", "local"}));
    EXPECT_EQ(o.reason, "remote");
    // A pin the policy forbids leaves nothing: a clear error, not a silent widening.
    o = order_candidates(route_policy::remote_only, placement_pin::local_only, c, "", "tiny");
    EXPECT_TRUE(o.order.empty());
    ASSERT_TRUE(o.err);
    EXPECT_EQ(o.err->kind, error_kind::unavailable);
    EXPECT_NE(o.err->message.find("'tiny'"), std::string::npos);
    const std::vector<candidate_load> remote_only = {{"b1", false, true, 0}};
    o = order_candidates(route_policy::automatic, placement_pin::local_only, remote_only, "", "far");
    ASSERT_TRUE(o.err);
    EXPECT_NE(o.err->message.find("pinned local-only and the model is not on this server"), std::string::npos);
}

TEST(routing, BalancedPrefersTheLeastLoadedAndKeepsPrefixAffinityWithinReason) {
    std::vector<candidate_load> c = {{"b1", false, true, 3}, {"b2", false, true, 1}, {"b3", false, true, 2}};
    auto                        o = order_candidates(route_policy::balanced, placement_pin::automatic, c, "", "m");
    EXPECT_EQ(names(o, c), (strings{"b2", "b3", "b1"}));
    EXPECT_EQ(o.reason, "balanced");
    o = order_candidates(route_policy::balanced, placement_pin::automatic, c, "b1", "m");
    EXPECT_EQ(names(o, c).front(), "b1") << "2 more in flight than the least loaded: affinity still wins";
    EXPECT_EQ(o.reason, "affinity");
    c[0].in_flight = 4;
    o              = order_candidates(route_policy::balanced, placement_pin::automatic, c, "b1", "m");
    EXPECT_EQ(names(o, c).front(), "b2") << "a cache hit is not worth queueing behind a crowd";
    c[0].in_flight  = 1;
    c[0].admissible = false;
    o               = order_candidates(route_policy::balanced, placement_pin::automatic, c, "b1", "m");
    EXPECT_EQ(names(o, c).back(), "b1") << "a refusing backend goes last, affinity or not";
    const std::vector<candidate_load> two = {{"b1", false, true, 0}, {"b2", false, true, 0}};
    EXPECT_EQ(order_candidates(route_policy::automatic, placement_pin::automatic, two, "", "m").reason, "balanced");
}

TEST(routing, PoliciesAndPlacementsParse) {
    EXPECT_EQ(*parse_route_policy("remote-first"), route_policy::remote_first);
    EXPECT_FALSE(parse_route_policy("sideways"));
    EXPECT_EQ(*parse_placement("local-only", "p"), placement_pin::local_only);
    auto bad = parse_placement("elsewhere", "X-Inferbox-Placement");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.err().param, "X-Inferbox-Placement");
}

TEST(routing, RouteArgumentsParseWithAPullSource) {
    auto r = parse_route_arg("m=balanced");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->model, "m");
    EXPECT_EQ(r->policy, route_policy::balanced);
    EXPECT_TRUE(r->pull.empty());
    const std::string hash(64, 'A');
    r = parse_route_arg("tiny=local-first;pull=https://h/x.gguf?a=b;sha256=" + hash);
    ASSERT_TRUE(r) << r.err().message;
    EXPECT_EQ(r->pull, "https://h/x.gguf?a=b"); // a URL may hold '='
    EXPECT_EQ(r->sha256, std::string(64, 'a'));
    EXPECT_EQ(parse_route_arg("tiny=auto;pull=hf://o/r/f.gguf")->pull, "hf://o/r/f.gguf");

    const auto refused = [](const std::string &text, const std::string &says) {
        auto bad = parse_route_arg(text);
        ASSERT_FALSE(bad) << text;
        EXPECT_NE(bad.err().message.find(says), std::string::npos) << bad.err().message;
        EXPECT_NE(bad.err().message.find("--route"), std::string::npos) << bad.err().message;
    };
    refused("m", "expected MODEL=POLICY");
    refused("=local-first", "expected MODEL=POLICY");
    refused("m=", "expected MODEL=POLICY");
    refused("m=sideways", "unknown routing policy");
    refused("m=remote-only;pull=hf://o/r/f.gguf", "needs a local-first");
    refused("m=local-first;pull=", "'pull' needs a value");
    refused("m=local-first;pull=hf://o/r/f.gguf;sha256=abc", "64 hexadecimal digits");
    refused("m=local-first;sha256=" + hash, "add pull=REF");
    refused("m=local-first;mirror=x", "unknown setting 'mirror'");
}

TEST(affinity_table, RemembersBoundedMostRecentlyUsedFirst) {
    affinity_table t(2);
    t.remember(prefix_key("system: you are helpful\nuser: hi"), "b1");
    t.remember(prefix_key("other"), "b2");
    EXPECT_EQ(t.find(prefix_key("system: you are helpful\nuser: hi")), "b1"); // now the most recent
    t.remember(prefix_key("third"), "b3");                                    // evicts "other"
    EXPECT_EQ(t.size(), 2U);
    EXPECT_EQ(t.find(prefix_key("other")), "");
    EXPECT_EQ(t.find(prefix_key("third")), "b3");
    EXPECT_EQ(prefix_key(std::string(600, 'a') + "x"), prefix_key(std::string(600, 'a') + "y"))
        << "only the first 512 bytes count";
}

// --- failover_backend over scripted backends ---------------------------------------------------

class fake_stream final : public generation_stream {
  public:
    std::vector<backend_event> take() override {
        std::lock_guard lock(mu);
        return std::exchange(pending, {});
    }
    void cancel() override { cancelled = true; }
    void push(backend_event ev) {
        {
            std::lock_guard lock(mu);
            pending.push_back(std::move(ev));
        }
        notify();
    }
    std::mutex                 mu;
    std::vector<backend_event> pending;
    std::function<void()>      notify;
    bool                       cancelled = false;
};

class fake_backend final : public generation_backend {
  public:
    explicit fake_backend(std::string name) : name(std::move(name)) {}
    std::optional<error>    check(const api_request    &/*req*/) const override { return std::nullopt; }
    std::optional<error>    over_capacity(int32_t /*n*/) const override { return full; }
    result<backend_request> prepare(api_request req) const override {
        if (prepare_error) {
            return *prepare_error;
        }
        last_prepared = req;
        backend_request r;
        r.req = std::move(req);
        r.prompts.push_back({{}, name});
        return r;
    }
    result<std::shared_ptr<generation_stream>> submit(std::shared_ptr<const backend_request> req,
                                                      std::function<void()>                  notify) override {
        ++submits;
        EXPECT_EQ(req->prompts.at(0).echo_text, name) << "each candidate runs its own preparation";
        if (refuse) {
            return *refuse;
        }
        stream         = std::make_shared<fake_stream>();
        stream->notify = std::move(notify);
        return std::shared_ptr<generation_stream>(stream);
    }
    bool healthy() const override { return true; }

    std::string                  name;
    std::optional<error>         full, refuse, prepare_error;
    std::shared_ptr<fake_stream> stream;
    int                          submits = 0;
    mutable api_request          last_prepared; // what prepare() was last asked to run
};

struct failover_fixture : ::testing::Test {
    std::shared_ptr<fake_backend> a = std::make_shared<fake_backend>("a"), b = std::make_shared<fake_backend>("b");
    int                           notified = 0;

    std::shared_ptr<generation_stream> run(failover_backend &f, std::optional<error> *err = nullptr,
                                           const api_request &req = {}) {
        EXPECT_FALSE(f.check(req));
        if (auto full = f.over_capacity(1)) {
            if (err != nullptr) {
                *err = full;
            }
            return nullptr;
        }
        auto p = f.prepare(req);
        if (!p) {
            if (err != nullptr) {
                *err = p.err();
            }
            return nullptr;
        }
        auto s = f.submit(std::make_shared<const backend_request>(std::move(*p)), [this] { ++notified; });
        if (!s) {
            if (err != nullptr) {
                *err = s.err();
            }
            return nullptr;
        }
        return *s;
    }
};

backend_event failure(error_kind kind, const char *msg) {
    backend_event ev;
    ev.err = error{kind, msg, "", ""};
    return ev;
}

backend_event token(const char *text) {
    backend_event ev;
    ev.content = text;
    return ev;
}

TEST_F(failover_fixture, TheFirstWithRoomTakesItOthersAreOverflow) {
    a->full = error{error_kind::overloaded, "a is full", "", ""};
    failover_backend f({{a, "a"}, {b, "b"}}, "local");
    auto             s = run(f);
    ASSERT_TRUE(s);
    EXPECT_EQ(a->submits, 0);
    EXPECT_EQ(b->submits, 1);
    EXPECT_EQ(s->route().backend, "b");
    EXPECT_EQ(s->route().reason, "overflow");
    EXPECT_TRUE(s->open_at_first_event());
}

TEST_F(failover_fixture, ARefusalAtSubmitOrAnErrorBeforeAnyOutputMovesToTheNext) {
    a->refuse = error{error_kind::unavailable, "a refuses", "", ""};
    failover_backend f({{a, "a"}, {b, "b"}}, "local");
    auto             s = run(f);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->route().backend, "b");
    EXPECT_EQ(s->route().reason, "fallback");

    a->refuse.reset();
    b->stream.reset();
    failover_backend g({{a, "a"}, {b, "b"}}, "local");
    s = run(g);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->route().backend, "a");
    a->stream->push(failure(error_kind::internal, "decode failed"));
    EXPECT_TRUE(s->take().empty()) << "the error is not the client's: b takes over";
    EXPECT_TRUE(a->stream->cancelled);
    ASSERT_TRUE(b->stream);
    EXPECT_EQ(s->route().backend, "b");
    EXPECT_EQ(s->route().reason, "fallback");
    b->stream->push(token("hi"));
    const auto evs = s->take();
    ASSERT_EQ(evs.size(), 1U);
    EXPECT_EQ(evs[0].content, "hi");
}

TEST_F(failover_fixture, NoMoveOnceOutputReachedTheClientOrForTheClientsOwnErrors) {
    failover_backend f({{a, "a"}, {b, "b"}}, "local");
    auto             s = run(f);
    a->stream->push(token("partial"));
    EXPECT_EQ(s->take().size(), 1U);
    a->stream->push(failure(error_kind::upstream, "lost"));
    auto evs = s->take();
    ASSERT_EQ(evs.size(), 1U);
    EXPECT_TRUE(evs[0].err);
    EXPECT_EQ(b->submits, 0);

    b->submits = 0;
    failover_backend g({{a, "a"}, {b, "b"}}, "local");
    s = run(g);
    a->stream->push(failure(error_kind::invalid_request, "bad grammar"));
    evs = s->take();
    ASSERT_EQ(evs.size(), 1U);
    EXPECT_EQ(evs[0].err->kind, error_kind::invalid_request);
    EXPECT_EQ(b->submits, 0);
}

TEST_F(failover_fixture, WhenEveryoneRefusesTheFirstKindIsReportedWithEveryMessage) {
    a->refuse = error{error_kind::overloaded, "a is full", "", ""};
    b->refuse = error{error_kind::upstream, "b is down", "", ""};
    failover_backend     f({{a, "a"}, {b, "b"}}, "local");
    std::optional<error> err;
    EXPECT_FALSE(run(f, &err));
    ASSERT_TRUE(err);
    EXPECT_EQ(err->kind, error_kind::overloaded);
    EXPECT_EQ(err->message, "a is full; then b is down");
}

TEST_F(failover_fixture, APreparationTheRequestFailsIsTheAnswerOthersAreSkipped) {
    a->prepare_error = error::invalid("the prompt is too long");
    failover_backend     f({{a, "a"}, {b, "b"}}, "local");
    std::optional<error> err;
    EXPECT_FALSE(run(f, &err));
    ASSERT_TRUE(err);
    EXPECT_EQ(err->message, "the prompt is too long");

    a->prepare_error = error{error_kind::internal, "template engine threw", "", ""};
    failover_backend g({{a, "a"}, {b, "b"}}, "local");
    auto             s = run(g);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->route().backend, "b");
}

// --- retries with backoff -----------------------------------------------------------------------

// A scheduler that keeps what it is asked to run, for the test to run when it chooses.
struct manual_clock {
    std::vector<std::pair<std::chrono::milliseconds, std::function<void()>>> due;
    retry_policy                                                             policy(int32_t retries) {
                                                                    retry_policy p;
                                                                    p.max_retries = retries;
                                                                    p.backoff     = std::chrono::milliseconds(100);
                                                                    p.max_backoff = std::chrono::milliseconds(150);
                                                                    p.schedule = [this](std::chrono::milliseconds d, std::function<void()> fn) {
            due.emplace_back(d, std::move(fn));
        };
                                                                    return p;
    }
    void run_next() {
        ASSERT_FALSE(due.empty());
        auto fn = std::move(due.front().second);
        due.erase(due.begin());
        fn();
    }
};

TEST_F(failover_fixture, ARequestEveryoneRefusedIsRetriedAfterABackoffThenRunsWhereRoomIs) {
    manual_clock clock;
    a->refuse = error{error_kind::upstream, "a: connection refused", "", ""};
    b->refuse = error{error_kind::unavailable, "b: cooling down", "", ""};
    failover_backend f({{a, "local"}, {b, "b"}}, "local", clock.policy(2));
    auto             s = run(f);
    ASSERT_TRUE(s) << "a retry is pending: the stream exists";
    EXPECT_TRUE(s->take().empty());
    ASSERT_EQ(clock.due.size(), 1U);
    EXPECT_EQ(clock.due[0].first.count(), 100);

    b->refuse.reset(); // b has come back
    clock.run_next();
    EXPECT_EQ(notified, 1) << "the consumer is told to take()";
    EXPECT_EQ(s->route().backend, "b");
    EXPECT_EQ(s->route().reason, "fallback"); // the retry's round moved past a again
    b->stream->push(token("hi"));
    const auto evs = s->take();
    ASSERT_EQ(evs.size(), 1U);
    EXPECT_EQ(evs[0].content, "hi");
    EXPECT_EQ(a->submits, 2);
}

TEST_F(failover_fixture, RetriesDoubleTheirBackoffAndEndWithTheLastErrorAsAnEvent) {
    manual_clock clock;
    b->refuse = error{error_kind::upstream, "b: connection refused", "", ""};
    failover_backend f({{b, "b"}}, "remote", clock.policy(2));
    auto             s = run(f);
    ASSERT_TRUE(s);
    clock.run_next();
    ASSERT_EQ(clock.due.size(), 1U);
    EXPECT_EQ(clock.due[0].first.count(), 150) << "doubled, at most max_backoff";
    EXPECT_TRUE(s->take().empty());
    clock.run_next();
    EXPECT_TRUE(clock.due.empty()) << "two retries, no more";
    const auto evs = s->take();
    ASSERT_EQ(evs.size(), 1U);
    ASSERT_TRUE(evs[0].err);
    EXPECT_EQ(evs[0].err->kind, error_kind::upstream);
    EXPECT_EQ(evs[0].err->message.rfind("b: connection refused (tried 2 more times over ", 0), 0U)
        << evs[0].err->message;
    EXPECT_NE(evs[0].err->message.find(" ms; last: b: connection refused)"), std::string::npos);
    EXPECT_EQ(b->submits, 3);
    EXPECT_TRUE(s->take().empty()) << "the error is given once";
}

TEST_F(failover_fixture, AnErrorBeforeOutputIsRetriedOnTheSameBackendAndWithoutOutputOnly) {
    manual_clock     clock;
    failover_backend f({{b, "b"}}, "remote", clock.policy(1));
    auto             s = run(f);
    b->stream->push(failure(error_kind::upstream, "b: connection reset"));
    EXPECT_TRUE(s->take().empty());
    ASSERT_EQ(clock.due.size(), 1U);
    clock.run_next();
    EXPECT_EQ(s->route().reason, "retry");
    b->stream->push(token("ok"));
    EXPECT_EQ(s->take().at(0).content, "ok");
    b->stream->push(failure(error_kind::upstream, "b: lost"));
    const auto evs = s->take();
    ASSERT_EQ(evs.size(), 1U);
    EXPECT_TRUE(evs[0].err) << "output reached the client: no retry";
    EXPECT_TRUE(clock.due.empty());
}

TEST_F(failover_fixture, AStreamThatFailsAgainAfterItsRetriesEndsWithTheFirstErrorAndWhatFollowed) {
    manual_clock     clock;
    failover_backend f({{b, "b"}}, "remote", clock.policy(1));
    auto             s = run(f);
    b->stream->push(failure(error_kind::upstream, "b: connection refused"));
    EXPECT_TRUE(s->take().empty());
    clock.run_next();
    b->stream->push(failure(error_kind::unavailable, "b: circuit open"));
    const auto evs = s->take();
    ASSERT_EQ(evs.size(), 1U);
    ASSERT_TRUE(evs[0].err);
    EXPECT_EQ(evs[0].err->kind, error_kind::upstream);
    EXPECT_NE(evs[0].err->message.find("b: connection refused (tried 1 more time over "), std::string::npos);
    EXPECT_NE(evs[0].err->message.find("; last: b: circuit open)"), std::string::npos);
}

TEST_F(failover_fixture, NoRetryForTheClientsErrorsABoxAloneAPassedDeadlineOrACancelledStream) {
    manual_clock         clock;
    std::optional<error> err;
    b->refuse = error::invalid("bad request");
    failover_backend client_error({{b, "b"}}, "remote", clock.policy(3));
    EXPECT_FALSE(run(client_error, &err));
    EXPECT_TRUE(clock.due.empty());

    a->refuse = error{error_kind::internal, "decode failed", "", ""};
    failover_backend alone({{a, "local"}}, "local", clock.policy(3));
    EXPECT_FALSE(run(alone, &err));
    EXPECT_EQ(err->message, "decode failed") << "a box without remotes answers at once";

    for (const auto kind : {error_kind::overloaded, error_kind::timeout}) {
        b->refuse = error{kind, "busy or slow", "", ""};
        failover_backend paced({{b, "b"}}, "remote", clock.policy(3));
        EXPECT_FALSE(run(paced, &err)) << "a 429 is the client's to pace; a timeout spent its time";
    }
    EXPECT_TRUE(clock.due.empty());

    b->refuse = error{error_kind::upstream, "down", "", ""};
    api_request late;
    late.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
    failover_backend deadline({{b, "b"}}, "remote", clock.policy(3));
    EXPECT_FALSE(run(deadline, &err, late)) << "the backoff would pass the deadline";
    EXPECT_TRUE(clock.due.empty());

    failover_backend cancelled({{b, "b"}}, "remote", clock.policy(3));
    auto             s = run(cancelled);
    ASSERT_TRUE(s);
    s->cancel();
    b->refuse.reset();
    clock.run_next();
    EXPECT_EQ(b->submits, 5) << "a cancelled stream's retry submits nothing (5 refusals before)";
    EXPECT_EQ(notified, 0);
}

// --- mid-stream failover -------------------------------------------------------------------------

api_request chat_request(int32_t max_tokens) {
    api_request r;
    r.kind       = api_kind::chat;
    r.stream     = true;
    r.max_tokens = max_tokens;
    r.messages   = {{"user", "Hi", {}, ""}};
    return r;
}

backend_event finished(int32_t n_prompt, int32_t n_cached, int32_t n_generated) {
    backend_event ev;
    ev.finish      = finish_reason::length;
    ev.n_prompt    = n_prompt;
    ev.n_cached    = n_cached;
    ev.n_generated = n_generated;
    return ev;
}

TEST_F(failover_fixture, AChatStreamThatBreaksContinuesElsewhereAsTheFinalAssistantMessage) {
    failover_backend f({{a, "a"}, {b, "b"}}, "local");
    auto             s = run(f, nullptr, chat_request(10));
    ASSERT_TRUE(s);
    a->stream->push(token("Once"));
    a->stream->push(token(" upon"));
    EXPECT_EQ(s->take().size(), 2U);
    a->stream->push(failure(error_kind::upstream, "connection reset"));
    EXPECT_TRUE(s->take().empty()) << "the client sees no error: b continues";
    EXPECT_TRUE(a->stream->cancelled);
    ASSERT_TRUE(b->stream);
    EXPECT_EQ(s->route().backend, "b");
    EXPECT_EQ(s->route().reason, "failover");
    const api_request &cont = b->last_prepared;
    EXPECT_EQ(cont.kind, api_kind::chat);
    ASSERT_EQ(cont.messages.size(), 2U);
    EXPECT_EQ(cont.messages[0].content, "Hi");
    EXPECT_EQ(cont.messages[1].role, "assistant");
    EXPECT_EQ(cont.messages[1].content, "Once upon") << "exactly the text the client has";
    EXPECT_TRUE(cont.continue_final_message);
    EXPECT_EQ(cont.max_tokens, 8) << "two tokens were generated already";

    // b breaks too: a takes over again from everything sent, one assistant message (not two).
    b->stream->push(token(" a"));
    EXPECT_EQ(s->take().size(), 1U);
    b->stream->push(failure(error_kind::internal, "decode failed"));
    EXPECT_TRUE(s->take().empty());
    EXPECT_EQ(s->route().backend, "a");
    ASSERT_EQ(a->last_prepared.messages.size(), 2U);
    EXPECT_EQ(a->last_prepared.messages[1].content, "Once upon a");
    EXPECT_EQ(a->last_prepared.max_tokens, 7);

    // The continuation counted the three sent tokens as its prompt: they were generated.
    a->stream->push(token(" time"));
    a->stream->push(finished(45, 44, 7));
    const auto evs = s->take();
    ASSERT_EQ(evs.size(), 2U);
    EXPECT_EQ(evs[0].content, " time");
    EXPECT_EQ(evs[1].finish, finish_reason::length);
    EXPECT_EQ(evs[1].n_generated, 10);
    EXPECT_EQ(evs[1].n_prompt, 42);
    EXPECT_EQ(evs[1].n_cached, 42) << "the cache hit is bounded by the prompt it counts";
}

TEST_F(failover_fixture, AChatThatAlreadyContinuesItsOwnAssistantMessageGrowsThatMessage) {
    api_request req = chat_request(6);
    req.messages.push_back({"assistant", "The cat", {}, ""});
    req.continue_final_message = true;
    failover_backend f({{a, "a"}, {b, "b"}}, "local");
    auto             s = run(f, nullptr, req);
    ASSERT_TRUE(s);
    a->stream->push(token(" sat"));
    EXPECT_EQ(s->take().size(), 1U);
    a->stream->push(failure(error_kind::upstream, "lost"));
    EXPECT_TRUE(s->take().empty());
    ASSERT_EQ(b->last_prepared.messages.size(), 2U);
    EXPECT_EQ(b->last_prepared.messages[1].content, "The cat sat");
    EXPECT_TRUE(b->last_prepared.continue_final_message);
    EXPECT_EQ(b->last_prepared.max_tokens, 5);
}

TEST_F(failover_fixture, WithToolsOfferedTheWholeMessageAtTheEndFollowsTheTextAlreadySent) {
    api_request req = chat_request(20);
    req.tools       = {{"get_weather", "", ""}};
    failover_backend f({{a, "a"}, {b, "b"}}, "local");
    auto             s = run(f, nullptr, req);
    ASSERT_TRUE(s);
    a->stream->push(token("Let me check. "));
    EXPECT_EQ(s->take().size(), 1U);
    a->stream->push(failure(error_kind::upstream, "lost"));
    EXPECT_TRUE(s->take().empty()) << "content only so far: resumed";
    ASSERT_TRUE(b->stream);
    EXPECT_EQ(b->last_prepared.tools.size(), 1U) << "the continuation may still call the tools";
    backend_event call;
    call.calls.push_back({0, true, "call_1", "get_weather", ""});
    b->stream->push(call);
    backend_event done = finished(30, 0, 9);
    done.finish        = finish_reason::stop;
    done.message       = chat_output{"", {{"call_1", "get_weather", "{}"}}};
    b->stream->push(done);
    const auto evs = s->take();
    ASSERT_EQ(evs.size(), 2U);
    ASSERT_TRUE(evs[1].message);
    EXPECT_EQ(evs[1].message->content, "Let me check. ") << "the answer's content is what the client was sent";
    ASSERT_EQ(evs[1].message->tool_calls.size(), 1U);
    EXPECT_EQ(evs[1].message->tool_calls[0].name, "get_weather");
}

TEST_F(failover_fixture, NoResumptionOnceAToolCallWasSentNorUnderAnOutputConstraint) {
    api_request req = chat_request(20);
    req.tools       = {{"get_weather", "", ""}};
    failover_backend f({{a, "a"}, {b, "b"}}, "local");
    auto             s = run(f, nullptr, req);
    ASSERT_TRUE(s);
    backend_event call;
    call.calls.push_back({0, true, "call_1", "get_weather", ""});
    a->stream->push(call);
    EXPECT_EQ(s->take().size(), 1U);
    a->stream->push(failure(error_kind::upstream, "lost"));
    auto evs = s->take();
    ASSERT_EQ(evs.size(), 1U);
    ASSERT_TRUE(evs[0].err) << "a call cannot be continued: the stream ends with the error";
    EXPECT_EQ(b->submits, 0);

    // A grammar would start over from its root in the middle of the output: not resumed, for
    // chat or completions; the same completion without a constraint is.
    for (const api_kind kind : {api_kind::chat, api_kind::completion}) {
        for (const bool constrained : {true, false}) {
            api_request r = chat_request(20);
            r.kind        = kind;
            r.prompts     = {std::string("Once upon a time")};
            if (constrained) {
                r.constraint.kind = constraint_kind::json_object;
            }
            b->submits = 0;
            failover_backend g({{a, "a"}, {b, "b"}}, "local");
            s = run(g, nullptr, r);
            ASSERT_TRUE(s);
            a->stream->push(token(","));
            EXPECT_EQ(s->take().size(), 1U);
            a->stream->push(failure(error_kind::upstream, "lost"));
            evs = s->take();
            if (constrained) {
                ASSERT_EQ(evs.size(), 1U);
                EXPECT_TRUE(evs[0].err);
                EXPECT_EQ(b->submits, 0);
            } else {
                EXPECT_TRUE(evs.empty());
                EXPECT_EQ(b->submits, 1);
                if (kind == api_kind::completion) {
                    EXPECT_EQ(std::get<std::string>(b->last_prepared.prompts.at(0)), "Once upon a time,");
                } else {
                    EXPECT_EQ(b->last_prepared.messages.back().content, ",");
                }
            }
        }
    }
}

} // namespace
} // namespace inferbox

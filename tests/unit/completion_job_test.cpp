// The API job and its writers (api/openai.cpp, api/responses.cpp) driven by a scripted generation
// backend: the SSE and JSON shaping is tested without a model, an engine or a socket.

#include "api/openai.h"
#include "api/responses.h"
#include "backend/generation_backend.h"
#include "backend/message_stream.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <mutex>

namespace inferbox {
namespace {

using json = nlohmann::json;

// An exchange that records what the job answers.
class recording_exchange final : public http_exchange {
  public:
    explicit recording_exchange(boost::asio::io_context &ioc) : exec_(boost::asio::make_strand(ioc)) {}

    const http::request<http::string_body> &request() const override { return req_; }
    executor_t                              executor() const override { return exec_; }
    std::chrono::steady_clock::time_point   received() const override { return received_; }
    std::string                             remote() const override { return "test"; }
    void                                    add_response_header(std::string /*name*/, std::string /*value*/) override {}
    void log_field(std::string key, log_value /*value*/) override { fields.push_back(std::move(key)); }
    void respond(http::status s, std::string body, const std::string & /*content_type*/,
                 const header_list &headers) override {
        ++answers;
        status        = s;
        this->body    = std::move(body);
        this->headers = headers;
    }
    void start_stream(const header_list & /*headers*/) override {
        ++answers;
        streaming = true;
    }
    void send(std::string data) override {
        EXPECT_TRUE(streaming) << "a chunk before the stream opened";
        EXPECT_FALSE(ended) << "a chunk after the stream ended";
        chunks.push_back(std::move(data));
    }
    void end_stream() override { ended = true; }
    void on_disconnect(std::function<void()> fn) override { disconnect_ = std::move(fn); }
    bool disconnected() const override { return gone_; }

    // The client goes away (the server calls the callback on the exchange's executor).
    void disconnect() {
        gone_ = true;
        if (disconnect_) {
            disconnect_();
        }
    }

    // The stream's `data:` payloads, parsed (the [DONE] marker as the string "[DONE]").
    std::vector<json> data() const {
        std::vector<json> out;
        for (const auto &c : chunks) {
            const auto at = c.find("data: ");
            EXPECT_NE(at, std::string::npos) << c;
            const auto payload = c.substr(at + 6, c.size() - at - 8);
            out.push_back(payload == "[DONE]" ? json("[DONE]") : json::parse(payload));
        }
        return out;
    }

    int                      answers = 0; // respond() or start_stream() calls: must stay at most 1
    http::status             status  = http::status::unknown;
    std::string              body;
    header_list              headers;
    bool                     streaming = false, ended = false;
    std::vector<std::string> chunks;
    std::vector<std::string> fields;

  private:
    http::request<http::string_body>      req_;
    executor_t                            exec_;
    std::chrono::steady_clock::time_point received_ = std::chrono::steady_clock::now();
    std::function<void()>                 disconnect_;
    bool                                  gone_ = false;
};

class scripted_stream final : public generation_stream {
  public:
    std::vector<backend_event> take() override {
        std::lock_guard lock(mu_);
        ++takes;
        return std::exchange(pending_, {});
    }
    void cancel() override { ++cancels; }

    void push(backend_event ev) {
        {
            std::lock_guard lock(mu_);
            pending_.push_back(std::move(ev));
        }
        notify();
    }

    std::function<void()> notify;
    int                   cancels = 0, takes = 0;

  private:
    std::mutex                 mu_;
    std::vector<backend_event> pending_;
};

// A backend whose events the test pushes.
class scripted_backend final : public generation_backend {
  public:
    std::optional<error>    check(const api_request    &/*req*/) const override { return std::nullopt; }
    std::optional<error>    over_capacity(int32_t /*n*/) const override { return std::nullopt; }
    result<backend_request> prepare(api_request req) const override {
        backend_request r;
        r.req = std::move(req);
        r.prompts.push_back({{1, 2, 3}, "Once"});
        return r;
    }
    result<std::shared_ptr<generation_stream>> submit(std::shared_ptr<const backend_request> req,
                                                      std::function<void()>                  notify) override {
        submitted = std::move(req);
        if (refuse) {
            return *refuse;
        }
        stream         = std::make_shared<scripted_stream>();
        stream->notify = std::move(notify);
        return std::shared_ptr<generation_stream>(stream);
    }
    bool healthy() const override { return true; }

    std::optional<error>                   refuse;
    std::shared_ptr<const backend_request> submitted;
    std::shared_ptr<scripted_stream>       stream;
};

backend_event text_event(size_t choice, std::string text) {
    backend_event ev;
    ev.choice  = choice;
    ev.content = std::move(text);
    return ev;
}

backend_event finish_event(size_t choice, std::string text, finish_reason f, int32_t n_gen) {
    backend_event ev = text_event(choice, std::move(text));
    ev.finish        = f;
    ev.n_prompt      = 3;
    ev.n_cached      = 1;
    ev.n_generated   = n_gen;
    return ev;
}

struct job_fixture : ::testing::Test {
    boost::asio::io_context             ioc;
    std::shared_ptr<recording_exchange> ex      = std::make_shared<recording_exchange>(ioc);
    std::shared_ptr<scripted_backend>   backend = std::make_shared<scripted_backend>();

    void start(api_request req, int n_prompts = 1, bool tools = false, std::shared_ptr<answer_writer> w = nullptr) {
        backend_request r;
        r.req = std::move(req);
        for (int i = 0; i < n_prompts; ++i) {
            r.prompts.push_back({{1, 2, 3}, "Once" + std::to_string(i)});
        }
        r.max_tokens = 8;
        r.tools      = tools;
        run_completion(ex, backend, std::move(r), "tiny", job_context{}, std::move(w));
        ioc.poll();
    }
    void push(backend_event ev) {
        ASSERT_TRUE(backend->stream);
        backend->stream->push(std::move(ev));
        ioc.restart();
        ioc.poll();
    }
};

api_request chat_request(bool stream) {
    api_request r;
    r.kind          = api_kind::chat;
    r.stream        = stream;
    r.include_usage = stream;
    return r;
}

// Runs the same script as a stream and as a whole answer; returns both.
struct both_forms { // NOLINT(bugprone-exception-escape): test data
    json              whole;
    std::vector<json> stream;
};

template <typename Script> both_forms run_both(api_kind kind, Script script) {
    both_forms out;
    for (const bool stream : {false, true}) {
        boost::asio::io_context ioc;
        auto                    ex      = std::make_shared<recording_exchange>(ioc);
        auto                    backend = std::make_shared<scripted_backend>();
        backend_request         r;
        r.req.kind          = kind;
        r.req.stream        = stream;
        r.req.include_usage = stream;
        r.prompts.push_back({{1, 2, 3}, "Once"});
        r.max_tokens = 8;
        run_completion(ex, backend, std::move(r), "tiny", job_context{});
        ioc.poll();
        for (auto &ev : script()) {
            backend->stream->push(std::move(ev));
        }
        ioc.restart();
        ioc.poll();
        EXPECT_EQ(ex->answers, 1);
        if (stream) {
            EXPECT_TRUE(ex->ended);
            out.stream = ex->data();
        } else {
            EXPECT_EQ(ex->status, http::status::ok);
            out.whole = json::parse(ex->body);
        }
    }
    return out;
}

TEST_F(job_fixture, WholeChatAnswerCollectsTheEventsAndCountsUsage) {
    start(chat_request(false));
    push(text_event(0, "Hel"));
    EXPECT_EQ(ex->answers, 0) << "nothing is answered before the choice finished";
    push(finish_event(0, "lo", finish_reason::stop, 2));
    ASSERT_EQ(ex->status, http::status::ok);
    const auto body = json::parse(ex->body);
    EXPECT_EQ(body["object"], "chat.completion");
    EXPECT_EQ(body["model"], "tiny");
    EXPECT_EQ(body["choices"][0]["message"]["content"], "Hello");
    EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(body["usage"]["prompt_tokens"], 3);
    EXPECT_EQ(body["usage"]["completion_tokens"], 2);
    EXPECT_EQ(body["usage"]["total_tokens"], 5);
    EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
    EXPECT_EQ(backend->submitted->max_tokens, 8);
}

TEST(job, StreamCarriesTheSameTextFinishAndUsageAsTheWholeAnswer) {
    for (const auto kind : {api_kind::chat, api_kind::completion}) {
        auto        forms = run_both(kind, [] {
            return std::vector<backend_event>{text_event(0, "Once"), text_event(0, " upon"),
                                              finish_event(0, " a", finish_reason::length, 3)};
        });
        const bool  chat  = kind == api_kind::chat;
        std::string streamed;
        json        finish, usage;
        ASSERT_GE(forms.stream.size(), 3U);
        EXPECT_EQ(forms.stream.back(), "[DONE]");
        for (const auto &d : forms.stream) {
            if (d.is_string()) {
                continue;
            }
            EXPECT_EQ(d["object"], chat ? "chat.completion.chunk" : "text_completion");
            EXPECT_EQ(d["id"], forms.stream.front()["id"]) << "one id for every chunk";
            if (!d["usage"].is_null()) {
                usage = d["usage"];
                EXPECT_TRUE(d["choices"].empty());
                continue;
            }
            const auto &c = d["choices"][0];
            streamed += chat ? c["delta"].value("content", "") : c["text"].get<std::string>();
            if (!c["finish_reason"].is_null()) {
                EXPECT_TRUE(finish.is_null()) << "one finishing chunk per choice";
                finish = c["finish_reason"];
            }
        }
        const auto &whole = forms.whole["choices"][0];
        EXPECT_EQ(streamed, chat ? whole["message"]["content"] : whole["text"]);
        EXPECT_EQ(streamed, "Once upon a");
        EXPECT_EQ(finish, whole["finish_reason"]);
        EXPECT_EQ(finish, "length");
        EXPECT_EQ(usage, forms.whole["usage"]);
    }
}

TEST_F(job_fixture, InvalidUtf8FromTheBackendStillMakesValidJson) {
    start(chat_request(true));
    push(text_event(0, "caf\xc3"));                         // a character cut in two
    push(finish_event(0, "\xff!", finish_reason::stop, 2)); // a byte that is never UTF-8
    ASSERT_TRUE(ex->ended);
    std::string text;
    for (const auto &d : ex->data()) { // json::parse throws on invalid UTF-8
        if (d.is_object() && !d["choices"].empty()) {
            text += d["choices"][0]["delta"].value("content", "");
        }
    }
    EXPECT_EQ(text, "caf\xef\xbf\xbd\xef\xbf\xbd!"); // each bad sequence became U+FFFD
}

TEST_F(job_fixture, StreamedToolCallsFollowOpenAIsChunkShape) {
    start(chat_request(true), 1, /*tools=*/true);
    backend_event first = text_event(0, "");
    first.calls.push_back({0, true, "call_1", "get_weather", ""});
    push(first);
    backend_event args = text_event(0, "");
    args.calls.push_back({0, false, "", "", "{\"city\":"});
    push(args);
    backend_event done = finish_event(0, "", finish_reason::stop, 5);
    done.calls.push_back({0, false, "", "", "\"Oslo\"}"});
    done.message = chat_output{"", {{"call_1", "get_weather", "{\"city\":\"Oslo\"}"}}};
    push(done);

    std::vector<json> deltas;
    json              finish;
    for (const auto &d : ex->data()) {
        if (d.is_object() && !d["choices"].empty()) {
            const auto &c = d["choices"][0];
            if (c["delta"].contains("tool_calls")) {
                deltas.push_back(c["delta"]["tool_calls"][0]);
            }
            if (!c["finish_reason"].is_null()) {
                finish = c["finish_reason"];
            }
        }
    }
    ASSERT_EQ(deltas.size(), 3U);
    EXPECT_EQ(deltas[0]["index"], 0);
    EXPECT_EQ(deltas[0]["id"], "call_1");
    EXPECT_EQ(deltas[0]["type"], "function");
    EXPECT_EQ(deltas[0]["function"]["name"], "get_weather");
    EXPECT_FALSE(deltas[1].contains("id")) << "only the first chunk of a call names it";
    std::string args_text;
    for (const auto &d : deltas) {
        args_text += d["function"]["arguments"].get<std::string>();
    }
    EXPECT_EQ(args_text, "{\"city\":\"Oslo\"}");
    EXPECT_EQ(finish, "tool_calls");
}

TEST_F(job_fixture, WholeAnswerTakesTheBackendsFinalReadingOfTheMessage) {
    start(chat_request(false), 1, /*tools=*/true);
    backend_event partial = text_event(0, "Let me");
    partial.calls.push_back({0, true, "call_9", "f", "{"});
    push(partial);
    backend_event done = finish_event(0, "", finish_reason::stop, 4);
    done.message       = chat_output{"", {{"call_9", "f", "{\"a\":1}"}, {"call_10", "g", "{}"}}};
    push(done);
    const auto  body = json::parse(ex->body);
    const auto &msg  = body["choices"][0]["message"];
    EXPECT_TRUE(msg["content"].is_null()) << "a message of tool calls only has null content";
    ASSERT_EQ(msg["tool_calls"].size(), 2U);
    EXPECT_EQ(msg["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
    EXPECT_EQ(msg["tool_calls"][1]["id"], "call_10");
    EXPECT_EQ(body["choices"][0]["finish_reason"], "tool_calls");
}

TEST_F(job_fixture, ErrorBeforeTheStreamOpensIsAnHttpError) {
    backend->refuse = error{error_kind::overloaded, "all 4 slots and the queue of 64 are full", "", "overloaded"};
    start(chat_request(true));
    EXPECT_EQ(ex->answers, 1);
    EXPECT_EQ(ex->status, http::status::too_many_requests);
    EXPECT_FALSE(ex->streaming);
    bool retry_after = false;
    for (const auto &[k, v] : ex->headers) {
        retry_after = retry_after || k == "Retry-After";
    }
    EXPECT_TRUE(retry_after);
    EXPECT_NE(ex->body.find("slots"), std::string::npos);
}

TEST_F(job_fixture, ErrorOfAWholeAnswerBecomesItsStatusAndCancels) {
    start(chat_request(false));
    push(text_event(0, "Hel"));
    backend_event err;
    err.err = error{error_kind::unavailable, "the engine stopped", "", "engine_stopped"};
    push(err);
    EXPECT_EQ(ex->answers, 1);
    EXPECT_EQ(ex->status, http::status::service_unavailable);
    EXPECT_EQ(json::parse(ex->body)["error"]["message"], "the engine stopped");
    EXPECT_EQ(backend->stream->cancels, 1);
}

TEST_F(job_fixture, MidStreamErrorEndsTheStreamWithAnErrorEvent) {
    start(chat_request(true));
    push(text_event(0, "Once"));
    backend_event err;
    err.err = error{error_kind::internal, "decode failed", "", "decode_failed"};
    push(err);
    push(text_event(0, " more")); // after the error: ignored
    ASSERT_TRUE(ex->ended);
    const auto data = ex->data();
    ASSERT_GE(data.size(), 3U);
    EXPECT_EQ(data[data.size() - 2]["error"]["message"], "decode failed");
    EXPECT_EQ(data.back(), "[DONE]");
    EXPECT_EQ(ex->answers, 1) << "errors are in-stream once it opened, never a second response";
    EXPECT_EQ(backend->stream->cancels, 1);
}

TEST_F(job_fixture, ClientDisconnectCancelsAndSendsNothingMore) {
    start(chat_request(true));
    push(text_event(0, "Once"));
    const auto sent = ex->chunks.size();
    ex->disconnect();
    EXPECT_EQ(backend->stream->cancels, 1);
    push(finish_event(0, " upon", finish_reason::stop, 2));
    EXPECT_EQ(ex->chunks.size(), sent);
    EXPECT_FALSE(ex->ended);
}

TEST_F(job_fixture, ChoicesOfSeveralPromptsAreNumberedPromptMajorAndUsageCountsEachPromptOnce) {
    api_request r;
    r.kind = api_kind::completion;
    r.n    = 2;
    start(std::move(r), /*n_prompts=*/2);
    EXPECT_EQ(backend->submitted->n_choices(), 4U);
    for (size_t c = 0; c < 4; ++c) {
        push(finish_event(3 - c, "t" + std::to_string(3 - c), finish_reason::stop, 1));
    }
    const auto body = json::parse(ex->body);
    ASSERT_EQ(body["choices"].size(), 4U);
    for (size_t c = 0; c < 4; ++c) {
        EXPECT_EQ(body["choices"][c]["index"], c);
        EXPECT_EQ(body["choices"][c]["text"], "t" + std::to_string(c));
    }
    EXPECT_EQ(body["usage"]["prompt_tokens"], 6) << "two prompts of 3 tokens, each counted once";
    EXPECT_EQ(body["usage"]["completion_tokens"], 4);
}

TEST_F(job_fixture, AChoiceTheRequestDoesNotHaveIsAnInternalErrorNotACrash) {
    start(chat_request(false));
    push(text_event(7, "x"));
    EXPECT_EQ(ex->status, http::status::internal_server_error);
    EXPECT_EQ(backend->stream->cancels, 1);
}

TEST_F(job_fixture, EchoAndLogprobsOffsetsStartAfterTheEchoedPrompt) {
    api_request r;
    r.kind                  = api_kind::completion;
    r.echo                  = true;
    r.sampling.top_logprobs = 1;
    start(std::move(r));
    backend_event ev = finish_event(0, "ab", finish_reason::stop, 2);
    ev.logprobs      = {{"a", -0.5f, {{"a", -0.5f}}}, {"b", -1.0f, {{"b", -1.0f}}}};
    push(ev);
    const auto  body = json::parse(ex->body);
    const auto &c    = body["choices"][0];
    EXPECT_EQ(c["text"], "Once0ab");
    EXPECT_EQ(c["logprobs"]["tokens"], json::array({"a", "b"}));
    EXPECT_EQ(c["logprobs"]["text_offset"], json::array({5, 6}));
}

TEST_F(job_fixture, ResponsesStreamDeltasAddUpToTheCompletedResponse) {
    auto req   = chat_request(true);
    req.stream = true;
    start(req, 1, /*tools=*/true, make_responses_writer(responses_echo{}));
    push(text_event(0, "Hi"));
    backend_event call = text_event(0, " there");
    call.calls.push_back({0, true, "call_2", "lookup", ""});
    call.calls.push_back({0, false, "", "", "{\"q\":1}"});
    push(call);
    backend_event done = finish_event(0, "", finish_reason::stop, 6);
    done.message       = chat_output{"Hi there", {{"call_2", "lookup", "{\"q\":1}"}}};
    push(done);

    ASSERT_TRUE(ex->ended);
    std::vector<std::string> types;
    std::string              text;
    json                     completed;
    int64_t                  seq = 0;
    for (const auto &chunk : ex->chunks) {
        const auto d = json::parse(chunk.substr(chunk.find("data: ") + 6));
        EXPECT_EQ(d["sequence_number"], seq++);
        types.push_back(d["type"]);
        if (d["type"] == "response.output_text.delta") {
            text += d["delta"].get<std::string>();
        }
        if (d["type"] == "response.completed") {
            completed = d["response"];
        }
    }
    EXPECT_EQ(types.front(), "response.created");
    EXPECT_EQ(types.back(), "response.completed");
    EXPECT_EQ(text, "Hi there");
    ASSERT_EQ(completed["output"].size(), 2U);
    EXPECT_EQ(completed["output"][0]["content"][0]["text"], "Hi there");
    EXPECT_EQ(completed["output"][1]["type"], "function_call");
    EXPECT_EQ(completed["output"][1]["arguments"], "{\"q\":1}");
    EXPECT_EQ(completed["usage"]["output_tokens"], 6);
}

// message_stream: successive readings of a growing message become deltas.
TEST(message_stream, SendsOnlyWhatExtendsWhatWasSent) {
    message_stream               ms;
    std::string                  content;
    std::vector<tool_call_delta> calls;
    ms.update(chat_output{"Hel", {}}, content, calls);
    ms.update(chat_output{"Hello", {}}, content, calls);
    EXPECT_EQ(content, "Hello");
    // The parser revises the content (e.g. a prefix turned out to be call markup): held back.
    ms.update(chat_output{"He", {}}, content, calls);
    EXPECT_EQ(content, "Hello");
    EXPECT_TRUE(calls.empty());
}

TEST(message_stream, AnnouncesACallOnceNamedThenStreamsItsArguments) {
    message_stream               ms;
    std::string                  content;
    std::vector<tool_call_delta> calls;
    ms.update(chat_output{"", {{"", "", ""}}}, content, calls);
    EXPECT_TRUE(calls.empty()) << "a call without a name yet is not announced";
    ms.update(chat_output{"", {{"", "get", "{\"a\""}}}, content, calls);
    ASSERT_EQ(calls.size(), 2U);
    EXPECT_TRUE(calls[0].first);
    EXPECT_EQ(calls[0].name, "get");
    EXPECT_EQ(calls[0].id.rfind("call_", 0), 0U);
    EXPECT_EQ(calls[1].arguments, "{\"a\"");
    const auto id = calls[0].id;
    ms.update(chat_output{"", {{"", "get", "{\"a\":1}"}, {"", "put", ""}}}, content, calls);
    ASSERT_EQ(calls.size(), 4U);
    EXPECT_EQ(calls[2].arguments, ":1}");
    EXPECT_TRUE(calls[3].first);
    EXPECT_EQ(calls[3].call, 1U);
    EXPECT_EQ(ms.message().tool_calls[0].id, id) << "a call keeps the id it was given";
    EXPECT_NE(ms.message().tool_calls[1].id, id);
}

TEST(message_stream, KeepsTheFormatsOwnIds) {
    message_stream               ms;
    std::string                  content;
    std::vector<tool_call_delta> calls;
    ms.update(chat_output{"", {{"abc", "f", "{}"}}}, content, calls);
    ASSERT_FALSE(calls.empty());
    EXPECT_EQ(calls[0].id, "abc");
}

} // namespace
} // namespace inferbox

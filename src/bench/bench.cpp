#include "bench/bench.h"

#include "bench/slo.h"

#include <sys/resource.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

namespace {

namespace asio  = boost::asio;
namespace beast = boost::beast;
namespace http  = beast::http;
using tcp       = asio::ip::tcp;
using json      = nlohmann::json;
using steady    = std::chrono::steady_clock;

// Limits that keep every run finite whatever the server does.
constexpr auto     k_connect_timeout   = std::chrono::seconds(10);
constexpr auto     k_request_timeout   = std::chrono::seconds(600); // whole request, connect to last byte
constexpr auto     k_probe_timeout     = std::chrono::seconds(30);
constexpr uint64_t k_body_limit        = 64ull << 20; // bytes of one response body
constexpr size_t   k_error_body_keep   = 2048;        // bytes of a non-200 body quoted in the error
constexpr size_t   k_max_line          = 1u << 20;    // one SSE line
constexpr int32_t  k_max_concurrency   = 4096;
constexpr int32_t  k_max_requests      = 1000000;
constexpr int32_t  k_max_prompt_tokens = 1 << 20;
constexpr int32_t  k_min_unique_tail   = 8;   // words after a shared prefix, so prompts differ
constexpr size_t   k_max_error_kinds   = 10;  // distinct failure messages kept for the report
constexpr size_t   k_max_rates         = 64;  // runs in one sweep
constexpr double   k_max_rate          = 1e6; // requests per second
constexpr double   k_max_slo_ms        = 3.6e6;

// Words that are a single token in the 512-token TinyStories SentencePiece vocab (as "▁word") and
// in the vocabularies of the common large models, so N words give about N prompt tokens.
constexpr std::string_view k_words[] = {
    "the",    "a",    "to",   "and",   "was",   "he",  "she",   "her",  "his",   "it",  "in",   "on",
    "with",   "said", "play", "they",  "you",   "we",  "up",    "that", "mom",   "big", "of",   "friend",
    "little", "time", "had",  "there", "so",    "for", "happy", "saw",  "named", "but", "very", "do",
    "upon",   "day",  "Lily", "Tim",   "Timmy", "One", "Once",  "The",  "She",   "He",  "They", "I",
};
constexpr size_t k_n_words = sizeof(k_words) / sizeof(k_words[0]);

// splitmix64: a fixed, portable generator (std distributions differ between standard libraries).
struct splitmix64 {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z          = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z          = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
};

void append_words(std::string &out, splitmix64 &rng, int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
        if (!out.empty()) {
            out += ' ';
        }
        out += k_words[rng.next() % k_n_words];
    }
}

// Prompt i of a run. Without a shared prefix each prompt is prompt_tokens random words from its own
// stream; with one, the first shared_prefix_tokens words are the same for every i and the rest
// (at least k_min_unique_tail words) come from i's stream.
std::string make_prompt(const bench_options &o, int32_t i) {
    std::string out;
    splitmix64  own{(uint64_t(o.seed) << 32) ^ (uint64_t(uint32_t(i)) * 0x100000001b3ull) ^ 0x5bd1e995ull};
    if (o.shared_prefix_tokens > 0) {
        splitmix64 shared{(uint64_t(o.seed) << 32) ^ 0xa0761d6478bd642full};
        append_words(out, shared, o.shared_prefix_tokens);
        append_words(out, own, std::max(o.prompt_tokens - o.shared_prefix_tokens, k_min_unique_tail));
    } else {
        append_words(out, own, o.prompt_tokens);
    }
    return out;
}

struct target {
    std::string host;
    std::string port;
    std::string base_path; // without a trailing '/', and without a trailing "/v1"
};

std::optional<target> parse_url(const std::string &url, std::string &err) {
    std::string_view rest = url;
    if (rest.starts_with("https://")) {
        err = "https is not supported by the benchmark client; use an http:// URL";
        return std::nullopt;
    }
    if (rest.starts_with("http://")) {
        rest.remove_prefix(7);
    }
    const size_t     slash     = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    std::string_view path      = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
    target           t;
    if (authority.starts_with('[')) { // [v6]:port
        const size_t close = authority.find(']');
        if (close == std::string_view::npos) {
            err = "invalid URL '" + url + "': unterminated '['";
            return std::nullopt;
        }
        t.host = std::string(authority.substr(1, close - 1));
        authority.remove_prefix(close + 1);
        t.port = authority.starts_with(':') ? std::string(authority.substr(1)) : "80";
    } else {
        const size_t colon = authority.rfind(':');
        t.host             = std::string(authority.substr(0, colon));
        t.port             = colon == std::string_view::npos ? "80" : std::string(authority.substr(colon + 1));
    }
    if (t.host.empty() || t.port.empty() ||
        !std::all_of(t.port.begin(), t.port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        err = "invalid URL '" + url + "': expected http://host:port[/prefix]";
        return std::nullopt;
    }
    while (path.ends_with('/')) {
        path.remove_suffix(1);
    }
    if (path.ends_with("/v1")) {
        path.remove_suffix(3);
    }
    t.base_path = std::string(path);
    return t;
}

// What one request produced. Times are seconds from the start of the attempt that succeeded.
struct request_record {
    bool                ok = false;
    std::string         error;
    double              ttft_s         = -1.0; // to the first non-empty content delta
    double              e2e_s          = 0.0;  // to the end of the stream
    int32_t             output_tokens  = 0;
    int32_t             prompt_tokens  = -1; // from usage, -1 when the server sent none
    int32_t             content_chunks = 0;
    bool                usage_seen     = false;
    std::vector<double> gaps_s;         // between successive content chunks
    double              due_wait_s = 0; // open loop: from when it was due to when it was sent
};

// Incremental parser of one SSE stream of OpenAI chunks. Not thread-safe; one per request.
class sse_reader {
  public:
    sse_reader(bool chat, steady::time_point start, request_record &rec) : chat_(chat), start_(start), rec_(rec) {}

    // Feeds body bytes received at `now`. Returns false once the stream reported an error.
    bool feed(std::string_view bytes, steady::time_point now) {
        for (char c : bytes) {
            if (c != '\n') {
                if (line_.size() >= k_max_line) {
                    return fail("an SSE line is longer than " + std::to_string(k_max_line) + " bytes");
                }
                line_ += c;
                continue;
            }
            if (!line_.empty() && line_.back() == '\r') {
                line_.pop_back();
            }
            if (line_.empty()) {
                if (!dispatch(now)) {
                    return false;
                }
            } else if (line_.starts_with("data:")) {
                std::string_view v = std::string_view(line_).substr(5);
                if (v.starts_with(' ')) {
                    v.remove_prefix(1);
                }
                if (!data_.empty()) {
                    data_ += '\n';
                }
                data_ += v;
            } // other fields (event:, id:, comments) carry nothing we use
            line_.clear();
        }
        return true;
    }

    // Ends the stream (a last event without its blank line still counts).
    bool finish(steady::time_point now) { return dispatch(now); }

    bool done() const { return done_; }
    bool failed() const { return failed_; }

  private:
    bool fail(std::string message) {
        failed_    = true;
        rec_.error = std::move(message);
        return false;
    }

    bool dispatch(steady::time_point now) {
        if (data_.empty()) {
            return !failed_;
        }
        std::string payload;
        payload.swap(data_);
        if (payload == "[DONE]") {
            done_ = true;
            return true;
        }
        json chunk = json::parse(payload, nullptr, /*allow_exceptions=*/false);
        if (chunk.is_discarded() || !chunk.is_object()) {
            return fail("unparseable SSE data: " + payload.substr(0, 200));
        }
        if (auto e = chunk.find("error"); e != chunk.end()) {
            std::string msg = e->is_object() && e->contains("message") && (*e)["message"].is_string()
                                  ? (*e)["message"].get<std::string>()
                                  : e->dump();
            return fail("error event: " + msg.substr(0, 300));
        }
        if (auto u = chunk.find("usage"); u != chunk.end() && u->is_object()) {
            if (auto ct = u->find("completion_tokens"); ct != u->end() && ct->is_number_integer()) {
                rec_.output_tokens = ct->get<int32_t>();
                rec_.usage_seen    = true;
            }
            if (auto pt = u->find("prompt_tokens"); pt != u->end() && pt->is_number_integer()) {
                rec_.prompt_tokens = pt->get<int32_t>();
            }
        }
        auto choices = chunk.find("choices");
        if (choices == chunk.end() || !choices->is_array() || choices->empty() || !(*choices)[0].is_object()) {
            return true;
        }
        const json &choice      = (*choices)[0];
        bool        has_content = false;
        if (chat_) {
            if (auto d = choice.find("delta"); d != choice.end() && d->is_object()) {
                for (const char *key : {"content", "reasoning_content"}) {
                    if (auto c = d->find(key);
                        c != d->end() && c->is_string() && !c->get_ref<const std::string &>().empty()) {
                        has_content = true;
                    }
                }
            }
        } else if (auto t = choice.find("text"); t != choice.end() && t->is_string()) {
            has_content = !t->get_ref<const std::string &>().empty();
        }
        if (has_content) {
            if (rec_.content_chunks == 0) {
                rec_.ttft_s = std::chrono::duration<double>(now - start_).count();
            } else {
                rec_.gaps_s.push_back(std::chrono::duration<double>(now - last_).count());
            }
            last_ = now;
            ++rec_.content_chunks;
        }
        return true;
    }

    bool               chat_;
    steady::time_point start_;
    steady::time_point last_{};
    request_record    &rec_;
    std::string        line_;
    std::string        data_;
    bool               done_   = false;
    bool               failed_ = false;
};

// Shared by all workers. Only the io_context thread touches it, so it needs no locks.
struct run_state {
    const bench_options        &opts;
    target                      tgt;
    tcp::resolver::results_type endpoints;
    std::string                 model;
    std::vector<std::string>    prompts;
    std::vector<request_record> records;
    std::vector<double>         arrivals; // --request-rate: seconds after the start at which request i is due
    steady::time_point          t0;
    int32_t                     next = 0;
    std::string                 fatal;             // an exception escaped a worker: a bug, reported as a failure
    int32_t                     prompt_offset = 0; // run k of a sweep sends prompts k * requests .. onwards
};

// One worker's keep-alive connection.
struct connection {
    beast::tcp_stream  stream;
    beast::flat_buffer buffer;
    bool               open = false;

    explicit connection(asio::any_io_executor ex) : stream(std::move(ex)) {}

    void close() {
        beast::error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream.socket().close(ignored);
        buffer.clear();
        open = false;
    }
};

std::string describe(const beast::error_code &ec) {
    if (ec == beast::error::timeout) {
        return "timed out";
    }
    return ec.message();
}

std::string request_body(const run_state &st, int32_t i) {
    const bench_options &o = st.opts;
    json                 body;
    body["model"]          = st.model;
    body["max_tokens"]     = o.max_tokens;
    body["temperature"]    = 0;
    body["stream"]         = true;
    body["stream_options"] = {{"include_usage", true}};
    if (o.endpoint == "chat") {
        body["messages"] = json::array({{{"role", "user"}, {"content", st.prompts[size_t(i)]}}});
    } else {
        body["prompt"] = st.prompts[size_t(i)];
    }
    if (o.ignore_eos) {
        body["ignore_eos"] = true;
    }
    return body.dump();
}

enum class attempt_result { ok, failed, stale }; // stale: a reused connection died before any response

// One attempt of request i on `conn`. Bounded by k_request_timeout from its start.
asio::awaitable<attempt_result> attempt(run_state &st, connection &conn, int32_t i, request_record &rec) {
    rec                               = request_record{};
    const bool               reused   = conn.open;
    const steady::time_point start    = steady::now();
    const steady::time_point deadline = start + k_request_timeout;
    beast::error_code        ec;
    auto                     tok = asio::redirect_error(asio::use_awaitable, ec);

    if (!conn.open) {
        conn.stream.expires_after(k_connect_timeout);
        co_await conn.stream.async_connect(st.endpoints, tok);
        if (ec) {
            rec.error = "connect: " + describe(ec);
            conn.close();
            co_return attempt_result::failed;
        }
        // The request goes out as header and body writes: without TCP_NODELAY the body can wait
        // for the ACK of the header (delayed by the server's kernel up to 40 ms), which would be
        // measured as the server's TTFT.
        beast::error_code nd;
        conn.stream.socket().set_option(tcp::no_delay(true), nd);
        conn.open = true;
    }
    conn.stream.expires_at(deadline);

    const bool                       chat = st.opts.endpoint == "chat";
    http::request<http::string_body> req{http::verb::post,
                                         st.tgt.base_path + (chat ? "/v1/chat/completions" : "/v1/completions"), 11};
    req.set(http::field::host, st.tgt.host + ":" + st.tgt.port);
    req.set(http::field::content_type, "application/json");
    req.set(http::field::accept, "text/event-stream");
    req.keep_alive(true);
    req.body() = request_body(st, i);
    req.prepare_payload();

    co_await http::async_write(conn.stream, req, tok);
    if (ec) {
        rec.error = "write: " + describe(ec);
        conn.close();
        co_return reused ? attempt_result::stale : attempt_result::failed;
    }

    http::response_parser<http::buffer_body> parser;
    parser.body_limit(k_body_limit);
    co_await http::async_read_header(conn.stream, conn.buffer, parser, tok);
    if (ec) {
        rec.error = "reading response header: " + describe(ec);
        const bool nothing_received =
            ec == http::error::end_of_stream || ec == asio::error::connection_reset || ec == asio::error::eof;
        conn.close();
        co_return (reused && nothing_received) ? attempt_result::stale : attempt_result::failed;
    }
    const unsigned status = parser.get().result_int();

    char        buf[16384];
    sse_reader  sse(chat, start, rec);
    std::string error_body;
    // Each pass consumes at least one byte or ends, and the body is capped at k_body_limit; the
    // iteration cap is a second guard against a misbehaving parser.
    for (uint64_t pass = 0; !parser.is_done() && pass < k_body_limit; ++pass) {
        parser.get().body().data = buf;
        parser.get().body().size = sizeof(buf);
        co_await http::async_read_some(conn.stream, conn.buffer, parser, tok);
        if (ec == http::error::need_buffer) {
            ec = {};
        }
        const size_t n = sizeof(buf) - parser.get().body().size;
        if (status != 200) {
            error_body.append(buf, std::min(n, k_error_body_keep - std::min(error_body.size(), k_error_body_keep)));
        } else if (!sse.feed(std::string_view(buf, n), steady::now())) {
            conn.close();
            co_return attempt_result::failed;
        }
        if (ec) {
            break;
        }
    }
    const steady::time_point end = steady::now();
    if (status != 200) {
        rec.error = "HTTP " + std::to_string(status) + ": " + error_body.substr(0, 300);
        conn.close();
        co_return attempt_result::failed;
    }
    if (ec) {
        // The progress makes a stalled server distinguishable from one that never started.
        rec.error = "reading stream: " + describe(ec) + " after " + std::to_string(rec.content_chunks) +
                    " content chunks" + (sse.done() ? " and [DONE]" : "");
        conn.close();
        co_return attempt_result::failed;
    }
    if (!parser.is_done()) {
        rec.error = "response body exceeded the read limit";
        conn.close();
        co_return attempt_result::failed;
    }
    if (!sse.finish(end)) {
        conn.close();
        co_return attempt_result::failed;
    }
    if (!parser.keep_alive()) {
        conn.close();
    }
    rec.e2e_s = std::chrono::duration<double>(end - start).count();
    if (!rec.usage_seen) {
        rec.output_tokens = rec.content_chunks;
    }
    if (rec.content_chunks == 0) {
        rec.error = "the stream carried no content";
        co_return attempt_result::failed;
    }
    if (!sse.done()) {
        rec.error = "the stream ended without data: [DONE]";
        co_return attempt_result::failed;
    }
    rec.ok = true;
    co_return attempt_result::ok;
}

asio::awaitable<void> worker(run_state &st) {
    connection         conn(co_await asio::this_coro::executor);
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (st.next < st.opts.requests) {
        const int32_t   i        = st.next++;
        request_record &rec      = st.records[size_t(i)];
        double          due_wait = 0;
        if (!st.arrivals.empty()) {
            const auto due = st.t0 + std::chrono::duration_cast<steady::duration>(
                                         std::chrono::duration<double>(st.arrivals[size_t(i)]));
            if (due > steady::now()) {
                timer.expires_at(due);
                beast::error_code ignored;
                co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
            }
            // Waiting for a free connection (all `concurrency` busy) counts against the TTFT target.
            due_wait = std::max(0.0, std::chrono::duration<double>(steady::now() - due).count());
        }
        // A keep-alive connection the server closed while idle is retried once on a fresh one.
        if (co_await attempt(st, conn, i, rec) == attempt_result::stale) {
            co_await attempt(st, conn, i, rec);
        }
        rec.due_wait_s = due_wait;
    }
    conn.close();
}

// Checks that the server answers and, when no model was given, takes the first id of GET /v1/models.
asio::awaitable<void> probe(run_state &st, std::string &err) {
    connection        conn(co_await asio::this_coro::executor);
    beast::error_code ec;
    auto              tok = asio::redirect_error(asio::use_awaitable, ec);
    conn.stream.expires_after(k_connect_timeout);
    co_await conn.stream.async_connect(st.endpoints, tok);
    if (ec) {
        err = "cannot connect to " + st.tgt.host + ":" + st.tgt.port + ": " + describe(ec);
        co_return;
    }
    if (!st.model.empty()) {
        conn.close();
        co_return;
    }
    conn.stream.expires_after(k_probe_timeout);
    http::request<http::empty_body> req{http::verb::get, st.tgt.base_path + "/v1/models", 11};
    req.set(http::field::host, st.tgt.host + ":" + st.tgt.port);
    req.keep_alive(false);
    co_await http::async_write(conn.stream, req, tok);
    http::response_parser<http::string_body> parser;
    parser.body_limit(k_body_limit);
    if (!ec) {
        co_await http::async_read(conn.stream, conn.buffer, parser, tok);
    }
    conn.close();
    if (ec) {
        err = "GET /v1/models: " + describe(ec);
        co_return;
    }
    if (parser.get().result_int() != 200) {
        err = "GET /v1/models: HTTP " + std::to_string(parser.get().result_int());
        co_return;
    }
    json models = json::parse(parser.get().body(), nullptr, false);
    if (models.is_object() && models.contains("data") && models["data"].is_array() && !models["data"].empty() &&
        models["data"][0].is_object() && models["data"][0].contains("id") && models["data"][0]["id"].is_string()) {
        st.model = models["data"][0]["id"].get<std::string>();
    } else {
        err = "GET /v1/models returned no model id; pass the model name explicitly";
    }
}

struct summary {
    size_t n    = 0;
    double mean = 0, p50 = 0, p90 = 0, p99 = 0, min = 0, max = 0;
};

// Percentiles by linear interpolation between closest ranks (numpy's default, as vLLM reports).
summary summarize(std::vector<double> v) {
    summary s;
    s.n = v.size();
    if (v.empty()) {
        return s;
    }
    std::sort(v.begin(), v.end());
    auto   pct = [&](double p) { return percentile_of_sorted(v, p); };
    double sum = 0;
    for (double x : v) {
        sum += x;
    }
    s.mean = sum / double(v.size());
    s.p50  = pct(50);
    s.p90  = pct(90);
    s.p99  = pct(99);
    s.min  = v.front();
    s.max  = v.back();
    return s;
}

json to_json_ms(const summary &s) {
    return {{"n", s.n},           {"mean", s.mean * 1e3}, {"p50", s.p50 * 1e3}, {"p90", s.p90 * 1e3},
            {"p99", s.p99 * 1e3}, {"min", s.min * 1e3},   {"max", s.max * 1e3}};
}

double cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto sec = [](const timeval &t) { return double(t.tv_sec) + double(t.tv_usec) * 1e-6; };
    return sec(ru.ru_utime) + sec(ru.ru_stime);
}

// The sweep and the latency targets; named as their flags, since the CLI cannot range-check
// them all (a list, and a bound that excludes 0).
std::string validate_slo(const bench_options &o) {
    auto num = [](double v) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%g", v);
        return std::string(buf);
    };
    if (o.rates.size() > k_max_rates) {
        return "--rates takes at most " + std::to_string(k_max_rates) + " rates, got " + std::to_string(o.rates.size());
    }
    for (double r : o.rates) {
        if (!(r > 0 && r <= k_max_rate)) {
            return "--rates: every rate must be > 0 and <= " + num(k_max_rate) + " requests per second, got " + num(r);
        }
    }
    if (!o.rates.empty() && o.request_rate > 0) {
        return "--rates and --request-rate exclude each other (a sweep sets each run's rate)";
    }
    for (const auto &[name, v] : {std::pair{"--slo-ttft-ms", o.slo_ttft_ms}, std::pair{"--slo-itl-ms", o.slo_itl_ms}}) {
        if (!(v >= 0 && v <= k_max_slo_ms)) {
            return std::string(name) + " must be in [0, " + num(k_max_slo_ms) + "] ms (0 = no target), got " + num(v);
        }
    }
    if (!(o.slo_attainment > 0 && o.slo_attainment <= 1)) {
        return "--slo-attainment must be in (0, 1], got " + num(o.slo_attainment);
    }
    return {};
}

std::string validate(const bench_options &o) {
    auto range = [](const char *name, int64_t v, int64_t lo, int64_t hi) -> std::string {
        if (v < lo || v > hi) {
            return std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                   std::to_string(v);
        }
        return {};
    };
    if (!(o.request_rate >= 0 && o.request_rate <= 1e6)) {
        return "request_rate must be in [0, 1e6] requests per second (0 = closed loop), got " +
               std::to_string(o.request_rate);
    }
    if (std::string e = validate_slo(o); !e.empty()) {
        return e;
    }
    if (o.endpoint != "completions" && o.endpoint != "chat") {
        return "endpoint must be 'completions' or 'chat', got '" + o.endpoint + "'";
    }
    for (const std::string &e :
         {range("concurrency", o.concurrency, 1, k_max_concurrency), range("requests", o.requests, 1, k_max_requests),
          range("prompt_tokens", o.prompt_tokens, 1, k_max_prompt_tokens),
          range("max_tokens", o.max_tokens, 1, k_max_prompt_tokens),
          range("shared_prefix_tokens", o.shared_prefix_tokens, 0, k_max_prompt_tokens)}) {
        if (!e.empty()) {
            return e;
        }
    }
    return {};
}

void print_row(const char *name, const summary &s, const char *note) {
    if (s.n == 0) {
        std::printf("  %-12s %9s %9s %9s %9s   %s\n", name, "-", "-", "-", "-", note);
        return;
    }
    std::printf("  %-12s %9.2f %9.2f %9.2f %9.2f   %s\n", name, s.mean * 1e3, s.p50 * 1e3, s.p90 * 1e3, s.p99 * 1e3,
                note);
}

// Resolves the host and probes the server, which also takes the model from GET /v1/models when
// none was given. Returns the exit code to stop with, after printing why.
std::optional<int> reach_server(asio::io_context &ioc, run_state &st) {
    {
        tcp::resolver     resolver(ioc);
        beast::error_code ec;
        st.endpoints = resolver.resolve(st.tgt.host, st.tgt.port, ec);
        if (ec) {
            std::fprintf(stderr, "bench: cannot resolve %s: %s\n", st.tgt.host.c_str(), ec.message().c_str());
            return 1;
        }
    }
    std::string err;
    asio::co_spawn(ioc, probe(st, err), [&](const std::exception_ptr &e) {
        if (e) {
            err = "probe failed with an exception";
        }
    });
    ioc.run();
    if (!err.empty()) {
        std::fprintf(stderr, "bench: server not reachable at %s: %s\n", st.opts.url.c_str(), err.c_str());
        return 1;
    }
    return std::nullopt;
}

// The run's prompts, empty records and, with --request-rate, each request's arrival time.
void plan_requests(run_state &st) {
    const bench_options &opts = st.opts;
    st.prompts.reserve(size_t(opts.requests));
    for (int32_t i = 0; i < opts.requests; ++i) {
        st.prompts.push_back(make_prompt(opts, st.prompt_offset + i));
    }
    st.records.resize(size_t(opts.requests));
    if (opts.request_rate > 0) {
        // Exponential gaps by inversion from the same portable generator as the prompts.
        splitmix64 rng{(uint64_t(opts.seed) << 32) ^ 0x2545f4914f6cdd1dull};
        double     t = 0;
        for (int32_t i = 0; i < opts.requests; ++i) {
            st.arrivals.push_back(t);
            const double u = (double(rng.next() >> 11) + 0.5) / 9007199254740992.0; // (0, 1)
            t += -std::log(u) / opts.request_rate;
        }
    }
}

struct run_times {
    double wall_s = 0.0;
    double cpu_s  = 0.0; // this process's CPU time over the run
};

// Runs every request on min(concurrency, requests) workers; an exception that escapes a worker
// is kept in st.fatal.
run_times run_workers(asio::io_context &ioc, run_state &st) {
    const int32_t n_workers = std::min(st.opts.concurrency, st.opts.requests);
    ioc.restart();
    const double             cpu0 = cpu_seconds();
    const steady::time_point t0   = steady::now();
    st.t0                         = t0;
    for (int32_t w = 0; w < n_workers; ++w) {
        asio::co_spawn(ioc, worker(st), [&](const std::exception_ptr &e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception &ex) {
                    st.fatal = ex.what();
                } catch (...) {
                    st.fatal = "unknown exception";
                }
            }
        });
    }
    ioc.run();
    run_times t;
    t.wall_s = std::chrono::duration<double>(steady::now() - t0).count();
    t.cpu_s  = cpu_seconds() - cpu0;
    return t;
}

// What a run measured: counts over all requests, latencies and tokens over the successful ones.
struct run_totals {
    run_times                time;
    int32_t                  n_ok        = 0;
    int32_t                  n_failed    = 0;
    int32_t                  n_no_usage  = 0;
    int64_t                  out_total   = 0;
    double                   prompt_mean = -1.0; // -1: no response reported its prompt tokens
    double                   out_tps     = 0.0;
    double                   req_ps      = 0.0;
    std::vector<std::string> error_kinds; // distinct failure messages, at most k_max_error_kinds (+ a fatal one)
    summary                  ttft, itl, gap, e2e;
    slo_report               slo;
};

slo_targets targets_of(const bench_options &o) {
    return {o.slo_ttft_ms, o.slo_itl_ms};
}

// What the latency targets see of a request: TTFT from when it was due, gaps in milliseconds.
request_outcome outcome_of(const request_record &r) {
    request_outcome o;
    o.ok      = r.ok;
    o.ttft_ms = (r.due_wait_s + r.ttft_s) * 1e3;
    o.gaps_ms.reserve(r.gaps_s.size());
    for (double g : r.gaps_s) {
        o.gaps_ms.push_back(g * 1e3);
    }
    return o;
}

run_totals aggregate(const run_state &st, const run_times &time) {
    run_totals          t;
    std::vector<double> ttft, itl, gaps, e2e;
    int64_t             prompt_total = 0, prompt_n = 0;
    t.time = time;
    for (const request_record &r : st.records) {
        if (!r.ok) {
            ++t.n_failed;
            const std::string msg = r.error.empty() ? "not run (worker aborted)" : r.error;
            if (t.error_kinds.size() < k_max_error_kinds &&
                std::find(t.error_kinds.begin(), t.error_kinds.end(), msg) == t.error_kinds.end()) {
                t.error_kinds.push_back(msg);
            }
            continue;
        }
        ++t.n_ok;
        t.out_total += r.output_tokens;
        if (r.prompt_tokens >= 0) {
            prompt_total += r.prompt_tokens;
            ++prompt_n;
        }
        t.n_no_usage += r.usage_seen ? 0 : 1;
        ttft.push_back(r.ttft_s);
        e2e.push_back(r.e2e_s);
        if (r.output_tokens > 1) {
            itl.push_back((r.e2e_s - r.ttft_s) / double(r.output_tokens - 1));
        }
        gaps.insert(gaps.end(), r.gaps_s.begin(), r.gaps_s.end());
    }
    if (!st.fatal.empty()) {
        t.error_kinds.push_back("internal: " + st.fatal);
    }
    t.ttft        = summarize(ttft);
    t.itl         = summarize(itl);
    t.gap         = summarize(gaps);
    t.e2e         = summarize(e2e);
    t.out_tps     = time.wall_s > 0 ? double(t.out_total) / time.wall_s : 0.0;
    t.req_ps      = time.wall_s > 0 ? double(t.n_ok) / time.wall_s : 0.0;
    t.prompt_mean = prompt_n > 0 ? double(prompt_total) / double(prompt_n) : -1.0;
    std::vector<request_outcome> outcomes;
    outcomes.reserve(st.records.size());
    for (const request_record &r : st.records) {
        outcomes.push_back(outcome_of(r));
    }
    t.slo = attainment(outcomes, targets_of(st.opts), time.wall_s, st.opts.request_rate);
    return t;
}

std::string target_text(double ms) {
    char buf[48];
    if (ms > 0) {
        std::snprintf(buf, sizeof(buf), "<= %g ms", ms);
    } else {
        std::snprintf(buf, sizeof(buf), "(no target)");
    }
    return buf;
}

void print_slo(const bench_options &opts, const slo_report &r) {
    std::printf("  SLO          TTFT %s: %.1f%%, ITL p99 %s: %.1f%%, both: %.1f%% (%d of %d)\n",
                target_text(opts.slo_ttft_ms).c_str(), 100.0 * r.share_ttft, target_text(opts.slo_itl_ms).c_str(),
                100.0 * r.share_itl, 100.0 * r.share_both, r.met_both, r.requests);
    std::printf("  goodput      %.4f req/s meeting both (offered %.4g req/s, achieved %.4f req/s)\n", r.goodput,
                r.offered_rate, r.achieved_rate);
}

void print_report(const run_state &st, const run_totals &t) {
    const bench_options &opts   = st.opts;
    const double         wall_s = t.time.wall_s;
    const char          *path   = opts.endpoint == "chat" ? "/v1/chat/completions" : "/v1/completions";
    std::printf("inferbox bench%s%s\n", opts.label.empty() ? "" : ": ", opts.label.c_str());
    std::printf("  server       http://%s:%s%s%s  model %s\n", st.tgt.host.c_str(), st.tgt.port.c_str(),
                st.tgt.base_path.c_str(), path, st.model.c_str());
    std::printf("  load         concurrency %d, %d requests, ~%d prompt words", opts.concurrency, opts.requests,
                opts.shared_prefix_tokens > 0
                    ? opts.shared_prefix_tokens +
                          std::max(opts.prompt_tokens - opts.shared_prefix_tokens, k_min_unique_tail)
                    : opts.prompt_tokens);
    if (opts.shared_prefix_tokens > 0) {
        std::printf(" (shared prefix %d)", opts.shared_prefix_tokens);
    }
    std::printf(", max_tokens %d%s", opts.max_tokens, opts.ignore_eos ? ", ignore_eos" : "");
    if (opts.request_rate > 0) {
        std::printf(", Poisson arrivals at %.3g req/s", opts.request_rate);
    }
    std::printf("\n");
    std::printf("  completed    %d ok, %d failed in %.3f s\n", t.n_ok, t.n_failed, wall_s);
    if (t.prompt_mean >= 0) {
        std::printf("  tokens       %" PRId64 " output, mean prompt %.1f (server usage)\n", t.out_total, t.prompt_mean);
    } else {
        std::printf("  tokens       %" PRId64 " output\n", t.out_total);
    }
    if (t.n_no_usage > 0) {
        std::printf("  note         %d responses had no usage chunk: their output tokens are content chunks\n",
                    t.n_no_usage);
    }
    std::printf("  throughput   %.2f output tok/s, %.3f req/s\n", t.out_tps, t.req_ps);
    std::printf("  %-12s %9s %9s %9s %9s   (ms)\n", "", "mean", "p50", "p90", "p99");
    print_row("TTFT", t.ttft, "send -> first content");
    print_row("ITL", t.itl, "per request (e2e - ttft) / (tokens - 1)");
    print_row("chunk gap", t.gap, "between content chunks, all requests");
    print_row("E2E", t.e2e, "send -> end of stream");
    std::printf("  client CPU   %.3f s (%.1f%% of one core over the run)\n", t.time.cpu_s,
                wall_s > 0 ? 100.0 * t.time.cpu_s / wall_s : 0.0);
    if (opts.slo_ttft_ms > 0 || opts.slo_itl_ms > 0 || !opts.rates.empty()) {
        print_slo(opts, t.slo);
    }
    for (const std::string &e : t.error_kinds) {
        std::printf("  error        %s\n", e.c_str());
    }
}

json per_request_json(const std::vector<request_record> &records, const slo_targets &targets) {
    json out = json::array();
    for (const request_record &r : records) {
        json              j = {{"ok", r.ok}, {"output_tokens", r.output_tokens}, {"prompt_tokens", r.prompt_tokens}};
        const slo_verdict v = judge(outcome_of(r), targets);
        j["slo_ttft_met"]   = v.ttft;
        j["slo_itl_met"]    = v.itl;
        if (r.ok) {
            j["due_wait_ms"] = r.due_wait_s * 1e3; // open loop: sent this long after it was due
            j["itl_p99_ms"]  = v.itl_p99_ms;       // of this request's own gaps
            j["ttft_ms"]     = r.ttft_s * 1e3;
            j["e2e_ms"]      = r.e2e_s * 1e3;
            // Where the request's longest stall was: the gap after content chunk `at` (0 =
            // between the first and second chunk), so a stall tied to a stream's start or end shows.
            if (!r.gaps_s.empty()) {
                const auto longest = std::max_element(r.gaps_s.begin(), r.gaps_s.end());
                j["max_gap_ms"]    = *longest * 1e3;
                j["max_gap_at"]    = std::distance(r.gaps_s.begin(), longest);
            }
        } else {
            j["error"] = r.error;
        }
        out.push_back(std::move(j));
    }
    return out;
}

json slo_json(const bench_options &opts, const slo_report &r) {
    return {
        {"ttft_target_ms", opts.slo_ttft_ms},
        {"itl_target_ms", opts.slo_itl_ms},
        {"offered_rate_req_s", r.offered_rate},
        {"achieved_rate_req_s", r.achieved_rate},
        {"requests", r.requests},
        {"met_ttft", r.met_ttft},
        {"met_itl", r.met_itl},
        {"met_both", r.met_both},
        {"share_ttft", r.share_ttft},
        {"share_itl", r.share_itl},
        {"share_both", r.share_both},
        {"goodput_req_s", r.goodput},
    };
}

// One run's results as the --json-out report holds them.
json run_json(const run_state &st, const run_totals &t) {
    const bench_options &opts   = st.opts;
    const double         wall_s = t.time.wall_s;
    json                 out    = {
                           {"label", opts.label},
                           {"url", opts.url},
                           {"endpoint", opts.endpoint},
                           {"model", st.model},
                           {"concurrency", opts.concurrency},
                           {"requests", opts.requests},
                           {"prompt_tokens", opts.prompt_tokens},
                           {"max_tokens", opts.max_tokens},
                           {"shared_prefix_tokens", opts.shared_prefix_tokens},
                           {"seed", opts.seed},
                           {"request_rate", opts.request_rate},
                           {"ignore_eos", opts.ignore_eos},
                           {"completed", t.n_ok},
                           {"failed", t.n_failed},
                           {"errors", t.error_kinds},
                           {"duration_s", wall_s},
                           {"output_tokens_total", t.out_total},
                           {"prompt_tokens_mean", t.prompt_mean},
                           {"output_throughput_tok_s", t.out_tps},
                           {"request_throughput_req_s", t.req_ps},
                           {"ttft_ms", to_json_ms(t.ttft)},
                           {"itl_ms", to_json_ms(t.itl)},
                           {"chunk_gap_ms", to_json_ms(t.gap)},
                           {"e2e_ms", to_json_ms(t.e2e)},
                           {"client_cpu_s", t.time.cpu_s},
                           {"client_cpu_fraction", wall_s > 0 ? t.time.cpu_s / wall_s : 0.0},
                           {"slo", slo_json(opts, t.slo)},
                           {"per_request", per_request_json(st.records, targets_of(opts))},
    };
    return out;
}

// Writes the --json-out report; false when the file cannot be written (after saying so).
bool write_json_file(const std::string &path, const json &out) {
    std::ofstream f(path, std::ios::trunc);
    f << out.dump(2) << '\n';
    f.close();
    if (!f) {
        std::fprintf(stderr, "bench: cannot write %s\n", path.c_str());
        return false;
    }
    return true;
}

void print_sweep(const bench_options &opts, const std::vector<slo_report> &reports, std::optional<double> best) {
    std::printf("goodput sweep%s%s: TTFT %s, per-request ITL p99 %s, %d requests a rate\n",
                opts.label.empty() ? "" : ": ", opts.label.c_str(), target_text(opts.slo_ttft_ms).c_str(),
                target_text(opts.slo_itl_ms).c_str(), opts.requests);
    std::printf("  %10s %10s %8s %8s %8s %10s\n", "rate req/s", "achieved", "TTFT ok", "ITL ok", "both", "goodput");
    for (const slo_report &r : reports) {
        std::printf("  %10.4g %10.4f %7.1f%% %7.1f%% %7.1f%% %10.4f\n", r.offered_rate, r.achieved_rate,
                    100.0 * r.share_ttft, 100.0 * r.share_itl, 100.0 * r.share_both, r.goodput);
    }
    if (best) {
        std::printf("  highest rate with >= %.1f%% meeting both: %.4g req/s\n", 100.0 * opts.slo_attainment, *best);
    } else {
        std::printf("  highest rate with >= %.1f%% meeting both: none (the lowest rate, %.4g req/s, misses)\n",
                    100.0 * opts.slo_attainment, reports.empty() ? 0.0 : reports.front().offered_rate);
    }
}

json sweep_json(const bench_options &opts, const run_state &probed, const std::vector<slo_report> &reports,
                std::optional<double> best, json runs) {
    json table = json::array();
    for (const slo_report &r : reports) {
        table.push_back({{"rate_req_s", r.offered_rate},
                         {"achieved_rate_req_s", r.achieved_rate},
                         {"share_ttft", r.share_ttft},
                         {"share_itl", r.share_itl},
                         {"share_both", r.share_both},
                         {"goodput_req_s", r.goodput}});
    }
    return {
        {"label", opts.label},
        {"url", opts.url},
        {"endpoint", opts.endpoint},
        {"model", probed.model},
        {"concurrency", opts.concurrency},
        {"requests", opts.requests},
        {"prompt_tokens", opts.prompt_tokens},
        {"max_tokens", opts.max_tokens},
        {"seed", opts.seed},
        {"slo_ttft_ms", opts.slo_ttft_ms},
        {"slo_itl_ms", opts.slo_itl_ms},
        {"slo_attainment", opts.slo_attainment},
        {"highest_rate_meeting_slo", best ? json(*best) : json(nullptr)},
        {"sweep", std::move(table)},
        {"runs", std::move(runs)},
    };
}

// --rates: one open-loop run per rate, ascending, each with its own prompts; then the table and
// the highest rate meeting the attainment target.
int run_sweep(asio::io_context &ioc, const run_state &probed) {
    const bench_options &opts  = probed.opts;
    std::vector<double>  rates = opts.rates;
    std::sort(rates.begin(), rates.end());
    rates.erase(std::unique(rates.begin(), rates.end()), rates.end());
    json                    runs = json::array();
    std::vector<rate_point> points;
    std::vector<slo_report> reports;
    int                     rc = 0;
    for (size_t k = 0; k < rates.size(); ++k) {
        bench_options o = opts;
        o.request_rate  = rates[k];
        run_state st{o, probed.tgt, probed.endpoints, probed.model, {}, {}, {}, {}, 0, {}, 0};
        st.prompt_offset = static_cast<int32_t>(k) * opts.requests;
        plan_requests(st);
        const run_totals t = aggregate(st, run_workers(ioc, st));
        print_report(st, t);
        std::printf("\n");
        rc = (t.n_failed > 0 || !st.fatal.empty()) ? 1 : rc;
        runs.push_back(run_json(st, t));
        points.push_back({rates[k], t.slo.share_both});
        reports.push_back(t.slo);
    }
    const std::optional<double> best = highest_rate_meeting(points, opts.slo_attainment);
    print_sweep(opts, reports, best);
    if (!opts.json_out.empty() && !write_json_file(opts.json_out, sweep_json(opts, probed, reports, best, runs))) {
        rc = 1;
    }
    return rc;
}

} // namespace

int run_bench(const bench_options &opts) {
    if (std::string e = validate(opts); !e.empty()) {
        std::fprintf(stderr, "bench: %s\n", e.c_str());
        return 2;
    }
    std::string err;
    auto        tgt = parse_url(opts.url, err);
    if (!tgt) {
        std::fprintf(stderr, "bench: %s\n", err.c_str());
        return 2;
    }

    asio::io_context ioc(1);
    run_state        st{opts, *tgt, {}, opts.model, {}, {}, {}, {}, 0, {}, 0};
    if (auto rc = reach_server(ioc, st)) {
        return *rc;
    }
    if (!opts.rates.empty()) {
        return run_sweep(ioc, st);
    }
    plan_requests(st);
    const run_totals t = aggregate(st, run_workers(ioc, st));
    print_report(st, t);

    int rc = (t.n_failed > 0 || !st.fatal.empty()) ? 1 : 0;
    if (!opts.json_out.empty() && !write_json_file(opts.json_out, run_json(st, t))) {
        rc = 1;
    }
    return rc;
}

} // namespace inferbox

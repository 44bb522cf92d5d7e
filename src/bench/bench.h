#pragma once
// A load generator for any OpenAI-compatible server (inferbox, llama-server, vLLM, ...). It keeps
// `concurrency` streaming requests in flight until `requests` have finished and reports TTFT, ITL,
// end-to-end latency and throughput the way vLLM's `bench serve` and NVIDIA AIPerf define them.
//
// The HTTP client is plain HTTP/1.1 (no TLS) on one thread; each in-flight request has its own
// keep-alive connection, so the measured latencies include no client-side queueing.

#include <cstdint>
#include <string>
#include <vector>

namespace inferbox {

struct bench_options {
    std::string url      = "http://127.0.0.1:8000"; // base URL of any OpenAI-compatible server
    std::string endpoint = "completions";           // "completions" or "chat"
    std::string model;                              // sent as "model"; empty = ask GET /v1/models and use the first id
    int32_t     concurrency   = 1;
    int32_t     requests      = 16;
    int32_t     prompt_tokens = 64; // approximate prompt length (words chosen so the tokenizer gives roughly this many)
    int32_t     max_tokens    = 128;
    int32_t shared_prefix_tokens = 0; // >0: every prompt starts with the same prefix of this length, then a unique tail
    uint32_t seed                = 1;
    // Open-loop arrivals (vLLM's --request-rate): > 0 sends request i at the i-th arrival of a
    // Poisson process of this many requests per second (seeded by `seed`), still at most
    // `concurrency` in flight (an arrival waits for a free connection, and its TTFT counts from
    // when it is sent). 0: closed loop, a new request as soon as one finishes.
    double request_rate = 0;
    // A sweep (--rates): one open-loop run per rate, ascending, each with its own prompts (so no
    // server reuses a prompt cached in an earlier run) and the same arrival pattern scaled to the
    // rate. Excludes request_rate. Empty: one run.
    std::vector<double> rates;
    // Latency targets (bench/slo.h): each run reports the share of requests meeting each and
    // both, and goodput (requests/s meeting both); a sweep also the highest rate at which at least
    // slo_attainment of the requests met both. 0 = no target.
    double      slo_ttft_ms    = 0;
    double      slo_itl_ms     = 0; // per request: the p99 of its own inter-token gaps
    double      slo_attainment = 0.9;
    bool        ignore_eos     = true; // send "ignore_eos": true so every request generates max_tokens
    std::string json_out;              // if set, write the results as JSON to this file
    std::string label;                 // free text copied into the report
};

// Runs the benchmark, prints a human-readable report to stdout, returns 0 on success, non-zero if
// the server could not be reached or any request failed (failures are counted and reported).
//
// Contract: blocks the calling thread for the whole run (it runs its own io_context on that
// thread); every request is bounded by a 600 s deadline, so the call always returns. Returns 2 for
// invalid options (message on stderr) and 1 when the server is unreachable, a request failed or the
// JSON file could not be written. The same options and seed always produce the same prompts.
int run_bench(const bench_options &opts);

} // namespace inferbox

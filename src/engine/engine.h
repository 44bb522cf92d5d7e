#pragma once
// The engine core: one thread that owns a decoder (engine/decoder.h; llama.cpp in production,
// engine/llama_decoder.h), runs the scheduler's plan each step (one decode for all running
// sequences plus one for prompt chunks), samples each sequence with its own sampler chain, and
// publishes events to the requests' channels. It never does network I/O and never calls
// llama.cpp itself: its library does not link it.

#include "common/kv_cache_type.h"
#include "common/status.h"
#include "engine/decoder.h"
#include "engine/types.h"
#include "metrics/serving_metrics.h"
#include "model/model.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace inferbox {
struct plan_item;
struct step_plan;
} // namespace inferbox

namespace inferbox {

enum class flash_attention { automatic, on, off };

struct engine_config {
    int32_t n_threads   = 0;    // 0 = all hardware threads
    int32_t parallel    = 4;    // --parallel: sequences decoded together, one KV slot each
    int32_t n_ctx_slot  = 0;    // tokens per sequence; 0 = the model's trained context
    int32_t step_tokens = 2048; // tokens per decode step (llama.cpp's n_batch)
    int32_t micro_batch = 512;  // tokens per compute graph (n_ubatch), at most step_tokens: common/micro_batch.h
    int32_t prefill_while_decode = 256; // prompt tokens per step for arrivals while others decode (docs/benchmarks.md)
    int32_t prefill_step_ms      = 50;  // prompt work after which a step's other prompts wait (scheduler.cpp); 0 = off
    int32_t max_queue            = 64;  // --max-queue: queued sequences beyond which submit() answers overloaded
    // Latency targets (--slo-ttft-ms, --slo-itl-ms; 0 = none): scheduler_config's slo_ttft_us and
    // slo_itl_us. The ITL target bounds each step's prompt work beside decodes by the measured
    // costs; the TTFT target admits and prefills the earliest deadline first.
    int32_t slo_ttft_ms  = 0;
    int32_t slo_itl_ms   = 0;
    bool    prefix_reuse = true;
    bool    kv_unified   = false;
    int32_t max_loras    = 8; // LoRA adapters loaded at once; the least recently used idle one goes
    // The KV cache's type (common/kv_cache_type.h); nullopt ("auto", before serve settles it)
    // reads as f16.
    std::optional<kv_cache_type> kv_type    = kv_cache_type::f16;
    flash_attention              flash_attn = flash_attention::automatic;
    // Speculative decoding: each step, a decoding sequence that allows it (generation_request::
    // speculative) gets up to draft_max guessed tokens, verified in the same decode. Guesses come
    // from prompt lookup when draft_ngram is on and the sequence's last tokens repeat, else from
    // draft_model (same tokenizer) when there is one. Greedy output is the same either way.
    std::shared_ptr<const model> draft_model;
    bool                         draft_ngram = false;
    int32_t                      draft_max   = 8;
    // Drafting only while at most this many sequences decode: a fuller batch already keeps the
    // hardware busy, and wider verification steps then cost more than the accepted drafts save.
    int32_t draft_max_batch = 1;
    float   draft_p_min     = 0.5f; // the draft model stops guessing below this probability
    // Where the engine reports gauges, token counters and per-token timings; may be null.
    std::shared_ptr<serving_metrics> metrics;
};

struct engine_stats {
    int32_t  n_running          = 0;
    int32_t  n_waiting          = 0;
    uint64_t n_generated_tokens = 0;
    uint64_t n_draft_tokens     = 0; // guessed tokens verified
    uint64_t n_draft_accepted   = 0; // of those, tokens the served model agreed with
};

class engine {
  public:
    // `cfg` with its defaults filled in (a model trained for `n_ctx_train` tokens) and its
    // bounds applied, or an error naming the setting out of range. What a decoder is made for.
    static result<engine_config> settle(engine_config cfg, int32_t n_ctx_train);
    // Starts the engine thread over `dec` (made for settle(cfg)) after a warm-up decode on it.
    // `m` is the model `dec` runs, for get_model(); null where the decoder is not llama.cpp's
    // (engine/llama_decoder.h's start_engine starts the production one).
    static result<std::unique_ptr<engine>> start(std::unique_ptr<decoder> dec, engine_config cfg,
                                                 std::shared_ptr<const model> m = nullptr);
    ~engine(); // stops the thread; pending requests get an `unavailable` error event
    engine(const engine &)            = delete;
    engine &operator=(const engine &) = delete;

    // Thread-safe, never blocks on the engine. Queues `req` (already validated against
    // limits()) and returns nothing, or an error: `overloaded` when slots and queue are full,
    // `unavailable` when stopping. Events then arrive on `chan`.
    std::optional<error> submit(generation_request req, std::shared_ptr<request_channel> chan);
    // Thread-safe. The `overloaded` error submit() would give `n` more sequences now, if any: the
    // API sheds load with it before it tokenizes and compiles grammars. Advisory (sequences come
    // and go); submit() decides. Both count every sequence in flight, running or waiting, against
    // parallel + max_queue.
    std::optional<error> over_capacity(int32_t n) const;

    // Thread-safe. The request stops within one engine step and its slot is freed; no further
    // events are delivered after the engine notices.
    void cancel(const std::shared_ptr<request_channel> &chan);

    // Stops admitting and ends the thread (idempotent).
    void stop();

    // Thread-safe, for the fatal path only (a remote worker lost, engine/rpc.h): every request
    // submitted and not yet finished gets an error event with `err`, and submit() refuses new
    // ones. Touches none of the engine thread's state, which may be stuck in a decode that never
    // returns; the process is expected to exit right after.
    void abandon(const error &err);

    // How long the step now running has been running; zero while the engine waits for work.
    // A watchdog reads it to notice a decode that hangs (a remote worker that went silent).
    std::chrono::steady_clock::duration busy_for() const;

    int32_t              n_ctx_slot() const { return cfg_.n_ctx_slot; }
    const engine_config &config() const { return cfg_; }
    // The model the API tokenizes and renders with; only for an engine start_engine started.
    const model &get_model() const { return *model_; }
    bool         healthy() const { return healthy_.load(); }
    // Exceptions the engine loop caught (each one ends the engine's service: healthy() turns false).
    uint64_t     unexpected_exceptions() const { return unexpected_.load(); }
    engine_stats stats() const;

  private:
    // The overloaded error, naming the bound.
    error capacity_error(int32_t waiting, int32_t running) const;
    // The admission bound: n more sequences do not fit beside `waiting` + `running` in slots + queue.
    bool exceeds_capacity(int32_t waiting, int32_t running, int32_t n) const;
    bool decode_failpoint(); // test builds: fail this step's decode (INFERBOX_FAILPOINT_DECODE)
    struct sequence;
    struct pending {
        generation_request                    req;
        std::shared_ptr<request_channel>      chan;
        std::chrono::steady_clock::time_point submitted;
    };

    engine(std::unique_ptr<decoder> dec, engine_config cfg, std::shared_ptr<const model> m);
    void loop();
    void step();
    void accept_new(std::vector<pending> &incoming);
    void drop_cancelled();
    // Samples a plan item at its batch index (the first of its tokens when it carries drafts),
    // accepting drafts while they match.
    void sample_item(const plan_item &it, int32_t first_index);
    // Decodes some of a step's items as one llama.cpp batch and samples them (engine.cpp).
    void run_batch(const step_plan &plan, std::vector<const plan_item *> items, bool prompts);
    void propose_drafts();                      // speculative decoding: set_draft() for the sequences that take one
    bool speculating() const;                   // drafting is configured
    void fail_sequence(uint64_t id, error err); // error event, slot freed, sequence gone
    void publish_gauges();
    // Loads `lora` if needed (evicting the least recently used adapter no sequence uses) and
    // returns the kv_key its sequences run under.
    result<uint64_t> lora_key(const lora_choice &lora);
    void             apply_key(uint64_t key); // sets the context's adapters for a step under `key`

    std::shared_ptr<const model> model_; // may be null (see start)
    engine_config                cfg_;
    std::unique_ptr<decoder>     dec_;

    struct state; // engine-thread-only state (scheduler, sequences, batch)
    std::unique_ptr<state> st_;

    std::mutex              mu_;
    std::condition_variable cv_;
    std::vector<pending>    inbox_;
    // Set under mu_ (so the condition variable's waiters see it); atomic so that submit() can
    // refuse a stopping server before its capacity check, without the lock.
    std::atomic<bool> stopping_{false};
    // Every channel submitted (under mu_), for abandon(); expired entries are pruned as it grows.
    std::vector<std::weak_ptr<request_channel>> live_;
    size_t                                      live_prune_at_ = 64;
    std::atomic<int64_t>  step_started_{0}; // steady_clock ticks when the running step began; 0 = idle
    std::atomic<int32_t>  n_queued_{0};     // sequences submitted and not yet in a slot
    std::atomic<bool>     healthy_{true};
    std::atomic<uint64_t> unexpected_{0};
    std::atomic<int32_t>  n_running_{0};
    std::atomic<uint64_t> n_generated_{0};
    // Prefill cost: moving average of microseconds per token over batches that computed at least
    // k_prefill_sample_tokens prompt tokens; 0 until one has. Drives coalesce_window() (scheduler.h's arrival_window).
    double                    prefill_us_per_token_   = 0; // engine thread only
    static constexpr uint64_t k_prefill_sample_tokens = 16;
    // For the ITL target (scheduler::set_step_costs), engine thread only, moving averages like the
    // above: a step's decode part (from its start through the decode batch and its sampling), by
    // the number of sequences it decoded (index; parallel + 1 entries), and per token, the prompt
    // batches of steps that also decoded (at least k_itl_min_prompt_tokens).
    std::vector<double>       decode_step_us_;
    double                    itl_prompt_us_per_token_ = 0;
    static void               measure(double &avg, std::chrono::steady_clock::time_point since, int32_t n);
    std::chrono::microseconds coalesce_window() const;
    std::atomic<uint64_t>     n_draft_{0}, n_draft_accepted_{0};
    std::thread               thread_;
};

} // namespace inferbox

#include "engine/engine.h"

#include "common/failpoint.h"
#include "common/text_stream.h"
#include "scheduler/ngram_draft.h"
#include "scheduler/scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <future>
#include <map>
#include <numeric>

namespace inferbox {

struct engine::sequence {
    std::shared_ptr<request_channel>          chan;
    std::shared_ptr<const generation_request> req;
    int32_t                                   index = 0;
    std::unique_ptr<sequence_sampler>         smpl;
    std::unique_ptr<text_stream>              text;
    std::chrono::steady_clock::time_point     submitted;
    std::chrono::steady_clock::time_point     last_token;
    kv_key                                    key = 0; // 0 = the base model; else a LoRA at one scale
};

// A loaded LoRA adapter. Its kv_key is (id << 32) | scale in thousandths, so KV computed under
// one adapter and scale is never reused under another, and a reloaded adapter gets a new id.
struct loaded_lora {
    adapter_handle handle    = 0; // the decoder's
    uint32_t       id        = 0;
    uint64_t       last_used = 0;
};

struct engine::state {
    explicit state(const scheduler_config &c) : sched(c) {}
    scheduler                                     sched;
    std::map<uint64_t, std::unique_ptr<sequence>> seqs;
    uint64_t                                      next_id = 1;
    std::vector<batch_token>                      batch; // the step's batch being built, reused
    int32_t                                       consecutive_failures = 0;
    std::map<std::string, loaded_lora>            loras; // by file path
    uint32_t                                      next_lora_id = 1;
    uint64_t                                      lora_clock   = 0;
    kv_key                                        ctx_key      = 0; // what the decoder's adapter is set to
};

engine::engine(std::unique_ptr<decoder> dec, engine_config cfg, std::shared_ptr<const model> m)
    : model_(std::move(m)), cfg_(std::move(cfg)), dec_(std::move(dec)) {}

result<engine_config> engine::settle(engine_config cfg, int32_t n_ctx_train) {
    if (cfg.parallel < 1 || cfg.parallel > 256) {
        return error::invalid("--parallel must be between 1 and 256, got " + std::to_string(cfg.parallel), "parallel");
    }
    if (cfg.n_ctx_slot <= 0) {
        cfg.n_ctx_slot = n_ctx_train;
    }
    if (cfg.n_threads <= 0) {
        cfg.n_threads = static_cast<int32_t>(std::max(1U, std::thread::hardware_concurrency()));
    }
    cfg.step_tokens                = std::max(cfg.step_tokens, cfg.parallel + 1);
    cfg.prefill_while_decode       = std::clamp(cfg.prefill_while_decode, 1, cfg.step_tokens);
    cfg.draft_max                  = std::clamp(cfg.draft_max, 1, 64);
    constexpr int32_t k_max_slo_ms = 3'600'000;
    for (const auto &[flag, v] : {std::pair{"slo-ttft-ms", cfg.slo_ttft_ms}, std::pair{"slo-itl-ms", cfg.slo_itl_ms}}) {
        if (v < 0 || v > k_max_slo_ms) {
            return error::invalid(std::string("--") + flag + " must be between 0 (no target) and " +
                                      std::to_string(k_max_slo_ms) + " ms, got " + std::to_string(v),
                                  flag);
        }
    }
    return cfg;
}

result<std::unique_ptr<engine>> engine::start(std::unique_ptr<decoder> dec, engine_config cfg,
                                              std::shared_ptr<const model> m) {
    auto settled = settle(std::move(cfg), dec->n_ctx_slot());
    if (!settled) {
        return settled.err();
    }
    std::unique_ptr<engine> e(new engine(std::move(dec), std::move(*settled), std::move(m)));
    // The decoder may have settled on less than asked (llama.cpp rounds the context and caps a
    // batch at it): a slot never holds more, and a step never exceeds, what it accepts.
    e->cfg_.n_ctx_slot           = std::min(e->cfg_.n_ctx_slot, e->dec_->n_ctx_slot());
    e->cfg_.step_tokens          = std::min(e->cfg_.step_tokens, e->dec_->max_batch());
    e->cfg_.prefill_while_decode = std::min(e->cfg_.prefill_while_decode, e->cfg_.step_tokens);

    // The scheduler's waiting bound: submit() admits up to slots + queue sequences in flight, and all of them may
    // reach the scheduler's waiting queue before its next step moves some into slots.
    scheduler_config sc;
    sc.n_slots              = e->cfg_.parallel;
    sc.n_ctx_slot           = e->cfg_.n_ctx_slot;
    sc.max_waiting          = e->cfg_.max_queue + e->cfg_.parallel;
    sc.step_tokens          = e->cfg_.step_tokens;
    sc.prefill_while_decode = e->cfg_.prefill_while_decode;
    sc.prefill_step_us      = 1000.0 * std::max(e->cfg_.prefill_step_ms, 0);
    sc.prefix_reuse         = e->cfg_.prefix_reuse;
    sc.slo_ttft_us          = 1000.0 * e->cfg_.slo_ttft_ms;
    sc.slo_itl_us           = 1000.0 * e->cfg_.slo_itl_ms;
    e->st_                  = std::make_unique<state>(sc);
    e->st_->batch.reserve(static_cast<size_t>(e->cfg_.step_tokens));
    e->decode_step_us_.assign(static_cast<size_t>(e->cfg_.parallel) + 1, 0.0);
    if (e->cfg_.draft_ngram && e->dec_->drafter() == nullptr) { // a draft model's decoder says so itself
        spdlog::info("speculative decoding: up to {} draft tokens per step from prompt lookup", e->cfg_.draft_max);
    }

    // Warm-up: one real decode proves the backend works before readiness turns green. It runs
    // on the engine thread, like every later decode: with ggml's OpenMP build each thread that
    // computes keeps its own pool of workers, and once libgomp manages more threads than there
    // are cores it stops spinning at barriers and sleeps in futex at every graph node (a warm-up
    // on the caller's thread made single-stream decoding several times slower).
    std::promise<bool> warmed;
    auto               warmed_up = warmed.get_future();
    e->thread_                   = std::thread([p = e.get(), &warmed] {
        const bool ok = p->dec_->warm_up();
        warmed.set_value(ok);
        if (ok) {
            p->loop();
        }
    });
    if (!warmed_up.get()) {
        e->thread_.join();
        return error{error_kind::internal, "warm-up decode failed", "", ""};
    }
    return e;
}

engine::~engine() {
    stop();
    st_.reset(); // the sequences' samplers go before the decoder that made them
    dec_.reset();
}

// Called with mu_ held, by the engine thread, when it wakes from idle with inbox_ non-empty.
std::chrono::microseconds engine::coalesce_window() const {
    if (stopping_ || inbox_.empty()) {
        return std::chrono::microseconds(0);
    }
    return arrival_window(prefill_us_per_token_, static_cast<int32_t>(inbox_.front().req.prompt.size()),
                          static_cast<int32_t>(inbox_.size()), cfg_.parallel);
}

void engine::stop() {
    {
        std::lock_guard lock(mu_);
        if (stopping_ && !thread_.joinable()) {
            return;
        }
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) {
        thread_.join();
    }
}

error engine::capacity_error(int32_t waiting, int32_t running) const {
    return error{error_kind::overloaded,
                 "the server is at capacity: " + std::to_string(running) + " sequences running and " +
                     std::to_string(waiting) + " waiting (limit " + std::to_string(cfg_.parallel) + " slots + " +
                     std::to_string(cfg_.max_queue) + " queued: --parallel, --max-queue); retry shortly",
                 "", "queue_full"};
}

// The admission bound counts every sequence in flight, running or waiting, against slots +
// queue. Counting the waiting ones alone would make admission depend on the engine's timing: a
// burst that arrives before the engine moves its first requests into slots would find the queue
// "full" of requests that are about to run, and fewer than slots + queue would be admitted.
//
// Ordering: the engine thread stores the new running count before it takes admitted sequences
// off n_queued_, and readers load n_queued_ before n_running_, so a reader may count a sequence
// twice (a spurious refusal at the very edge of capacity) but never zero times.
bool engine::exceeds_capacity(int32_t waiting, int32_t running, int32_t n) const {
    return waiting + running + n > cfg_.parallel + cfg_.max_queue;
}

std::optional<error> engine::over_capacity(int32_t n) const {
    n                     = std::max(n, 1);
    const int32_t waiting = n_queued_.load();
    const int32_t running = n_running_.load();
    if (n <= cfg_.max_queue && exceeds_capacity(waiting, running, n)) {
        return capacity_error(waiting, running);
    }
    return std::nullopt;
}

std::optional<error> engine::submit(generation_request req, std::shared_ptr<request_channel> chan) {
    const int32_t n = std::max(req.n, 1);
    if (n > cfg_.max_queue) {
        // No amount of waiting makes room: a client error, not a retryable 429.
        return error::invalid("n is " + std::to_string(n) + " but the server queues at most " +
                                  std::to_string(cfg_.max_queue) + " sequences at once (--max-queue)",
                              "n", "n_over_queue_limit");
    }
    if (stopping_.load()) {
        // Before the capacity check: a stopping server answers "unavailable" (go elsewhere), not
        // "retry shortly", however full it is.
        return error{error_kind::unavailable, "the server is shutting down", "", ""};
    }
    // Admission bound: reserve n places among slots + queue or refuse at once. The CAS on
    // n_queued_ serializes submitters; the engine thread only lowers it.
    int32_t cur = n_queued_.load();
    do {
        const int32_t running = n_running_.load();
        if (exceeds_capacity(cur, running, n)) {
            return capacity_error(cur, running);
        }
    } while (!n_queued_.compare_exchange_weak(cur, cur + n));
    {
        std::lock_guard lock(mu_);
        if (stopping_) {
            n_queued_ -= n;
            return error{error_kind::unavailable, "the server is shutting down", "", ""};
        }
        if (live_.size() >= live_prune_at_) {
            std::erase_if(live_, [](const auto &w) { return w.expired(); });
            live_prune_at_ = std::max<size_t>(64, 2 * live_.size());
        }
        live_.push_back(chan);
        inbox_.push_back({std::move(req), std::move(chan), std::chrono::steady_clock::now()});
    }
    if (cfg_.metrics) {
        cfg_.metrics->requests_waiting.set(n_queued_.load());
    }
    cv_.notify_one();
    return std::nullopt;
}

void engine::abandon(const error &err) {
    std::vector<std::shared_ptr<request_channel>> chans;
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
        for (const auto &w : live_) {
            if (auto c = w.lock(); c && !c->cancelled()) {
                chans.push_back(std::move(c));
            }
        }
        live_.clear();
    }
    for (const auto &c : chans) {
        generation_event ev;
        ev.err = err;
        c->push(std::move(ev));
    }
}

std::chrono::steady_clock::duration engine::busy_for() const {
    const int64_t since = step_started_.load(std::memory_order_relaxed);
    if (since == 0) {
        return {};
    }
    return std::chrono::steady_clock::now().time_since_epoch() - std::chrono::steady_clock::duration(since);
}

void engine::cancel(const std::shared_ptr<request_channel> &chan) {
    chan->cancel();
    cv_.notify_one();
}

engine_stats engine::stats() const {
    engine_stats s;
    s.n_running          = n_running_.load();
    s.n_waiting          = n_queued_.load();
    s.n_generated_tokens = n_generated_.load();
    s.n_draft_tokens     = n_draft_.load();
    s.n_draft_accepted   = n_draft_accepted_.load();
    return s;
}

void engine::loop() {
    for (;;) {
        std::vector<pending> incoming;
        {
            std::unique_lock lock(mu_);
            const auto       has_work = [&] { return stopping_ || !inbox_.empty() || !st_->sched.idle(); };
            if (!has_work()) {
                // Idle: wake for new work, or now and then to notice cancellations of requests
                // that were submitted but not yet picked up.
                cv_.wait(lock, has_work);
                // Requests sent together reach the engine a fraction of a millisecond apart.
                // Starting a long prefill with the first alone makes the rest wait for it, so
                // when that step would be long, wait a moment for the others and prefill them
                // in one batch.
                const auto window = coalesce_window();
                if (window.count() > 0) {
                    cv_.wait_for(lock, window,
                                 [&] { return stopping_ || static_cast<int32_t>(inbox_.size()) >= cfg_.parallel; });
                }
            }
            // Stopping first: requests still in the inbox then get their error at shutdown below
            // (swapped out first, they would be dropped without one and their clients would hang).
            if (stopping_) {
                break;
            }
            incoming.swap(inbox_);
        }
        try {
            accept_new(incoming);
            drop_cancelled();
            if (!st_->sched.idle()) {
                step_started_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                                    std::memory_order_relaxed);
                step();
                step_started_.store(0, std::memory_order_relaxed);
            }
        } catch (const std::exception &e) {
            // The last line of defence: an exception out of a step (std::bad_alloc, a throwing
            // library call) leaves the scheduler's and the KV cache's state unknown. Every request
            // in flight ends with an error, the engine reports itself unhealthy (readiness 503, and
            // serve exits for the orchestrator to restart it), and nothing terminates the process.
            step_started_.store(0, std::memory_order_relaxed);
            unexpected_.fetch_add(1);
            spdlog::critical("the engine loop caught an unexpected exception: {}; failing in-flight requests",
                             e.what());
            healthy_.store(false);
            abandon(error{error_kind::internal, "the engine failed unexpectedly and is restarting; retry shortly", "",
                          "engine_failed"});
        }
    }
    // Shutdown: everything still known gets a clean error so no client hangs.
    std::vector<pending> rest;
    {
        std::lock_guard lock(mu_);
        rest.swap(inbox_);
    }
    error err{error_kind::unavailable, "the server is shutting down", "", ""};
    for (auto &p : rest) {
        for (int32_t i = 0; i < std::max(p.req.n, 1); ++i) {
            generation_event ev;
            ev.index = i;
            ev.err   = err;
            p.chan->push(std::move(ev));
        }
    }
    for (auto &[id, s] : st_->seqs) {
        generation_event ev;
        ev.index = s->index;
        ev.err   = err;
        s->chan->push(std::move(ev));
    }
    st_->seqs.clear();
    // Nothing runs or waits any more (a drain must not wait for counts a failed step left behind).
    n_running_.store(0);
    n_queued_.store(0);
}

void engine::accept_new(std::vector<pending> &incoming) {
    for (auto &p : incoming) {
        auto   req = std::make_shared<const generation_request>(std::move(p.req));
        kv_key key = 0;
        if (req->lora) {
            auto k = lora_key(*req->lora);
            if (!k) {
                for (int32_t i = 0; i < std::max(req->n, 1); ++i) {
                    --n_queued_;
                    generation_event ev;
                    ev.index = i;
                    ev.err   = k.err();
                    p.chan->push(std::move(ev));
                }
                continue;
            }
            key = *k;
        }
        for (int32_t i = 0; i < std::max(req->n, 1); ++i) {
            auto s       = std::make_unique<sequence>();
            s->chan      = p.chan;
            s->req       = req;
            s->index     = i;
            s->text      = std::make_unique<text_stream>(req->stop);
            s->submitted = p.submitted;
            s->key       = key;

            auto smpl = dec_->make_sampler(req->sampling, i);
            if (smpl) {
                s->smpl = std::move(*smpl);
            }
            const uint64_t id = st_->next_id++;
            // The scheduler shares the request's prompt (an aliasing pointer: no copy).
            if (!smpl || !st_->sched.submit_shared(id, std::shared_ptr<const std::vector<token_id>>(req, &req->prompt),
                                                   req->max_tokens, key, req->arrival)) {
                --n_queued_;
                generation_event ev;
                ev.index = i;
                ev.err =
                    smpl ? error{error_kind::internal, "the engine could not queue this request", "", ""} : smpl.err();
                p.chan->push(std::move(ev));
                continue;
            }
            st_->seqs.emplace(id, std::move(s));
        }
    }
}

void engine::drop_cancelled() {
    bool removed = false;
    for (auto it = st_->seqs.begin(); it != st_->seqs.end();) {
        if (!it->second->chan->cancelled()) {
            ++it;
            continue;
        }
        const auto info = st_->sched.info(it->first);
        if (info && info->phase == seq_phase::waiting) {
            --n_queued_;
        }
        st_->sched.cancel(it->first);
        it      = st_->seqs.erase(it);
        removed = true;
    }
    if (removed) {
        n_running_.store(st_->sched.n_running());
        publish_gauges();
    }
}

bool engine::speculating() const {
    return cfg_.draft_ngram || dec_->drafter() != nullptr;
}

void engine::propose_drafts() {
    std::vector<uint64_t> decoding;
    for (const auto &[id, s] : st_->seqs) {
        if (const auto info = st_->sched.info(id); info && info->phase == seq_phase::decoding) {
            decoding.push_back(id);
        }
    }
    if (static_cast<int32_t>(decoding.size()) > cfg_.draft_max_batch) {
        return;
    }
    std::vector<draft_job>             jobs;
    std::vector<uint64_t>              job_ids;
    std::vector<std::vector<token_id>> histories; // what the jobs' spans point into: no reallocation
    histories.reserve(decoding.size());
    for (uint64_t id : decoding) {
        const sequence &s    = *st_->seqs.at(id);
        const int32_t   room = std::min(cfg_.draft_max, st_->sched.draft_room(id));
        if (!s.req->speculative || room < 1) {
            continue;
        }
        const auto &history = histories.emplace_back(st_->sched.history(id));
        if (cfg_.draft_ngram) {
            if (auto d = ngram_draft(history, room); !d.empty()) {
                st_->sched.set_draft(id, std::move(d));
                continue;
            }
        }
        if (dec_->drafter() != nullptr) {
            jobs.push_back({st_->sched.info(id)->slot, history, room, {}});
            job_ids.push_back(id);
        }
    }
    if (jobs.empty()) {
        return;
    }
    dec_->drafter()->run(jobs);
    for (size_t j = 0; j < jobs.size(); ++j) {
        if (!jobs[j].out.empty()) {
            st_->sched.set_draft(job_ids[j], std::move(jobs[j].out));
        }
    }
}

// Folds the time since `since`, divided by `n`, into the moving average `avg` (0 = none yet).
// One sample is capped at 4x the average before it counts: a step whose thread the OS took away
// (a busy machine) would otherwise raise a per-token cost tenfold at once, and the ITL target
// would then cut prompts into tiny chunks for many steps. Capped, one such step raises the
// average by at most 60 %; a real change in cost shows in every sample and is followed within a
// few steps (1.6x a step).
void engine::measure(double &avg, std::chrono::steady_clock::time_point since, int32_t n) {
    double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - since).count() /
                static_cast<double>(std::max(n, 1));
    if (avg > 0) {
        us  = std::min(us, 4 * avg);
        avg = 0.8 * avg + 0.2 * us;
    } else {
        avg = us;
    }
}

// Test builds only (common/failpoint.h): each decode fails as llama_decode failing would.
bool engine::decode_failpoint() {
    return failpoint("INFERBOX_FAILPOINT_DECODE");
}

void engine::step() {
    const auto step_start = std::chrono::steady_clock::now();
    if (failpoint("INFERBOX_FAILPOINT_STEP_THROW")) {
        throw std::bad_alloc(); // test builds: what the engine loop's last line of defence catches
    }
    static const int delay_ms = failpoint_ms("INFERBOX_FAILPOINT_STEP_DELAY_MS");
    if (delay_ms > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms)); // test builds: slow streams
    }
    auto &sched = st_->sched;
    if (speculating()) {
        propose_drafts();
    }
    sched.set_prefill_cost(prefill_us_per_token_);
    if (cfg_.slo_itl_ms > 0) {
        sched.set_step_costs(decode_step_us_, itl_prompt_us_per_token_);
    }
    auto plan = sched.schedule();
    // Running first, then queued: see over_capacity() for why this order.
    n_running_.store(sched.n_running());
    n_queued_ -= static_cast<int32_t>(plan.admitted.size());
    if (cfg_.metrics && !plan.admitted.empty()) {
        const auto now = std::chrono::steady_clock::now();
        auto      &m   = *cfg_.metrics;
        for (uint64_t id : plan.admitted) {
            const auto s    = st_->seqs.find(id);
            const auto info = sched.info(id);
            if (s == st_->seqs.end() || !info) {
                continue;
            }
            m.prefix_cache_queries.inc(static_cast<uint64_t>(info->n_prompt));
            m.prefix_cache_hits.inc(static_cast<uint64_t>(info->n_cached));
            if (s->second->index == 0) { // a request's n choices share one prompt and one wait
                m.prompt_tokens.inc(static_cast<uint64_t>(info->n_prompt));
                m.queue_time.observe(std::chrono::duration<double>(now - s->second->submitted).count());
            }
        }
    }
    if (plan.empty()) {
        publish_gauges();
        return;
    }

    for (const auto &op : plan.kv_ops) {
        if (op.src_slot >= 0) {
            dec_->kv_copy(op.src_slot, op.dst_slot);
        }
        dec_->kv_trim(op.dst_slot, op.keep);
    }

    // Decode tokens and prompt chunks go to the decoder as two batches. With one KV stream per
    // slot, llama.cpp cuts a batch into ubatches of sequences that have consecutive ids (in
    // batch order) and equal token counts, so a decode token next to a prompt on the adjacent
    // slot splits both into extra small ubatches, each a pass over all the weights (measured on
    // the 0.36B synthetic model: two decode tokens and a 64-token prompt in one batch, 1.1 s; the
    // prompt alone, 0.34 s). Each batch lists its items in slot order for the same reason.
    std::vector<const plan_item *> decodes;
    std::vector<const plan_item *> prompts;
    for (const auto &it : plan.items) {
        (it.work == plan_work::decode ? decodes : prompts).push_back(&it);
    }
    if (!plan.items.empty()) {
        apply_key(plan.key);
    }
    const bool decoded = !decodes.empty();
    if (decoded && !decode_step_us_.empty()) {
        const size_t n_seqs = std::min(decodes.size(), decode_step_us_.size() - 1);
        run_batch(plan, std::move(decodes), false);
        measure(decode_step_us_[n_seqs], step_start, 1);
    } else if (decoded) {
        run_batch(plan, std::move(decodes), false);
    }
    if (!prompts.empty()) {
        const auto started  = std::chrono::steady_clock::now();
        int32_t    n_prompt = 0;
        for (const plan_item *it : prompts) {
            n_prompt += static_cast<int32_t>(it->tokens.size());
        }
        run_batch(plan, std::move(prompts), true);
        if (decoded && n_prompt >= k_itl_min_prompt_tokens) {
            measure(itl_prompt_us_per_token_, started, n_prompt);
        }
    }
    n_running_.store(sched.n_running());
    publish_gauges();
}

// Decodes `items` (a part of `plan`, all computed under plan.key; prompt chunks when `prompts`,
// else decode tokens) as one llama.cpp batch and samples those that ask for it. When the decode
// fails, the sequences of these items (and of plan's KV operations on their slots) fail with
// decode_failed and their KV is forgotten.
void engine::run_batch(const step_plan &plan, std::vector<const plan_item *> items, bool prompts) {
    auto &sched = st_->sched;
    std::sort(items.begin(), items.end(), [](const plan_item *a, const plan_item *b) { return a->slot < b->slot; });
    auto &batch = st_->batch;
    batch.clear();
    std::vector<std::pair<const plan_item *, int32_t>> to_sample; // item, batch index of its first sampled token
    for (const plan_item *item : items) {
        const plan_item &it    = *item;
        const auto       first = static_cast<int32_t>(batch.size());
        for (size_t j = 0; j < it.tokens.size(); ++j) {
            const bool last = j + 1 == it.tokens.size();
            batch.push_back(
                {it.tokens[j], it.pos + static_cast<int32_t>(j), it.slot, it.sample && (last || it.n_draft > 0)});
        }
        if (it.sample) {
            to_sample.emplace_back(&it, it.n_draft > 0 ? first : static_cast<int32_t>(batch.size()) - 1);
        }
    }
    const auto     n_tokens  = static_cast<int32_t>(batch.size());
    const uint64_t n_prefill = prompts ? static_cast<uint64_t>(n_tokens) : 0;

    const auto    started = std::chrono::steady_clock::now();
    const int32_t rc      = decode_failpoint() ? -1 : dec_->decode(batch);
    if (rc == 0 && n_prefill >= k_prefill_sample_tokens) {
        const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
        const double per_token = us / static_cast<double>(n_tokens);
        prefill_us_per_token_  = prefill_us_per_token_ > 0 ? 0.8 * prefill_us_per_token_ + 0.2 * per_token : per_token;
    }
    if (spdlog::should_log(spdlog::level::debug)) {
        // Which sequences a batch held and how long it took: the tool for reading how llama.cpp
        // cut a step into ubatches (see step()).
        std::string shape;
        for (const plan_item *it : items) {
            shape += fmt::format("{}{}:{}", shape.empty() ? "" : " ", it->slot, it->tokens.size());
        }
        spdlog::debug("{} batch of {} tokens [slot:tokens {}] decoded in {:.1f} ms", prompts ? "prompt" : "decode",
                      n_tokens, shape,
                      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
    }
    if (rc != 0) {
        spdlog::error("decode failed (code {}) for a batch of {} tokens; failing {} sequences", rc, n_tokens,
                      items.size());
        step_plan failed;
        failed.key = plan.key;
        for (const plan_item *it : items) {
            failed.items.push_back(*it);
        }
        for (const auto &op : plan.kv_ops) {
            if (std::any_of(items.begin(), items.end(), [&](const plan_item *it) { return it->slot == op.dst_slot; })) {
                failed.kv_ops.push_back(op);
            }
        }
        // Health first: a client that reads its error and then probes readiness sees the engine
        // as the error left it.
        if (++st_->consecutive_failures >= 3) {
            healthy_.store(false);
        }
        const auto removed = sched.fail_step(failed);
        for (const auto &op : failed.kv_ops) {
            dec_->kv_trim(op.dst_slot, 0);
        }
        for (const auto &it : failed.items) {
            dec_->kv_trim(it.slot, 0);
        }
        for (uint64_t id : removed) {
            auto s = st_->seqs.find(id);
            if (s == st_->seqs.end()) {
                continue;
            }
            generation_event ev;
            ev.index = s->second->index;
            ev.err   = error{error_kind::internal,
                           "the engine failed to decode this request (the decoder returned " + std::to_string(rc) + ")",
                           "", "decode_failed"};
            s->second->chan->push(std::move(ev));
            st_->seqs.erase(s);
        }
        return;
    }
    st_->consecutive_failures = 0;
    for (const auto &[item, idx] : to_sample) {
        sample_item(*item, idx);
    }
}

result<uint64_t> engine::lora_key(const lora_choice &lora) {
    auto &loras = st_->loras;
    auto  it    = loras.find(lora.path);
    if (it == loras.end()) {
        if (static_cast<int32_t>(loras.size()) >= std::max(cfg_.max_loras, 1)) {
            // Evict the least recently used adapter that no sequence is running under.
            auto victim = loras.end();
            for (auto l = loras.begin(); l != loras.end(); ++l) {
                const bool in_use = std::any_of(st_->seqs.begin(), st_->seqs.end(),
                                                [&](const auto &sq) { return (sq.second->key >> 32) == l->second.id; });
                if (!in_use && (victim == loras.end() || l->second.last_used < victim->second.last_used)) {
                    victim = l;
                }
            }
            if (victim == loras.end()) {
                return error{error_kind::overloaded,
                             "all " + std::to_string(loras.size()) +
                                 " loaded LoRA adapters are in use (limit --max-loras); retry shortly",
                             "model", "adapters_busy"};
            }
            if ((st_->ctx_key >> 32) == victim->second.id) {
                dec_->use_adapter(std::nullopt, 0.0f);
                st_->ctx_key = 0;
            }
            spdlog::info("unloading LoRA adapter {} (least recently used; --max-loras {})", victim->first,
                         cfg_.max_loras);
            dec_->free_adapter(victim->second.handle);
            loras.erase(victim);
        }
        const auto handle = dec_->load_adapter(lora.path);
        if (!handle) {
            return error{error_kind::internal,
                         "the LoRA adapter '" + lora.name +
                             "' could not be loaded (not a LoRA adapter for this base model?); the server log says why",
                         "model", "adapter_load_failed"};
        }
        spdlog::info("loaded LoRA adapter '{}' ({})", lora.name, lora.path);
        it = loras.emplace(lora.path, loaded_lora{*handle, st_->next_lora_id++, 0}).first;
    }
    it->second.last_used = ++st_->lora_clock;
    const auto milli     = static_cast<uint64_t>(std::lround(std::clamp(lora.scale, 0.0f, 1000.0f) * 1000.0f));
    return (static_cast<uint64_t>(it->second.id) << 32) | (milli & 0xFFFFFFFFu);
}

void engine::apply_key(uint64_t key) {
    if (key == st_->ctx_key) {
        return;
    }
    if (key == 0) {
        dec_->use_adapter(std::nullopt, 0.0f);
    } else {
        const auto id = static_cast<uint32_t>(key >> 32);
        auto it = std::find_if(st_->loras.begin(), st_->loras.end(), [&](const auto &l) { return l.second.id == id; });
        // A key's adapter stays loaded while a sequence runs under it (lora_key never evicts it).
        if (it == st_->loras.end()) {
            spdlog::error("no loaded LoRA adapter has id {}; computing this step without adapters", id);
            dec_->use_adapter(std::nullopt, 0.0f);
            st_->ctx_key = 0;
            return;
        }
        dec_->use_adapter(it->second.handle, static_cast<float>(key & 0xFFFFFFFFu) / 1000.0f);
    }
    st_->ctx_key = key;
}

void engine::publish_gauges() {
    if (!cfg_.metrics) {
        return;
    }
    // KV usage counts the cells of sequences in a slot; a finished sequence's cached prefix is
    // reusable but evictable, so it counts as free (as vLLM counts cached free blocks).
    int64_t                  used = 0;
    std::vector<std::string> running, waiting; // adapter names, each once
    const auto               add = [](std::vector<std::string> &v, const std::string &name) {
        if (std::find(v.begin(), v.end(), name) == v.end()) {
            v.push_back(name);
        }
    };
    for (const auto &[id, s] : st_->seqs) {
        const auto info  = st_->sched.info(id);
        const bool waits = !info || info->phase == seq_phase::waiting;
        if (!waits) {
            used += info->n_past;
        }
        if (s->req && s->req->lora) {
            add(waits ? waiting : running, s->req->lora->name);
        }
    }
    const auto join = [](const std::vector<std::string> &v) {
        std::string out;
        for (const auto &n : v) {
            out += (out.empty() ? "" : ",") + n;
        }
        return out;
    };
    const double capacity = static_cast<double>(cfg_.n_ctx_slot) * cfg_.parallel;
    auto        &m        = *cfg_.metrics;
    m.kv_cache_usage.set(capacity > 0 ? std::min(1.0, static_cast<double>(used) / capacity) : 0.0);
    m.requests_running.set(n_running_.load());
    m.requests_waiting.set(n_queued_.load());
    m.set_lora_adapters(cfg_.max_loras, join(running), join(waiting));
}

namespace {

// Log-probabilities of the raw model distribution at one position: the sampled token's and
// the `n_top` most likely alternatives.
void fill_logprobs(const float *logits, int32_t n_vocab, token_id chosen, int32_t n_top, const decoder &d,
                   token_logprob &out) {
    float max_l = -INFINITY;
    for (int32_t i = 0; i < n_vocab; ++i) {
        max_l = std::max(max_l, logits[i]);
    }
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; ++i) {
        sum += std::exp(static_cast<double>(logits[i] - max_l));
    }
    const auto log_z = static_cast<float>(max_l + std::log(sum));
    out.logprob      = logits[chosen] - log_z;
    if (n_top > 0) {
        std::vector<token_id> ids(static_cast<size_t>(n_vocab));
        std::iota(ids.begin(), ids.end(), 0);
        const auto k = std::min<size_t>(static_cast<size_t>(n_top), ids.size());
        std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                          [&](token_id a, token_id b) { return logits[a] > logits[b]; });
        for (size_t i = 0; i < k; ++i) {
            out.top.emplace_back(d.piece(ids[i], false), logits[ids[i]] - log_z);
        }
    }
}

} // namespace

void engine::fail_sequence(uint64_t id, error err) {
    auto it = st_->seqs.find(id);
    if (it == st_->seqs.end()) {
        return;
    }
    generation_event ev;
    ev.index = it->second->index;
    ev.err   = std::move(err);
    it->second->chan->push(std::move(ev));
    st_->sched.cancel(id); // frees the slot
    st_->seqs.erase(it);
    n_running_.store(st_->sched.n_running());
    publish_gauges();
}

void engine::sample_item(const plan_item &item, int32_t first_index) {
    const uint64_t id = item.id;
    auto           it = st_->seqs.find(id);
    if (it == st_->seqs.end()) {
        return;
    }
    const auto info = st_->sched.info(id);
    if (!info) {
        return;
    }
    sequence   &s   = *it->second;
    const auto &req = *s.req;
    // The scheduler owns the counts and the bound: it finishes the sequence at max_new too.
    int32_t               generated = info->n_generated;
    std::vector<token_id> accepted; // sampled tokens; all but the last matched a draft
    int32_t               n_matched = 0;
    generation_event      last; // the final event, sent once the scheduler and gauges know
    bool                  finished = false;
    for (int32_t i = 0; i <= item.n_draft && !finished; ++i) {
        const int32_t       batch_index = first_index + i;
        const sampled_token sampled     = s.smpl->sample(batch_index);
        const token_id      tok         = sampled.token;
        if (sampled.dead_end) {
            // Accepting the token would make the grammar throw or abort: end the choice instead.
            fail_sequence(id, error::invalid("the grammar allows no token of this model's vocabulary after " +
                                                 std::to_string(generated) + " generated tokens",
                                             "", "grammar_dead_end"));
            return;
        }
        try {
            s.smpl->accept(tok);
        } catch (const std::exception &e) {
            fail_sequence(id, error{error_kind::internal, std::string("the grammar sampler failed: ") + e.what(), "",
                                    "grammar_failed"});
            return;
        }
        accepted.push_back(tok);
        ++generated;
        ++n_generated_;
        if (cfg_.metrics) {
            const auto now = std::chrono::steady_clock::now();
            cfg_.metrics->generation_tokens.inc();
            if (generated > 1) {
                cfg_.metrics->time_per_output_token.observe(std::chrono::duration<double>(now - s.last_token).count());
            }
            s.last_token = now;
        }

        generation_event ev;
        ev.index = s.index;
        if (req.sampling.top_logprobs >= 0) {
            token_logprob lp;
            lp.token = dec_->piece(tok, false);
            fill_logprobs(dec_->logits(batch_index), dec_->n_vocab(), tok, req.sampling.top_logprobs, *dec_, lp);
            ev.logprobs.push_back(std::move(lp));
        }
        // Under a grammar an end-of-generation token is only sampled when the grammar allows it,
        // and with ignore_eos only when it allows nothing else (see accept_new): then the output
        // is complete, and stopping is the only way on.
        const bool eog = dec_->is_eog(tok) && (!req.sampling.ignore_eos || !req.sampling.grammar.empty());
        if (eog) {
            ev.finish = finish_reason::stop;
        } else {
            const auto &keep = req.sampling.preserved_tokens;
            ev.text          = s.text->push(dec_->piece(tok, std::find(keep.begin(), keep.end(), tok) != keep.end()));
            if (s.text->stopped()) {
                ev.finish = finish_reason::stop;
            } else if (generated >= info->max_new) {
                ev.finish = finish_reason::length;
            }
        }
        finished = ev.finish != finish_reason::none;
        // A matching draft means the next position's logits are this token's continuation.
        const bool more = !finished && i < item.n_draft && tok == item.tokens[static_cast<size_t>(i) + 1];
        n_matched += more ? 1 : 0;
        if (finished) {
            last = std::move(ev);
        } else if (!ev.text.empty() || !ev.logprobs.empty() || generated == 1) {
            s.chan->push(std::move(ev));
        }
        if (!more) {
            break;
        }
    }
    if (item.n_draft > 0) {
        n_draft_ += static_cast<uint64_t>(item.n_draft);
        n_draft_accepted_ += static_cast<uint64_t>(n_matched);
        if (cfg_.metrics) {
            cfg_.metrics->spec_drafts.inc();
            cfg_.metrics->spec_draft_tokens.inc(static_cast<uint64_t>(item.n_draft));
            cfg_.metrics->spec_accepted_tokens.inc(static_cast<uint64_t>(n_matched));
        }
        // The KV of the drafts after the first mismatch holds a future that did not happen.
        if (static_cast<int32_t>(accepted.size()) - 1 < item.n_draft) {
            dec_->kv_trim(item.slot, item.pos + static_cast<int32_t>(accepted.size()));
        }
    }
    if (finished) {
        last.text += s.text->finish();
        if (s.text->stopped()) {
            last.finish = finish_reason::stop; // the last, cut-off character completed a stop string
        }
        last.n_prompt    = info->n_prompt;
        last.n_cached    = info->n_cached;
        last.n_generated = generated;
    }
    st_->sched.on_sampled(id, accepted, finished);
    if (finished) {
        // Gauges first: a client that reads its answer and then scrapes sees this sequence gone.
        n_running_.store(st_->sched.n_running());
        publish_gauges();
        s.chan->push(std::move(last));
        st_->seqs.erase(it);
    }
}

} // namespace inferbox

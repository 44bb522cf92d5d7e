// The engine core over a scripted decoder (fake_decoder.h): admission, cancellation at every
// stage, decode failures, LoRA switching and speculative acceptance, without a model. These run
// under ThreadSanitizer in CI (the unit tier), with the engine thread and the test thread racing
// as they do in production.

#include "engine/engine.h"

#include "fake_decoder.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

namespace inferbox {
namespace {

using testing::fake_decoder;

// One request's channel and what arrived on it. The channel's notify holds only the shared
// signal, so a sink may move and may go before the engine lets go of its channel.
class sink {
  public:
    sink() : chan(std::make_shared<request_channel>()), sig_(std::make_shared<signal>()) {
        chan->set_notify([sig = sig_] {
            std::lock_guard lock(sig->mu);
            ++sig->pushes;
            sig->cv.notify_all();
        });
    }

    struct choice {
        std::string                text;
        finish_reason              finish = finish_reason::none;
        std::optional<error>       err;
        int32_t                    n_events = 0, n_prompt = 0, n_cached = 0, n_generated = 0;
        std::vector<token_logprob> logprobs;
        bool                       done() const { return finish != finish_reason::none || err.has_value(); }
    };

    // Waits up to 10 s until `n` choices ended; false if they did not.
    bool wait_done(int32_t n) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        for (;;) {
            uint64_t seen = 0;
            {
                std::lock_guard lock(sig_->mu);
                seen = sig_->pushes; // before draining: a push after this wakes the wait below
            }
            drain();
            int32_t ended = 0;
            for (const auto &[i, c] : choices) {
                ended += c.done() ? 1 : 0;
            }
            if (ended >= n) {
                return true;
            }
            std::unique_lock lock(sig_->mu);
            if (!sig_->cv.wait_until(lock, deadline, [&] { return sig_->pushes != seen; })) {
                return false;
            }
        }
    }
    // Takes what arrived so far; the number of events taken.
    int32_t drain() {
        int32_t n = 0;
        for (auto &ev : chan->take()) {
            auto &c = choices[ev.index];
            ++c.n_events;
            ++n;
            c.text += ev.text;
            c.logprobs.insert(c.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
            if (ev.err) {
                c.err = ev.err;
            }
            if (ev.finish != finish_reason::none) {
                c.finish      = ev.finish;
                c.n_prompt    = ev.n_prompt;
                c.n_cached    = ev.n_cached;
                c.n_generated = ev.n_generated;
            }
        }
        return n;
    }

    std::shared_ptr<request_channel> chan;
    std::map<int32_t, choice>        choices;

  private:
    struct signal {
        std::mutex              mu;
        std::condition_variable cv;
        uint64_t                pushes = 0;
    };
    std::shared_ptr<signal> sig_;
};

generation_request request(const std::string &prompt, int32_t max_tokens) {
    generation_request r;
    r.prompt               = fake_decoder::tokens(prompt);
    r.max_tokens           = max_tokens;
    r.sampling.temperature = 0.0f;
    r.speculative          = true;
    return r;
}

class engine_core : public ::testing::Test {
  protected:
    // Starts an engine over a fresh fake with `cfg`'s slots, context and step size.
    void start(const engine_config &cfg) {
        auto d = std::make_unique<fake_decoder>(cfg.parallel, cfg.n_ctx_slot, cfg.step_tokens);
        fake   = d.get();
        auto e = engine::start(std::move(d), cfg);
        ASSERT_TRUE(e) << e.err().message;
        eng = std::move(*e);
    }
    static engine_config config(int32_t slots, int32_t queue) {
        engine_config c;
        c.parallel        = slots;
        c.max_queue       = queue;
        c.n_ctx_slot      = 64;
        c.step_tokens     = 64;
        c.prefill_step_ms = 0;
        c.n_threads       = 1;
        return c;
    }
    // Runs one request to its end.
    sink run(generation_request r) {
        sink s;
        EXPECT_FALSE(eng->submit(std::move(r), s.chan));
        EXPECT_TRUE(s.wait_done(1));
        return s;
    }
    // Waits until the engine has nothing running or waiting.
    bool settled() {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (std::chrono::steady_clock::now() < deadline) {
            const auto st = eng->stats();
            if (st.n_running == 0 && st.n_waiting == 0) {
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        return false;
    }
    void TearDown() override {
        if (eng) {
            eng->stop();
            EXPECT_EQ(fake->violations(), std::vector<std::string>{});
            eng.reset();
        }
    }

    std::unique_ptr<engine> eng;
    fake_decoder           *fake = nullptr;
};

TEST_F(engine_core, generates_until_length_or_end_of_generation) {
    start(config(2, 4));
    auto a = run(request("abc", 5));
    EXPECT_EQ(a.choices[0].text, "defgh");
    EXPECT_EQ(a.choices[0].finish, finish_reason::length);
    EXPECT_EQ(a.choices[0].n_generated, 5);
    EXPECT_EQ(a.choices[0].n_prompt, 3);

    auto b = run(request("w", 20)); // x y z, then end-of-generation
    EXPECT_EQ(b.choices[0].text, "xyz");
    EXPECT_EQ(b.choices[0].finish, finish_reason::stop);
    EXPECT_EQ(b.choices[0].n_generated, 4);
    EXPECT_TRUE(settled());
    EXPECT_EQ(eng->stats().n_generated_tokens, 9U);
}

TEST_F(engine_core, stop_string_ends_the_choice_without_its_text) {
    start(config(2, 4));
    auto r = request("a", 20);
    r.stop = {"efg"};
    auto s = run(std::move(r));
    EXPECT_EQ(s.choices[0].text, "bcd");
    EXPECT_EQ(s.choices[0].finish, finish_reason::stop);
}

TEST_F(engine_core, n_choices_each_end_once) {
    start(config(4, 4));
    auto r = request("p", 3);
    r.n    = 3;
    sink s;
    ASSERT_FALSE(eng->submit(std::move(r), s.chan));
    ASSERT_TRUE(s.wait_done(3));
    ASSERT_EQ(s.choices.size(), 3U);
    for (const auto &[i, c] : s.choices) {
        EXPECT_EQ(c.text, "qrs") << i;
        EXPECT_EQ(c.finish, finish_reason::length) << i;
    }
}

TEST_F(engine_core, logprobs_name_the_chosen_token_first) {
    start(config(1, 1));
    auto r                  = request("k", 2);
    r.sampling.top_logprobs = 2;
    auto s                  = run(std::move(r));
    ASSERT_EQ(s.choices[0].logprobs.size(), 2U);
    EXPECT_EQ(s.choices[0].logprobs[0].token, "l");
    ASSERT_EQ(s.choices[0].logprobs[0].top.size(), 2U);
    EXPECT_EQ(s.choices[0].logprobs[0].top[0].first, "l");
    EXPECT_LT(s.choices[0].logprobs[0].logprob, 0.0f);
    EXPECT_GT(s.choices[0].logprobs[0].logprob, -0.01f);
}

TEST_F(engine_core, admission_bounds_slots_plus_queue) {
    start(config(1, 1));
    fake->close_gate();
    sink a;
    ASSERT_FALSE(eng->submit(request("a", 3), a.chan));
    ASSERT_TRUE(fake->wait_arrived(1)); // a runs, held inside its prompt's decode
    sink b;
    ASSERT_FALSE(eng->submit(request("b", 3), b.chan)); // queued
    sink       c;
    const auto refused = eng->submit(request("c", 3), c.chan);
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->kind, error_kind::overloaded);
    EXPECT_EQ(refused->code, "queue_full");
    EXPECT_NE(refused->message.find("--max-queue"), std::string::npos) << refused->message;
    EXPECT_TRUE(eng->over_capacity(1));

    auto wide          = request("d", 3);
    wide.n             = 2; // more choices than the queue holds: no wait would help
    const auto invalid = eng->submit(std::move(wide), c.chan);
    ASSERT_TRUE(invalid);
    EXPECT_EQ(invalid->kind, error_kind::invalid_request);
    EXPECT_EQ(invalid->code, "n_over_queue_limit");

    fake->open_gate();
    ASSERT_TRUE(a.wait_done(1));
    ASSERT_TRUE(b.wait_done(1));
    EXPECT_EQ(a.choices[0].text, "bcd");
    EXPECT_EQ(b.choices[0].text, "cde");
    EXPECT_TRUE(settled());
    EXPECT_FALSE(eng->over_capacity(2)); // room again
}

TEST_F(engine_core, cancel_before_the_engine_picks_the_request_up) {
    start(config(1, 2));
    fake->close_gate();
    sink a;
    ASSERT_FALSE(eng->submit(request("a", 3), a.chan));
    ASSERT_TRUE(fake->wait_arrived(1));
    sink b;
    ASSERT_FALSE(eng->submit(request("b", 3), b.chan));
    eng->cancel(b.chan); // still in the engine's inbox
    fake->open_gate();
    ASSERT_TRUE(a.wait_done(1));
    EXPECT_TRUE(settled());
    EXPECT_EQ(b.drain(), 0);
}

TEST_F(engine_core, cancel_while_waiting_for_a_slot) {
    start(config(1, 2));
    fake->close_gate();
    sink a;
    ASSERT_FALSE(eng->submit(request("a", 5), a.chan));
    ASSERT_TRUE(fake->wait_arrived(1));
    sink b;
    ASSERT_FALSE(eng->submit(request("b", 3), b.chan));
    fake->allow(1); // a's prompt; the next step takes b into the scheduler, where it waits
    ASSERT_TRUE(fake->wait_arrived(2));
    EXPECT_EQ(eng->stats().n_waiting, 1);
    eng->cancel(b.chan);
    fake->open_gate();
    ASSERT_TRUE(a.wait_done(1));
    EXPECT_EQ(a.choices[0].text, "bcdef");
    EXPECT_TRUE(settled());
    EXPECT_EQ(b.drain(), 0);
    auto c = run(request("c", 2)); // the slot serves the next request
    EXPECT_EQ(c.choices[0].text, "de");
}

TEST_F(engine_core, cancel_during_a_chunked_prefill_frees_the_slot) {
    auto cfg        = config(1, 1);
    cfg.step_tokens = 8; // a 20-token prompt takes three steps
    start(cfg);
    fake->close_gate();
    sink a;
    ASSERT_FALSE(eng->submit(request("abcdefghijklmnopqrst", 3), a.chan));
    ASSERT_TRUE(fake->wait_arrived(1)); // the first chunk
    eng->cancel(a.chan);
    fake->allow(1);
    fake->open_gate();
    EXPECT_TRUE(settled());
    EXPECT_EQ(a.drain(), 0); // no token was sampled, so nothing was said
    auto b = run(request("xy", 5));
    EXPECT_EQ(b.choices[0].text, "z");
}

TEST_F(engine_core, cancel_while_decoding_stops_within_a_step) {
    start(config(1, 1));
    sink a;
    fake->close_gate();
    ASSERT_FALSE(eng->submit(request("a", 20), a.chan));
    fake->allow(3); // the prompt and two decode steps
    ASSERT_TRUE(fake->wait_arrived(4));
    eng->cancel(a.chan); // noticed at the start of the next step
    fake->open_gate();
    EXPECT_TRUE(settled());
    a.drain();
    EXPECT_FALSE(a.choices[0].done()); // a cancelled choice gets no ending
    EXPECT_LE(a.choices[0].text.size(), 4U);
    EXPECT_LT(fake->n_decodes(), 8);
    auto b = run(request("m", 2));
    EXPECT_EQ(b.choices[0].text, "no");
}

TEST_F(engine_core, a_failed_decode_fails_only_its_batch_and_forgets_its_kv) {
    start(config(2, 2));
    // a decodes while b's prompt (which holds 'q') arrives: the two are separate batches.
    fake->close_gate();
    sink a;
    ASSERT_FALSE(eng->submit(request("a", 12), a.chan));
    fake->allow(2);
    ASSERT_TRUE(fake->wait_arrived(3));
    fake->fail_batches_with(fake_decoder::tokens("q")[0], 1);
    sink b;
    ASSERT_FALSE(eng->submit(request("pq", 3), b.chan));
    fake->open_gate();
    ASSERT_TRUE(a.wait_done(1));
    ASSERT_TRUE(b.wait_done(1));
    EXPECT_EQ(a.choices[0].text, "bcdefghijklm");
    ASSERT_TRUE(b.choices[0].err);
    EXPECT_EQ(b.choices[0].err->code, "decode_failed");
    EXPECT_TRUE(eng->healthy());
    // The failed slot's KV was forgotten: the same prompt again computes from scratch and right.
    auto again = run(request("pq", 3));
    EXPECT_EQ(again.choices[0].text, "rst");
    EXPECT_EQ(again.choices[0].n_cached, 0);
}

TEST_F(engine_core, three_failed_decodes_in_a_row_turn_the_engine_unhealthy) {
    start(config(1, 1));
    fake->fail_next_decodes(2);
    for (int i = 0; i < 2; ++i) {
        auto s = run(request("a", 2));
        ASSERT_TRUE(s.choices[0].err);
        EXPECT_EQ(s.choices[0].err->code, "decode_failed");
    }
    EXPECT_TRUE(eng->healthy());
    EXPECT_EQ(run(request("a", 2)).choices[0].text, "bc"); // a success resets the count
    fake->fail_next_decodes(3);
    for (int i = 0; i < 3; ++i) {
        EXPECT_TRUE(run(request("a", 2)).choices[0].err);
    }
    EXPECT_FALSE(eng->healthy());
}

TEST_F(engine_core, grammar_dead_end_and_rejection_fail_one_choice) {
    start(config(2, 2));
    auto dead             = request("a", 4);
    dead.sampling.grammar = "dead-end";
    auto s                = run(std::move(dead));
    ASSERT_TRUE(s.choices[0].err);
    EXPECT_EQ(s.choices[0].err->code, "grammar_dead_end");
    EXPECT_EQ(s.choices[0].err->kind, error_kind::invalid_request);

    auto rejected             = request("a", 4);
    rejected.sampling.grammar = "reject";
    auto t                    = run(std::move(rejected));
    ASSERT_TRUE(t.choices[0].err);
    EXPECT_EQ(t.choices[0].err->code, "grammar_failed");

    auto unbuildable             = request("a", 4);
    unbuildable.sampling.grammar = "unbuildable";
    auto u                       = run(std::move(unbuildable));
    ASSERT_TRUE(u.choices[0].err);
    EXPECT_EQ(u.choices[0].err->code, "fake_sampler");
    EXPECT_TRUE(settled());
    EXPECT_EQ(run(request("a", 2)).choices[0].text, "bc");
}

generation_request with_lora(generation_request r, const std::string &path, float scale) {
    r.lora = lora_choice{path.substr(1), path, scale};
    return r;
}

TEST_F(engine_core, lora_adapters_switch_per_step_and_the_least_recently_used_idle_one_goes) {
    auto cfg      = config(2, 2);
    cfg.max_loras = 1;
    start(cfg);
    fake->close_gate();
    sink a;
    ASSERT_FALSE(eng->submit(with_lora(request("a", 3), "/one", 0.5f), a.chan));
    ASSERT_TRUE(fake->wait_arrived(1));
    sink b; // another adapter while the only place is in use
    ASSERT_FALSE(eng->submit(with_lora(request("b", 3), "/two", 1.0f), b.chan));
    fake->open_gate();
    ASSERT_TRUE(a.wait_done(1));
    ASSERT_TRUE(b.wait_done(1));
    EXPECT_EQ(a.choices[0].text, "bcd");
    ASSERT_TRUE(b.choices[0].err);
    EXPECT_EQ(b.choices[0].err->code, "adapters_busy");
    EXPECT_EQ(b.choices[0].err->kind, error_kind::overloaded);

    // Now idle, "one" gives way to "two"; the base model runs with no adapter.
    auto c = run(with_lora(request("x", 2), "/two", 1.0f));
    EXPECT_EQ(c.choices[0].text, "yz");
    EXPECT_EQ(fake->freed_adapters().size(), 1U);
    EXPECT_EQ(fake->loaded_adapters(), 1U);
    auto d = run(request("m", 2));
    EXPECT_EQ(d.choices[0].text, "no");
    const auto                      under = fake->decoded_under();
    std::map<token_id, std::string> first_under;
    for (const auto &[tok, adapter] : under) {
        first_under.emplace(tok, adapter);
    }
    EXPECT_EQ(first_under[fake_decoder::tokens("a")[0]], "/one@500");
    EXPECT_EQ(first_under[fake_decoder::tokens("x")[0]], "/two@1000");
    EXPECT_EQ(first_under[fake_decoder::tokens("m")[0]], "");

    auto broken = run(with_lora(request("e", 2), "/broken", 1.0f));
    ASSERT_TRUE(broken.choices[0].err);
    EXPECT_EQ(broken.choices[0].err->code, "adapter_load_failed");
    EXPECT_NE(broken.choices[0].err->message.find("'broken'"), std::string::npos);
}

TEST_F(engine_core, prefix_reuse_computes_only_the_new_tokens) {
    start(config(2, 2));
    auto first = run(request("abcdefgh", 2));
    auto again = run(request("abcdefgh", 2));
    EXPECT_EQ(first.choices[0].text, "ij");
    EXPECT_EQ(again.choices[0].text, "ij");
    EXPECT_EQ(first.choices[0].n_cached, 0);
    EXPECT_GT(again.choices[0].n_cached, 0);
    EXPECT_LT(again.choices[0].n_cached, 8); // the last prompt token is always computed
}

TEST_F(engine_core, prompt_lookup_drafts_are_verified_and_the_rejected_ones_forgotten) {
    // "cdefh" then "cd": after "e" is sampled, the suffix "cde" repeats and prompt lookup guesses
    // "fhcd…"; the model agrees on "f" and not on "h", so one draft is accepted and the cache
    // must drop the rest (the fake catches a position that does not follow its KV).
    auto plain = engine_config(config(1, 1));
    start(plain);
    const auto expected = run(request("cdefhcd", 10)).choices[0].text;
    eng->stop();
    EXPECT_EQ(fake->violations(), std::vector<std::string>{});
    eng.reset();

    auto spec        = config(1, 1);
    spec.draft_ngram = true;
    spec.draft_max   = 4;
    start(spec);
    auto s = run(request("cdefhcd", 10));
    EXPECT_EQ(s.choices[0].text, expected);
    EXPECT_EQ(s.choices[0].text, "efghijklmn");
    const auto st = eng->stats();
    EXPECT_GT(st.n_draft_tokens, 0U);
    EXPECT_GT(st.n_draft_accepted, 0U);
    EXPECT_LT(st.n_draft_accepted, st.n_draft_tokens);

    auto off          = request("cdefhcd", 10);
    off.speculative   = false; // this request opts out: no drafts
    const auto before = eng->stats().n_draft_tokens;
    EXPECT_EQ(run(std::move(off)).choices[0].text, expected);
    EXPECT_EQ(eng->stats().n_draft_tokens, before);
}

TEST_F(engine_core, stopping_ends_every_request_with_an_error) {
    start(config(1, 8));
    fake->close_gate();
    std::vector<sink> sinks(2);
    ASSERT_FALSE(eng->submit(request("a", 10), sinks[0].chan));
    ASSERT_TRUE(fake->wait_arrived(1)); // running, held in its decode
    ASSERT_FALSE(eng->submit(request("b", 10), sinks[1].chan));
    std::thread stopper([&] { eng->stop(); });
    // Until stop() takes effect, what is submitted is queued (and must get its error too).
    std::optional<error> refused;
    for (int i = 0; i < 5000; ++i) {
        sink probe;
        refused = eng->submit(request("c", 1), probe.chan);
        if (refused && refused->kind == error_kind::unavailable) {
            break;
        }
        if (!refused) {
            sinks.push_back(std::move(probe));
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->kind, error_kind::unavailable);
    fake->open_gate();
    stopper.join();
    for (size_t i = 0; i < sinks.size(); ++i) {
        ASSERT_TRUE(sinks[i].wait_done(1)) << i;
        ASSERT_TRUE(sinks[i].choices[0].err) << i;
        EXPECT_EQ(sinks[i].choices[0].err->kind, error_kind::unavailable) << i;
    }
    EXPECT_EQ(eng->stats().n_running, 0);
    EXPECT_EQ(eng->stats().n_waiting, 0);
}

TEST(engine_core_start, a_failed_warm_up_is_an_error_and_bad_slots_are_named) {
    engine_config cfg;
    cfg.parallel   = 1;
    cfg.n_ctx_slot = 16;
    auto d         = std::make_unique<fake_decoder>(1, 16, 16);
    d->fail_warm_up();
    auto e = engine::start(std::move(d), cfg);
    ASSERT_FALSE(e);
    EXPECT_NE(e.err().message.find("warm-up"), std::string::npos);

    cfg.parallel = 0;
    auto bad     = engine::settle(cfg, 16);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.err().message.find("--parallel"), std::string::npos);
    cfg.parallel   = 2;
    cfg.n_ctx_slot = 0;
    auto fine      = engine::settle(cfg, 128);
    ASSERT_TRUE(fine);
    EXPECT_EQ(fine->n_ctx_slot, 128); // the model's trained context by default
}

TEST(engine_core_start, the_decoders_limits_bound_the_configuration) {
    engine_config cfg;
    cfg.parallel    = 2;
    cfg.n_ctx_slot  = 100;
    cfg.step_tokens = 512;
    auto e          = engine::start(std::make_unique<fake_decoder>(2, 40, 32), cfg);
    ASSERT_TRUE(e);
    EXPECT_EQ((*e)->n_ctx_slot(), 40);
    EXPECT_EQ((*e)->config().step_tokens, 32);
}

} // namespace
} // namespace inferbox

#pragma once
// The typed boundary between the API layer and the engine: requests cross as validated native
// structs, results come back as events on a per-request channel. No JSON, no HTTP here.

#include "common/status.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace inferbox {

using token_id = int32_t;

// What starts a lazy grammar (tool calls under tool_choice auto): a word, a regex found in the
// output (pattern) or matching all of it (pattern_full), or one token.
struct grammar_trigger {
    enum class kind { word, pattern, pattern_full, token };
    kind        type = kind::word;
    std::string value;
    token_id    token = -1; // kind::token
};

struct sampling_params {
    float                                   temperature        = 1.0f; // 0 = greedy
    float                                   top_p              = 1.0f;
    int32_t                                 top_k              = 0; // 0 = off
    float                                   min_p              = 0.0f;
    float                                   presence_penalty   = 0.0f;
    float                                   frequency_penalty  = 0.0f;
    float                                   repetition_penalty = 1.0f;
    std::optional<uint32_t>                 seed; // none = random
    std::vector<std::pair<token_id, float>> logit_bias;
    bool                                    ignore_eos   = false;
    int32_t                                 top_logprobs = -1; // -1 = no logprobs; 0..N = logprobs with N alternatives
    // GBNF the output must match, empty = unconstrained. The API layer checked it with
    // check_grammar() (model/grammar.h) on this model, so the engine never meets one that fails
    // to parse. Each choice samples with its own grammar state; when the grammar allows nothing
    // but end-of-generation the choice finishes with `stop`, even with ignore_eos.
    std::string grammar;
    // Tool-call grammars (from model::render_chat): lazy until a trigger, fed the generation
    // prompt first, and the preserved tokens are detokenized as their text.
    bool                         grammar_for_tools = false;
    bool                         grammar_lazy      = false;
    std::vector<grammar_trigger> grammar_triggers;
    std::string                  generation_prompt;
    std::vector<token_id>        preserved_tokens;
};

// A LoRA adapter applied to one request's generation. The API layer resolved the name to a file
// of the adapter folder (store/lora_catalog.h); the engine loads it on first use.
struct lora_choice {
    std::string name;         // as clients name it (error messages use it, never the path)
    std::string path;         // the adapter's GGUF file
    float       scale = 1.0f; // 0 = the base model's output; rounded to 1/1000 by the engine
};

struct generation_request {
    std::vector<token_id>      prompt;
    std::optional<lora_choice> lora; // none = the base model
    int32_t                    max_tokens = 16;
    int32_t                    n          = 1; // independent choices over the same prompt
    sampling_params            sampling;
    std::vector<std::string>   stop;
    bool                       speculative = true; // may use the server's speculative decoding (same output)
    // When the request reached the server; the engine measures queue time from its own submit().
    std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();
};

enum class finish_reason { none, stop, length };

struct token_logprob {
    std::string                                token; // the token's text (may be a partial character)
    float                                      logprob = 0.0f;
    std::vector<std::pair<std::string, float>> top;
};

// One event of one choice. `delta` events carry text that is safe to show (no partial stop
// string, no split character); the last event of a choice has finish != none (or an error).
// The first sampled token of a choice always produces an event (perhaps with empty text), so
// the API sees time-to-first-token even when a stop string holds the text back.
struct generation_event {
    int32_t                    index = 0; // choice index
    std::string                text;
    std::vector<token_logprob> logprobs;
    finish_reason              finish = finish_reason::none;
    std::optional<error>       err;
    // Filled on the final event of a choice.
    int32_t n_prompt    = 0;
    int32_t n_cached    = 0;
    int32_t n_generated = 0;
};

// Shared between the API thread that owns the request and the engine thread that produces its
// events. The engine pushes events and calls `notify` (which must not block: it posts to the
// API's executor); the API drains with take(). cancel() may be called from any thread.
class request_channel {
  public:
    void set_notify(std::function<void()> fn) {
        std::lock_guard lock(mu_);
        notify_ = std::move(fn);
    }
    void push(generation_event ev) {
        std::function<void()> fn;
        {
            std::lock_guard lock(mu_);
            events_.push_back(std::move(ev));
            fn = notify_;
        }
        if (fn) {
            fn();
        }
    }
    std::deque<generation_event> take() {
        std::lock_guard lock(mu_);
        return std::exchange(events_, {});
    }
    void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
    bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

  private:
    std::mutex                   mu_;
    std::deque<generation_event> events_;
    std::function<void()>        notify_;
    std::atomic<bool>            cancelled_{false};
};

} // namespace inferbox

#pragma once
// A scripted decoder (engine/decoder.h) for the engine-core tests: no model, fully predictable.
//
// The "model": 27 tokens. Token 0 is end-of-generation (text ""), tokens 1..26 are the letters
// a..z. After a letter the most likely next token is the following letter, after 'z' it is
// end-of-generation. So a prompt ending in 'w' generates "xyz" and stops, and greedy output is
// known in advance.
//
// It keeps each slot's KV sequence as a list of tokens and checks every call against it: a token
// decoded at a position other than the slot's length (a lost trim, a copy that did not happen, a
// draft left in the cache) is recorded as a violation, which every test checks is empty. It also
// records which adapter each decode ran under, fails decodes on demand, and can hold the engine
// inside decode() at a gate so a test can act while a step is in flight.
//
// Samplers follow the request's grammar field as a script: "dead-end" makes every sample a dead
// end, "reject" makes accept() throw, "unbuildable" makes make_sampler fail.

#include "engine/decoder.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace inferbox::testing {

class fake_decoder final : public decoder {
  public:
    static constexpr int32_t  k_vocab = 27;
    static constexpr token_id k_eog   = 0;

    // The token after `t` that the fake model makes most likely.
    static token_id next_after(token_id t) { return t >= 1 && t < 26 ? t + 1 : k_eog; }
    // "abc" as tokens.
    static std::vector<token_id> tokens(const std::string &letters) {
        std::vector<token_id> out;
        for (char c : letters) {
            out.push_back(static_cast<token_id>(c - 'a' + 1));
        }
        return out;
    }

    fake_decoder(int32_t n_slots, int32_t n_ctx_slot, int32_t max_batch)
        : n_ctx_slot_(n_ctx_slot), max_batch_(max_batch), kv_(static_cast<size_t>(n_slots)) {}

    int32_t     n_ctx_slot() const override { return n_ctx_slot_; }
    int32_t     max_batch() const override { return max_batch_; }
    int32_t     n_vocab() const override { return k_vocab; }
    bool        is_eog(token_id t) const override { return t == k_eog; }
    std::string piece(token_id t, bool /*special*/) const override {
        return t >= 1 && t <= 26 ? std::string(1, static_cast<char>('a' + t - 1)) : std::string();
    }

    bool warm_up() override {
        std::lock_guard lock(mu_);
        return !fail_warm_up_;
    }

    int32_t decode(std::span<const batch_token> batch) override {
        std::unique_lock lock(mu_);
        ++arrived_;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !gated_ || allowance_ > 0; });
        if (gated_) {
            --allowance_;
        }
        ++n_decodes_;
        if (static_cast<int32_t>(batch.size()) > max_batch_ || batch.empty()) {
            violations_.push_back("a batch of " + std::to_string(batch.size()) + " tokens");
        }
        const bool fail =
            fail_token_ >= 0 && fail_times_ > 0 &&
            std::any_of(batch.begin(), batch.end(), [&](const batch_token &t) { return t.token == fail_token_; });
        if (fail || fail_next_ > 0) {
            fail_next_ -= fail ? 0 : 1;
            fail_times_ -= fail ? 1 : 0;
            // A failed decode leaves the slots' KV unknown: here, half-written garbage.
            for (const auto &t : batch) {
                kv_.at(static_cast<size_t>(t.slot)).push_back(-1);
            }
            return -3;
        }
        logits_.assign(batch.size(), {});
        for (size_t i = 0; i < batch.size(); ++i) {
            const auto &t   = batch[i];
            auto       &seq = kv_.at(static_cast<size_t>(t.slot));
            if (t.pos != static_cast<int32_t>(seq.size()) || t.pos >= n_ctx_slot_) {
                violations_.push_back("slot " + std::to_string(t.slot) + " holds " + std::to_string(seq.size()) +
                                      " tokens but a token was decoded at position " + std::to_string(t.pos));
            }
            seq.push_back(t.token);
            decoded_under_.emplace_back(t.token, adapter_);
            if (t.logits) {
                logits_[i].assign(k_vocab, 0.0f);
                logits_[i][static_cast<size_t>(next_after(t.token))] = 10.0f;
            }
        }
        return 0;
    }

    const float *logits(int32_t batch_index) override {
        std::lock_guard lock(mu_);
        if (batch_index < 0 || batch_index >= static_cast<int32_t>(logits_.size()) ||
            logits_[static_cast<size_t>(batch_index)].empty()) {
            violations_.push_back("logits read at batch index " + std::to_string(batch_index) + " that kept none");
            static const std::vector<float> none(k_vocab, 0.0f);
            return none.data();
        }
        return logits_[static_cast<size_t>(batch_index)].data();
    }

    void kv_copy(int32_t src_slot, int32_t dst_slot) override {
        std::lock_guard lock(mu_);
        kv_.at(static_cast<size_t>(dst_slot)) = kv_.at(static_cast<size_t>(src_slot));
    }
    void kv_trim(int32_t slot, int32_t from_pos) override {
        std::lock_guard lock(mu_);
        auto           &seq = kv_.at(static_cast<size_t>(slot));
        seq.resize(std::min(seq.size(), static_cast<size_t>(std::max(from_pos, 0))));
    }

    result<std::unique_ptr<sequence_sampler>> make_sampler(const sampling_params &p, int32_t /*choice*/) override {
        if (p.grammar == "unbuildable") {
            return error{error_kind::internal, "the fake cannot build this sampler", "", "fake_sampler"};
        }
        return std::unique_ptr<sequence_sampler>(std::make_unique<greedy_sampler>(*this, p.grammar));
    }

    result<adapter_handle> load_adapter(const std::string &path) override {
        std::lock_guard lock(mu_);
        if (path.find("broken") != std::string::npos) {
            return error{error_kind::internal, "not an adapter", "", ""};
        }
        const adapter_handle h = next_handle_++;
        loaded_[h]             = path;
        return h;
    }
    void free_adapter(adapter_handle h) override {
        std::lock_guard lock(mu_);
        if (loaded_.erase(h) == 0) {
            violations_.push_back("freed adapter " + std::to_string(h) + " that is not loaded");
        }
        freed_.push_back(h);
    }
    void use_adapter(std::optional<adapter_handle> h, float scale) override {
        std::lock_guard lock(mu_);
        if (h && loaded_.count(*h) == 0) {
            violations_.push_back("used adapter " + std::to_string(*h) + " that is not loaded");
        }
        adapter_ = h ? loaded_[*h] + "@" + std::to_string(static_cast<int>(scale * 1000)) : std::string();
    }

    token_drafter *drafter() override { return nullptr; }

    // ---- control and observation, from the test thread ----

    // Holds every later decode at the gate until allow() lets it through or open() lifts the gate.
    void close_gate() {
        std::lock_guard lock(mu_);
        gated_     = true;
        allowance_ = 0;
    }
    void allow(int32_t n) {
        {
            std::lock_guard lock(mu_);
            allowance_ += n;
        }
        cv_.notify_all();
    }
    void open_gate() {
        {
            std::lock_guard lock(mu_);
            gated_ = false;
        }
        cv_.notify_all();
    }
    // Waits (up to 10 s) until `n` decodes in all have reached decode(); with the gate closed,
    // the n-th is then held there.
    bool wait_arrived(int32_t n) {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return arrived_ >= n; });
    }
    int32_t arrived() const {
        std::lock_guard lock(mu_);
        return arrived_;
    }
    void fail_next_decodes(int32_t n) {
        std::lock_guard lock(mu_);
        fail_next_ = n;
    }
    // Fails the next `times` decodes whose batch holds token `t`.
    void fail_batches_with(token_id t, int32_t times) {
        std::lock_guard lock(mu_);
        fail_token_ = t;
        fail_times_ = times;
    }
    void fail_warm_up() {
        std::lock_guard lock(mu_);
        fail_warm_up_ = true;
    }
    std::vector<std::string> violations() const {
        std::lock_guard lock(mu_);
        return violations_;
    }
    // Every token decoded successfully, with the adapter it ran under ("path@milli-scale", or ""
    // for the base model).
    std::vector<std::pair<token_id, std::string>> decoded_under() const {
        std::lock_guard lock(mu_);
        return decoded_under_;
    }
    std::vector<adapter_handle> freed_adapters() const {
        std::lock_guard lock(mu_);
        return freed_;
    }
    size_t loaded_adapters() const {
        std::lock_guard lock(mu_);
        return loaded_.size();
    }
    int32_t n_decodes() const {
        std::lock_guard lock(mu_);
        return n_decodes_;
    }

  private:
    class greedy_sampler final : public sequence_sampler {
      public:
        greedy_sampler(fake_decoder &d, std::string script) : d_(d), script_(std::move(script)) {}
        sampled_token sample(int32_t batch_index) override {
            const float  *l    = d_.logits(batch_index);
            const auto    best = std::max_element(l, l + k_vocab) - l;
            sampled_token out;
            out.token    = static_cast<token_id>(best);
            out.dead_end = script_ == "dead-end";
            return out;
        }
        void accept(token_id tok) override {
            if (script_ == "reject") {
                throw std::runtime_error("the grammar rejects token " + std::to_string(tok));
            }
        }

      private:
        fake_decoder &d_;
        std::string   script_;
    };

    const int32_t                                 n_ctx_slot_;
    const int32_t                                 max_batch_;
    mutable std::mutex                            mu_;
    std::condition_variable                       cv_;
    std::vector<std::vector<token_id>>            kv_;
    std::vector<std::vector<float>>               logits_;
    std::vector<std::string>                      violations_;
    std::vector<std::pair<token_id, std::string>> decoded_under_;
    std::map<adapter_handle, std::string>         loaded_;
    std::vector<adapter_handle>                   freed_;
    adapter_handle                                next_handle_ = 1;
    std::string                                   adapter_;
    bool                                          gated_        = false;
    int32_t                                       allowance_    = 0;
    int32_t                                       arrived_      = 0;
    int32_t                                       n_decodes_    = 0;
    int32_t                                       fail_next_    = 0;
    token_id                                      fail_token_   = -1;
    int32_t                                       fail_times_   = 0;
    bool                                          fail_warm_up_ = false;
};

} // namespace inferbox::testing

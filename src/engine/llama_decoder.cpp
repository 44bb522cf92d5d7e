#include "engine/llama_decoder.h"

#include "engine/context_params.h"
#include "engine/draft_model.h"
#include "model/sampler_setup.h"

#include "common.h"
#include "llama.h"
#include "sampling.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace inferbox {

namespace {

// The end-of-generation logit penalty for ignore_eos under a grammar; see make_sampler.
constexpr float grammar_eog_penalty = -1e9f;

class llama_sequence_sampler final : public sequence_sampler {
  public:
    llama_sequence_sampler(common_sampler *s, llama_context *ctx, bool grammar) : s_(s), ctx_(ctx), grammar_(grammar) {}
    ~llama_sequence_sampler() override { common_sampler_free(s_); }
    llama_sequence_sampler(const llama_sequence_sampler &)            = delete;
    llama_sequence_sampler &operator=(const llama_sequence_sampler &) = delete;

    sampled_token sample(int32_t batch_index) override {
        sampled_token out;
        out.token = common_sampler_sample(s_, ctx_, batch_index);
        if (grammar_) {
            // When the grammar allows no token of this vocabulary (a user grammar that needs a
            // character no token can produce), every candidate is -inf and the sampler returns
            // one anyway; accepting it would make llama.cpp throw or abort.
            const auto *cands = common_sampler_get_candidates(s_, false);
            out.dead_end      = cands->selected < 0 || !std::isfinite(cands->data[cands->selected].logit);
        }
        return out;
    }

    void accept(token_id tok) override { common_sampler_accept(s_, tok, true); }

  private:
    common_sampler *s_;
    llama_context  *ctx_;
    bool            grammar_;
};

class llama_decoder final : public decoder {
  public:
    llama_decoder(std::shared_ptr<const model> m, const engine_config &cfg) : model_(std::move(m)), cfg_(cfg) {
        for (token_id t = 0; t < model_->n_vocab(); ++t) {
            if (model_->is_eog(t)) {
                eog_bias_.push_back({t, -INFINITY});
            }
        }
    }
    ~llama_decoder() override {
        drafter_.reset();
        llama_batch_free(batch_);
        if (ctx_ != nullptr) {
            llama_free(ctx_);
        }
        for (auto &[h, ptr] : adapters_) {
            llama_adapter_lora_free(ptr);
        }
    }
    llama_decoder(const llama_decoder &)            = delete;
    llama_decoder &operator=(const llama_decoder &) = delete;

    std::optional<error> init();

    int32_t     n_ctx_slot() const override { return n_ctx_slot_; }
    int32_t     max_batch() const override { return n_batch_; }
    int32_t     n_vocab() const override { return model_->n_vocab(); }
    bool        is_eog(token_id t) const override { return model_->is_eog(t); }
    std::string piece(token_id t, bool special) const override { return model_->token_piece(t, special); }

    bool warm_up() override {
        token_id tok = llama_vocab_bos(model_->vocab());
        if (tok == LLAMA_TOKEN_NULL) {
            tok = 0;
        }
        common_batch_clear(batch_);
        common_batch_add(batch_, tok, 0, {0}, true);
        if (llama_decode(ctx_, batch_) != 0) {
            return false;
        }
        llama_memory_clear(llama_get_memory(ctx_), true);
        llama_synchronize(ctx_);
        return true;
    }

    int32_t decode(std::span<const batch_token> batch) override {
        common_batch_clear(batch_);
        for (const auto &t : batch) {
            common_batch_add(batch_, t.token, t.pos, {t.slot}, t.logits);
        }
        return llama_decode(ctx_, batch_);
    }

    const float *logits(int32_t batch_index) override { return llama_get_logits_ith(ctx_, batch_index); }

    void kv_copy(int32_t src_slot, int32_t dst_slot) override {
        llama_memory_seq_cp(llama_get_memory(ctx_), src_slot, dst_slot, -1, -1);
    }
    void kv_trim(int32_t slot, int32_t from_pos) override {
        llama_memory_seq_rm(llama_get_memory(ctx_), slot, from_pos, -1);
    }

    result<std::unique_ptr<sequence_sampler>> make_sampler(const sampling_params &p, int32_t choice) override;

    result<adapter_handle> load_adapter(const std::string &path) override {
        llama_adapter_lora *ptr = llama_adapter_lora_init(model_->raw(), path.c_str());
        if (ptr == nullptr) {
            return error{error_kind::internal, "llama.cpp could not load the adapter " + path, "", ""};
        }
        const adapter_handle h = next_adapter_++;
        adapters_.emplace(h, ptr);
        return h;
    }
    void free_adapter(adapter_handle h) override {
        if (auto it = adapters_.find(h); it != adapters_.end()) {
            llama_adapter_lora_free(it->second);
            adapters_.erase(it);
        }
    }
    void use_adapter(std::optional<adapter_handle> h, float scale) override {
        const auto it = h ? adapters_.find(*h) : adapters_.end();
        if (it == adapters_.end()) {
            llama_set_adapters_lora(ctx_, nullptr, 0, nullptr);
            return;
        }
        llama_adapter_lora *ptr = it->second;
        llama_set_adapters_lora(ctx_, &ptr, 1, &scale);
    }

    token_drafter *drafter() override { return drafter_.get(); }

  private:
    std::shared_ptr<const model>                   model_;
    engine_config                                  cfg_;
    llama_context                                 *ctx_        = nullptr;
    llama_batch                                    batch_      = {};
    int32_t                                        n_ctx_slot_ = 0;
    int32_t                                        n_batch_    = 0;
    std::vector<llama_logit_bias>                  eog_bias_; // -inf on every end-of-generation token
    std::map<adapter_handle, llama_adapter_lora *> adapters_;
    adapter_handle                                 next_adapter_ = 1;
    std::unique_ptr<draft_model>                   drafter_;
};

std::optional<error> llama_decoder::init() {
    auto cp            = llama_context_default_params();
    cp.n_ctx           = static_cast<uint32_t>(cfg_.n_ctx_slot) * static_cast<uint32_t>(cfg_.parallel);
    cp.n_batch         = static_cast<uint32_t>(cfg_.step_tokens);
    cp.n_ubatch        = static_cast<uint32_t>(std::clamp(cfg_.micro_batch, 1, cfg_.step_tokens));
    cp.n_seq_max       = static_cast<uint32_t>(cfg_.parallel);
    cp.n_threads       = cfg_.n_threads;
    cp.n_threads_batch = cfg_.n_threads;
    cp.kv_unified      = cfg_.kv_unified;
    set_attention_params(cp, cfg_.kv_type, cfg_.flash_attn);
    cp.no_perf = true;
    ctx_       = llama_init_from_model(model_->raw(), cp);
    if (ctx_ == nullptr) {
        return error{error_kind::internal,
                     "failed to create the llama.cpp context (" + std::to_string(cp.n_ctx) +
                         " KV tokens): reduce --ctx-size or --parallel",
                     "", ""};
    }
    // llama.cpp may round the context; each slot gets an equal share in non-unified mode. It
    // also caps n_batch at the whole context, and a step must never exceed what it accepts.
    n_ctx_slot_ = std::min(cfg_.n_ctx_slot, static_cast<int32_t>(llama_n_ctx_seq(ctx_)));
    n_batch_    = std::min(cfg_.step_tokens, static_cast<int32_t>(llama_n_batch(ctx_)));
    batch_      = llama_batch_init(n_batch_, 0, 1);
    if (!cfg_.draft_model) {
        return std::nullopt;
    }
    draft_config dc;
    dc.n_slots    = cfg_.parallel;
    dc.n_ctx_slot = n_ctx_slot_;
    dc.n_batch    = n_batch_;
    dc.n_ubatch   = std::clamp(cfg_.micro_batch, 1, n_batch_);
    dc.n_threads  = cfg_.n_threads;
    dc.p_min      = cfg_.draft_p_min;
    // q8_0 needs head sizes that hold its 32-value blocks, which a draft model may not have;
    // its KV is small, so it keeps f16 (store/profiles.h, estimate_draft_memory()).
    dc.kv_type    = cfg_.kv_type == kv_cache_type::q8_0 ? kv_cache_type::f16 : cfg_.kv_type;
    dc.flash_attn = cfg_.flash_attn;
    auto d        = draft_model::create(cfg_.draft_model, *model_, dc);
    if (!d) {
        return d.err();
    }
    drafter_ = std::move(*d);
    spdlog::info("speculative decoding: up to {} draft tokens per step from {}{}", cfg_.draft_max,
                 cfg_.draft_model->description(), cfg_.draft_ngram ? ", prompt lookup first" : "");
    return std::nullopt;
}

result<std::unique_ptr<sequence_sampler>> llama_decoder::make_sampler(const sampling_params &in, int32_t choice) {
    common_params_sampling sp;
    sp.temp            = in.temperature;
    sp.top_p           = in.top_p;
    sp.top_k           = in.top_k;
    sp.min_p           = in.min_p;
    sp.penalty_present = in.presence_penalty;
    sp.penalty_freq    = in.frequency_penalty;
    sp.penalty_repeat  = in.repetition_penalty;
    sp.penalty_last_n  = n_ctx_slot_;
    sp.seed            = in.seed ? *in.seed + static_cast<uint32_t>(choice) : LLAMA_DEFAULT_SEED;
    sp.no_perf         = true;
    // Greedy (temperature 0) keeps only the best token, which top-k of 1 finds in one pass.
    // Without it, every later sampler of the chain (top-p, min-p, temperature, the final
    // draw's softmax) walks the whole vocabulary each token: with Qwen2.5's 151936
    // tokens, about 0.4 ms a token per stream (docs/benchmarks.md, 2026-12-06). Logit bias
    // and penalties come before top-k in the chain, so they still apply.
    if (in.temperature <= 0.0f) {
        sp.top_k = 1;
    }
    for (const auto &[tok, bias] : in.logit_bias) {
        sp.logit_bias.push_back({tok, bias});
    }
    if (in.ignore_eos) {
        // Without a grammar, end-of-generation is impossible (-inf). With one, it gets a
        // huge but finite penalty instead: it is never sampled while the grammar allows
        // anything else, and still sampled when the grammar is complete and allows
        // nothing else (a -inf there would leave no token to sample at all).
        for (const auto &b : eog_bias_) {
            sp.logit_bias.push_back({b.token, in.grammar.empty() ? b.bias : grammar_eog_penalty});
        }
    }
    apply_grammar(sp, in);
    common_sampler *s = nullptr;
    try {
        s = common_sampler_init(model_->raw(), sp);
    } catch (const std::exception &e) {
        // The API layer checked the grammar on this model; this is a safety net only.
        spdlog::error("common_sampler_init failed: {}", e.what());
    }
    if (s == nullptr) {
        return error{error_kind::internal, "the engine could not queue this request", "", ""};
    }
    return std::unique_ptr<sequence_sampler>(std::make_unique<llama_sequence_sampler>(s, ctx_, !in.grammar.empty()));
}

} // namespace

result<std::unique_ptr<decoder>> make_llama_decoder(std::shared_ptr<const model> m, const engine_config &cfg) {
    auto d = std::make_unique<llama_decoder>(std::move(m), cfg);
    if (auto err = d->init()) {
        return *err;
    }
    return std::unique_ptr<decoder>(std::move(d));
}

result<std::unique_ptr<engine>> start_engine(std::shared_ptr<const model> m, engine_config cfg) {
    auto settled = engine::settle(std::move(cfg), m->n_ctx_train());
    if (!settled) {
        return settled.err();
    }
    auto d = make_llama_decoder(m, *settled);
    if (!d) {
        return d.err();
    }
    return engine::start(std::move(*d), std::move(*settled), std::move(m));
}

} // namespace inferbox

#include "engine/draft_model.h"

#include "engine/context_params.h"

#include "common.h"
#include "llama.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace inferbox {

namespace {

// The most likely token and its probability under softmax.
std::pair<token_id, float> greedy(const float *logits, int32_t n_vocab) {
    token_id best = 0;
    for (token_id t = 1; t < n_vocab; ++t) {
        if (logits[t] > logits[best]) {
            best = t;
        }
    }
    double sum = 0.0;
    for (token_id t = 0; t < n_vocab; ++t) {
        sum += std::exp(static_cast<double>(logits[t] - logits[best]));
    }
    return {best, static_cast<float>(1.0 / sum)};
}

// Why the two vocabularies cannot share token ids, or empty when they can.
std::string vocab_mismatch(const model &a, const model &b) {
    if (a.n_vocab() != b.n_vocab()) {
        return "the draft model has " + std::to_string(a.n_vocab()) + " tokens, the served model " +
               std::to_string(b.n_vocab());
    }
    const llama_vocab *va = a.vocab();
    const llama_vocab *vb = b.vocab();
    if (llama_vocab_type(va) != llama_vocab_type(vb) || llama_vocab_bos(va) != llama_vocab_bos(vb) ||
        llama_vocab_eos(va) != llama_vocab_eos(vb)) {
        return "the draft model's tokenizer type or special tokens differ from the served model's";
    }
    for (token_id t = 0; t < a.n_vocab(); ++t) {
        if (std::string_view(llama_vocab_get_text(va, t)) != std::string_view(llama_vocab_get_text(vb, t))) {
            return "token " + std::to_string(t) + " differs between the draft and the served model";
        }
    }
    return {};
}

} // namespace

draft_model::draft_model(std::shared_ptr<const model> m, draft_config cfg)
    : model_(std::move(m)), cfg_(cfg), held_(static_cast<size_t>(cfg.n_slots)) {}

draft_model::~draft_model() {
    llama_batch_free(batch_);
    if (ctx_ != nullptr) {
        llama_free(ctx_);
    }
}

result<std::unique_ptr<draft_model>> draft_model::create(std::shared_ptr<const model> draft, const model &target,
                                                         draft_config cfg) {
    if (auto why = vocab_mismatch(*draft, target); !why.empty()) {
        return error::invalid("the draft model " + draft->description() + " cannot draft for the served model: " + why +
                                  " (--draft-model needs the same tokenizer)",
                              "draft-model");
    }
    std::unique_ptr<draft_model> d(new draft_model(std::move(draft), cfg));
    auto                         cp = llama_context_default_params();
    cp.n_ctx                        = static_cast<uint32_t>(cfg.n_ctx_slot) * static_cast<uint32_t>(cfg.n_slots);
    cp.n_batch                      = static_cast<uint32_t>(std::max(cfg.n_batch, cfg.n_slots));
    // the served model's micro-batch, but every slot's token in one graph
    cp.n_ubatch  = std::min<uint32_t>(cp.n_batch, static_cast<uint32_t>(std::max({1, cfg.n_ubatch, cfg.n_slots})));
    cp.n_seq_max = static_cast<uint32_t>(cfg.n_slots);
    cp.n_threads = cfg.n_threads;
    cp.n_threads_batch = cfg.n_threads;
    cp.no_perf         = true;
    set_attention_params(cp, cfg.kv_type, cfg.flash_attn);
    d->cfg_.n_batch = static_cast<int32_t>(cp.n_batch);
    d->ctx_         = llama_init_from_model(d->model_->raw(), cp);
    d->batch_       = llama_batch_init(d->cfg_.n_batch, 0, 1);
    if (d->ctx_ == nullptr) {
        return error{error_kind::internal,
                     "failed to create the draft model's context (" + std::to_string(cp.n_ctx) + " KV tokens)", "", ""};
    }
    if (static_cast<int32_t>(llama_n_ctx_seq(d->ctx_)) < cfg.n_ctx_slot) {
        return error{error_kind::internal,
                     "the draft model's context holds fewer tokens per slot than the served model's", "", ""};
    }
    return d;
}

void draft_model::forget(int32_t slot) {
    llama_memory_seq_rm(llama_get_memory(ctx_), slot, -1, -1);
    held_[static_cast<size_t>(slot)].clear();
}

void draft_model::run(std::vector<job> &jobs) {
    llama_memory_t mem     = llama_get_memory(ctx_);
    const int32_t  n_vocab = model_->n_vocab();
    llama_batch   &batch   = batch_;

    // Per job: where in the batch its logits land (-1 = none yet), and whether it still drafts.
    std::vector<int32_t> logit_at(jobs.size(), -1);
    std::vector<bool>    active(jobs.size(), false);

    const auto decode = [&](const std::vector<size_t> &served) -> bool {
        if (batch.n_tokens == 0) {
            return true;
        }
        if (llama_decode(ctx_, batch) != 0) {
            spdlog::warn("the draft model failed to decode {} tokens; these sequences decode without drafts",
                         batch.n_tokens);
            for (size_t j : served) {
                active[j] = false;
                jobs[j].out.clear();
                forget(jobs[j].slot);
            }
            return false;
        }
        return true;
    };

    // Catch up: each slot's KV gets the history up to its last token, which is decoded with logits.
    std::vector<size_t> in_batch;
    const auto          take_logits = [&] {
        for (size_t j : in_batch) {
            if (!active[j] || logit_at[j] < 0) {
                continue;
            }
            const auto [tok, p] = greedy(llama_get_logits_ith(ctx_, logit_at[j]), n_vocab);
            logit_at[j]         = -1;
            if (p < cfg_.p_min) {
                active[j] = false;
                continue;
            }
            jobs[j].out.push_back(tok);
        }
    };
    common_batch_clear(batch);
    for (size_t j = 0; j < jobs.size(); ++j) {
        job &jb = jobs[j];
        jb.out.clear();
        if (jb.history.empty() || jb.max_tokens < 1 || static_cast<int32_t>(jb.history.size()) >= cfg_.n_ctx_slot) {
            continue;
        }
        auto         &held = held_[static_cast<size_t>(jb.slot)];
        const int32_t n    = static_cast<int32_t>(jb.history.size());
        const int32_t keep = std::min(common_prefix_len(held, jb.history), n - 1);
        llama_memory_seq_rm(mem, jb.slot, keep, -1);
        held.assign(jb.history.begin(), jb.history.begin() + keep);
        active[j] = true;
        for (int32_t i = keep; i < n; ++i) {
            if (batch.n_tokens == cfg_.n_batch) {
                if (decode(in_batch)) {
                    take_logits();
                }
                common_batch_clear(batch);
                in_batch.clear();
                if (!active[j]) {
                    break;
                }
            }
            if (in_batch.empty() || in_batch.back() != j) {
                in_batch.push_back(j);
            }
            const bool last = i + 1 == n;
            common_batch_add(batch, jb.history[static_cast<size_t>(i)], i, {jb.slot}, last);
            held.push_back(jb.history[static_cast<size_t>(i)]);
            if (last) {
                logit_at[j] = batch.n_tokens - 1;
            }
        }
    }
    if (decode(in_batch)) {
        take_logits();
    }

    // Draft: each guess is decoded to get the next, while the job wants more and stays confident.
    for (;;) {
        common_batch_clear(batch);
        in_batch.clear();
        for (size_t j = 0; j < jobs.size(); ++j) {
            job &jb = jobs[j];
            if (!active[j] || jb.out.empty() || static_cast<int32_t>(jb.out.size()) >= jb.max_tokens) {
                continue;
            }
            auto         &held = held_[static_cast<size_t>(jb.slot)];
            const int32_t pos  = static_cast<int32_t>(held.size());
            if (pos + 1 >= cfg_.n_ctx_slot) {
                continue;
            }
            common_batch_add(batch, jb.out.back(), pos, {jb.slot}, true);
            held.push_back(jb.out.back());
            logit_at[j] = batch.n_tokens - 1;
            in_batch.push_back(j);
        }
        if (batch.n_tokens == 0) {
            break;
        }
        if (decode(in_batch)) {
            take_logits();
        }
    }
}

} // namespace inferbox

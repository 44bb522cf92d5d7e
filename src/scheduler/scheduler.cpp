#include "scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace inferbox {

double expected_decode_us(std::span<const double> by_seqs, int32_t n) {
    const auto size = static_cast<int32_t>(by_seqs.size());
    if (n <= 0 || size == 0) {
        return 0.0;
    }
    const int32_t at = std::min(n, size - 1);
    for (int32_t m = at; m >= 1; --m) {
        if (by_seqs[static_cast<size_t>(m)] > 0) {
            return by_seqs[static_cast<size_t>(m)] * static_cast<double>(n) / static_cast<double>(m);
        }
    }
    for (int32_t m = at + 1; m < size; ++m) {
        if (by_seqs[static_cast<size_t>(m)] > 0) {
            return by_seqs[static_cast<size_t>(m)];
        }
    }
    return 0.0;
}

std::optional<int32_t> itl_prompt_tokens(double itl_us, double decode_us, double prompt_us_per_token,
                                         int32_t min_tokens) {
    if (!(itl_us > 0) || !(prompt_us_per_token > 0)) {
        return std::nullopt;
    }
    const double room   = std::max(itl_us * k_itl_headroom - std::max(decode_us, 0.0), 0.0);
    const double tokens = std::min(std::floor(room / prompt_us_per_token), double(1 << 30));
    return std::max(static_cast<int32_t>(tokens), std::max(min_tokens, 1));
}

std::chrono::microseconds arrival_window(double prefill_us_per_token, int32_t first_prompt_tokens, int32_t queued,
                                         int32_t n_slots) {
    constexpr auto k_min = std::chrono::microseconds(50);
    constexpr auto k_max = std::chrono::microseconds(2000);
    if (n_slots < 2 || queued >= n_slots || !(prefill_us_per_token > 0) || first_prompt_tokens <= 0) {
        return std::chrono::microseconds(0);
    }
    const double us     = std::min(prefill_us_per_token * first_prompt_tokens / 100.0, double(k_max.count()));
    const auto   window = std::chrono::microseconds(static_cast<int64_t>(us));
    return window < k_min ? std::chrono::microseconds(0) : window;
}

scheduler::scheduler(scheduler_config cfg) : cfg_(cfg), slots_(cfg.n_slots, cfg.min_copy_gain) {
    cfg_.step_tokens          = std::max(cfg_.step_tokens, cfg_.n_slots + 1);
    cfg_.prefill_while_decode = std::max(cfg_.prefill_while_decode, 1);
}

bool scheduler::submit_shared(uint64_t id, std::shared_ptr<const std::vector<token_id>> prompt, int32_t max_new_tokens,
                              kv_key key, std::chrono::steady_clock::time_point arrival) {
    if (static_cast<int32_t>(waiting_.size()) >= cfg_.max_waiting || !prompt || prompt->empty() || max_new_tokens < 1 ||
        static_cast<int64_t>(prompt->size()) + max_new_tokens > cfg_.n_ctx_slot || seqs_.count(id) != 0) {
        return false;
    }
    seq s;
    s.id          = id;
    s.st.n_prompt = static_cast<int32_t>(prompt->size());
    s.prompt      = std::move(prompt);
    s.st.max_new  = max_new_tokens;
    s.key         = key;
    s.arrival     = arrival;
    s.submitted   = ++submitted_;
    seqs_.emplace(id, std::move(s));
    waiting_.push_back(id);
    return true;
}

void scheduler::remove(uint64_t id) {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) {
        return;
    }
    if (it->second.st.phase == seq_phase::waiting) {
        std::erase(waiting_, id);
    } else if (it->second.st.slot >= 0) {
        slots_.release(it->second.st.slot);
    }
    seqs_.erase(it);
}

void scheduler::cancel(uint64_t id) {
    remove(id);
}

void scheduler::resolve_waiting_prefix(step_plan &plan) {
    for (auto &[id, s] : seqs_) {
        if (s.st.phase != seq_phase::waiting_prefix) {
            continue;
        }
        auto       leader       = seqs_.find(s.leader);
        const bool leader_alive = leader != seqs_.end() && leader->second.st.slot >= 0;
        if (leader_alive && leader->second.st.n_past < s.wait_len) {
            continue; // keep waiting: the shared prefix is still being computed
        }
        // The leader computed the prefix, or left: take the longest prefix any slot holds now.
        const int32_t max_reuse = s.st.n_prompt - 1;
        int32_t       src       = -1;
        int32_t       len       = slots_.common_prefix(s.st.slot, *s.prompt, s.key);
        for (int32_t k = 0; k < slots_.n_slots(); ++k) {
            const int32_t l = std::min(slots_.common_prefix(k, *s.prompt, s.key), max_reuse);
            if (k != s.st.slot && l > len) {
                src = k;
                len = l;
            }
        }
        len        = std::min(len, max_reuse);
        auto &mine = slots_.tokens(s.st.slot);
        if (src >= 0) {
            const auto &theirs = slots_.tokens(src);
            mine.assign(theirs.begin(), theirs.begin() + len);
        } else {
            mine.resize(static_cast<size_t>(len));
        }
        plan.kv_ops.push_back({src, s.st.slot, len});
        s.st.n_past   = len;
        s.st.n_cached = len;
        s.st.phase    = seq_phase::prefilling;
    }
}

// With a first-token target every sequence's deadline is its arrival plus the same target, so
// earliest deadline first is earliest arrival first: the order requests reached the server, which
// may differ from the order they reached the engine (a long prompt takes longer to render and
// tokenize). Ties (a request's n choices) keep submission order.
bool scheduler::prompt_first(const seq &a, const seq &b) const {
    if (cfg_.slo_ttft_us > 0 && a.arrival != b.arrival) {
        return a.arrival < b.arrival;
    }
    return a.order < b.order;
}

uint64_t scheduler::pop_waiting() {
    auto next = waiting_.begin();
    if (cfg_.slo_ttft_us > 0) {
        next = std::min_element(waiting_.begin(), waiting_.end(), [&](uint64_t a, uint64_t b) {
            const seq &x = seqs_.at(a);
            const seq &y = seqs_.at(b);
            return x.arrival != y.arrival ? x.arrival < y.arrival : x.submitted < y.submitted;
        });
    }
    const uint64_t id = *next;
    waiting_.erase(next);
    return id;
}

void scheduler::admit(step_plan &plan) {
    while (!waiting_.empty() && slots_.n_idle() > 0) {
        const uint64_t id    = pop_waiting();
        seq           &s     = seqs_.at(id);
        auto           grant = slots_.acquire(*s.prompt, cfg_.prefix_reuse, s.key);
        s.st.slot            = grant->slot;
        s.st.n_past          = grant->n_reused;
        s.st.n_cached        = grant->n_reused;
        s.st.phase           = seq_phase::prefilling;
        s.order              = ++order_;
        plan.kv_ops.push_back({grant->copy_from, grant->slot, grant->n_reused});
        plan.admitted.push_back(id);

        if (!cfg_.prefix_reuse) {
            continue;
        }
        // Another sequence may be computing a longer shared prefix right now (a common system
        // prompt arriving in a burst): wait for it and copy, instead of computing it twice.
        const int32_t max_reuse = s.st.n_prompt - 1;
        uint64_t      leader    = 0;
        int32_t       best      = s.st.n_past + cfg_.min_shared_wait - 1;
        for (const auto &[oid, o] : seqs_) {
            if (oid == id || o.st.phase != seq_phase::prefilling || o.key != s.key) {
                continue;
            }
            const int32_t l = std::min(common_prefix_len(*o.prompt, *s.prompt), max_reuse);
            if (l > best && o.st.n_past < l) {
                best   = l;
                leader = oid;
            }
        }
        if (leader != 0) {
            s.st.phase = seq_phase::waiting_prefix;
            s.leader   = leader;
            s.wait_len = best;
        }
    }
}

kv_key scheduler::pick_key() {
    std::set<kv_key> keys;
    for (const auto &[id, s] : seqs_) {
        if (s.st.phase == seq_phase::decoding || s.st.phase == seq_phase::prefilling) {
            keys.insert(s.key);
        }
    }
    if (keys.empty()) {
        return last_key_;
    }
    // Round robin over the keys with work: the next one after the last step's, cyclically.
    auto next = keys.upper_bound(last_key_);
    last_key_ = next == keys.end() ? *keys.begin() : *next;
    return last_key_;
}

step_plan scheduler::schedule() {
    step_plan plan;
    resolve_waiting_prefix(plan);
    admit(plan);
    plan.key               = pick_key();
    const int32_t n_decode = plan_decodes(plan);
    plan_prompts(plan, n_decode);
    for (const auto &it : plan.items) {
        plan.n_tokens += static_cast<int32_t>(it.tokens.size());
    }
    return plan;
}

std::optional<int32_t> scheduler::itl_prompt_budget(int32_t n_decoding) const {
    if (n_decoding <= 0 || !(cfg_.slo_itl_us > 0)) {
        return std::nullopt;
    }
    const double cost = itl_prompt_us_per_token_ > 0 ? itl_prompt_us_per_token_ : prefill_us_per_token_;
    return itl_prompt_tokens(cfg_.slo_itl_us, expected_decode_us(decode_us_by_seqs_, n_decoding), cost,
                             k_itl_min_prompt_tokens);
}

// One item per decoding sequence of the step's key: its next token, then its draft trimmed to
// what the step and the sequence have room for. Returns the tokens planned.
int32_t scheduler::plan_decodes(step_plan &plan) {
    int32_t n_decode = 0;
    for (const auto &[id, s] : seqs_) {
        n_decode += s.st.phase == seq_phase::decoding && s.key == plan.key ? 1 : 0;
    }
    // Drafts share what the step's budget leaves after one token per decoding sequence.
    int32_t draft_budget = std::max(0, cfg_.step_tokens - n_decode);
    n_decode             = 0;
    for (auto &[id, s] : seqs_) {
        if (s.st.phase != seq_phase::decoding || s.key != plan.key) {
            s.draft.clear();
            continue;
        }
        const int32_t room    = std::min(draft_room(s), draft_budget);
        const int32_t n_draft = std::clamp(static_cast<int32_t>(s.draft.size()), 0, std::max(room, 0));
        plan_item     item{id, s.st.slot, s.st.n_past, {s.next_token}, true, n_draft, plan_work::decode};
        item.tokens.insert(item.tokens.end(), s.draft.begin(), s.draft.begin() + n_draft);
        s.draft.clear();
        auto &held = slots_.tokens(s.st.slot);
        held.insert(held.end(), item.tokens.begin(), item.tokens.end());
        s.st.n_past += 1 + n_draft;
        s.n_draft_planned = n_draft;
        draft_budget -= n_draft;
        n_decode += 1 + n_draft;
        plan.items.push_back(std::move(item));
    }
    return n_decode;
}

void scheduler::plan_prompts(step_plan &plan, int32_t n_decode) {
    // Prompt budget: what the step has left after the decode tokens, capped at
    // prefill_while_decode while streams are running, so a new prompt never stalls them for
    // long; unless more prompts wait for their first token than streams run (a cluster of
    // arrivals beside a few streams): then holding those first tokens back costs more than the
    // running streams' stall gains, and the prompts take the whole step.
    //
    // Prompts are taken first come, first served (earliest deadline first under a first-token
    // target, prompt_first()), and once the step holds prefill_step_us of
    // prompt work (at the measured cost per token), the rest wait for the next step. Where
    // prefill is compute-bound (a CPU), a burst of prompts computed together costs about what
    // they cost one after another, but every first token then comes when the last prompt is
    // done; one after another, the first comes after one prompt, the next after two, and the
    // mean first-token time of n equal prompts falls from n to about (n+1)/2 prompt times. The
    // last first token comes later only by the decode steps of the streams that started first,
    // and those streams stall while the later prompts are computed (docs/benchmarks.md measures
    // both). Cheap prompts (a tiny model, short prompts) still share a step.
    std::vector<seq *> prefilling;
    for (auto &[id, s] : seqs_) {
        if (s.st.phase == seq_phase::prefilling && s.key == plan.key) {
            prefilling.push_back(&s);
        }
    }
    int32_t    budget = cfg_.step_tokens - n_decode;
    const bool capped = n_decode > 0 && static_cast<int32_t>(prefilling.size()) <= n_decode;
    // With a time budget per step (prefill_step_us), the cap bounds each prompt's chunk, so a
    // long prompt still stalls running streams one chunk at a time, and the time budget bounds
    // the step: cheap prompts (the tail of a burst on a small model) share a step instead of
    // taking one cap's worth of tokens a step between decode steps (64 streams of stories260K:
    // the last first token of a burst came 10 % sooner, docs/benchmarks.md). Without a time
    // budget the cap bounds the step's prompt tokens.
    int32_t chunk_cap = capped && cfg_.prefill_step_us > 0 ? cfg_.prefill_while_decode : budget;
    if (capped && cfg_.prefill_step_us <= 0) {
        budget = std::min(budget, cfg_.prefill_while_decode);
    }
    // An inter-token target replaces both, whenever sequences decode: the step takes the prompt
    // tokens the measured costs say fit in the target beside the decode (at least a few, so
    // prompts progress), however many prompts wait, and --prefill-chunk still caps each chunk.
    // A long prompt then takes several steps, each a short stall, and its first token waits
    // for them (Sarathi-Serve's stall-free batching, with a budget in time rather than tokens).
    const auto n_decoding = static_cast<int32_t>(plan.items.size()); // so far, only decode items
    if (const auto itl_tokens = itl_prompt_budget(n_decoding)) {
        budget    = std::min(cfg_.step_tokens - n_decode, *itl_tokens);
        chunk_cap = std::min(budget, cfg_.prefill_while_decode);
    }
    std::sort(prefilling.begin(), prefilling.end(),
              [this](const seq *a, const seq *b) { return prompt_first(*a, *b); });
    double prompt_us = 0;
    for (seq *s : prefilling) {
        if (budget <= 0) {
            break;
        }
        if (cfg_.prefill_step_us > 0 && prompt_us >= cfg_.prefill_step_us) {
            break;
        }
        const int32_t left  = s->st.n_prompt - s->st.n_past;
        const int32_t chunk = std::min({left, budget, chunk_cap});
        plan_item     item{s->id, s->st.slot, s->st.n_past, {}, chunk == left, 0, plan_work::prompt};
        item.tokens.assign(s->prompt->begin() + s->st.n_past, s->prompt->begin() + s->st.n_past + chunk);
        auto &held = slots_.tokens(s->st.slot);
        held.insert(held.end(), item.tokens.begin(), item.tokens.end());
        s->st.n_past += chunk;
        budget -= chunk;
        prompt_us += chunk * prefill_us_per_token_;
        plan.items.push_back(std::move(item));
        if (chunk < left) {
            break; // a chunk short of its prompt ends the step's prompt list
        }
    }
}

int32_t scheduler::draft_room(const seq &s) const {
    if (s.st.phase != seq_phase::decoding) {
        return 0;
    }
    return std::max(0, std::min(cfg_.n_ctx_slot - s.st.n_past - 1, s.st.max_new - s.st.n_generated - 1));
}

int32_t scheduler::draft_room(uint64_t id) const {
    auto it = seqs_.find(id);
    return it == seqs_.end() ? 0 : draft_room(it->second);
}

void scheduler::set_draft(uint64_t id, std::vector<token_id> draft) {
    auto it = seqs_.find(id);
    if (it != seqs_.end() && it->second.st.phase == seq_phase::decoding) {
        it->second.draft = std::move(draft);
    }
}

void scheduler::on_sampled(uint64_t id, std::span<const token_id> tokens, bool finished) {
    auto it = seqs_.find(id);
    if (it == seqs_.end() || tokens.empty()) {
        return;
    }
    seq          &s        = it->second;
    const auto    n        = static_cast<int32_t>(tokens.size());
    const int32_t rejected = s.n_draft_planned - std::min(n - 1, s.n_draft_planned);
    if (rejected > 0) {
        s.st.n_past -= rejected;
        slots_.tokens(s.st.slot).resize(static_cast<size_t>(s.st.n_past));
    }
    s.n_draft_planned = 0;
    s.st.n_generated += n;
    if (finished || s.st.n_generated >= s.st.max_new) {
        remove(id);
        return;
    }
    s.next_token = tokens.back();
    s.st.phase   = seq_phase::decoding;
}

std::vector<uint64_t> scheduler::fail_step(const step_plan &plan) {
    std::vector<int32_t> touched;
    for (const auto &op : plan.kv_ops) {
        touched.push_back(op.dst_slot);
    }
    for (const auto &it : plan.items) {
        touched.push_back(it.slot);
    }
    std::vector<uint64_t> removed;
    for (const auto &[id, s] : seqs_) {
        if (s.st.slot >= 0 && std::find(touched.begin(), touched.end(), s.st.slot) != touched.end()) {
            removed.push_back(id);
        }
    }
    for (uint64_t id : removed) {
        remove(id);
    }
    for (int32_t slot : touched) {
        slots_.tokens(slot).clear();
    }
    return removed;
}

std::optional<seq_info> scheduler::info(uint64_t id) const {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) {
        return std::nullopt;
    }
    return it->second.st;
}

std::vector<token_id> scheduler::history(uint64_t id) const {
    auto it = seqs_.find(id);
    if (it == seqs_.end() || it->second.st.phase != seq_phase::decoding) {
        return {};
    }
    std::vector<token_id> out = slots_.tokens(it->second.st.slot);
    out.push_back(it->second.next_token);
    return out;
}

} // namespace inferbox

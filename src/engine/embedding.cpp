#include "engine/embedding.h"

#include <cmath>

namespace inferbox {

const char *pooling_name(pooling_kind p) {
    switch (p) {
    case pooling_kind::none:
        return "none";
    case pooling_kind::mean:
        return "mean";
    case pooling_kind::cls:
        return "cls";
    case pooling_kind::last:
        return "last";
    case pooling_kind::rank:
        return "rank";
    }
    return "none";
}

std::optional<pooling_choice> parse_pooling_choice(std::string_view s) {
    if (s == "auto") {
        return pooling_choice::model;
    }
    if (s == "mean") {
        return pooling_choice::mean;
    }
    if (s == "cls") {
        return pooling_choice::cls;
    }
    if (s == "last") {
        return pooling_choice::last;
    }
    if (s == "none") {
        return pooling_choice::none;
    }
    return std::nullopt;
}

pooling_kind resolve_pooling(pooling_choice choice, std::optional<int64_t> metadata) {
    switch (choice) {
    case pooling_choice::none:
        return pooling_kind::none;
    case pooling_choice::mean:
        return pooling_kind::mean;
    case pooling_choice::cls:
        return pooling_kind::cls;
    case pooling_choice::last:
        return pooling_kind::last;
    case pooling_choice::model:
        break;
    }
    // llama_pooling_type: 0 none, 1 mean, 2 cls, 3 last, 4 rank.
    switch (metadata.value_or(0)) {
    case 2:
        return pooling_kind::cls;
    case 3:
        return pooling_kind::last;
    case 4:
        return pooling_kind::rank;
    default:
        return pooling_kind::mean;
    }
}

bool truncate_tokens(std::vector<token_id> &tokens, size_t limit, truncate_mode mode, token_framing framing) {
    if (tokens.size() <= limit) {
        return true;
    }
    if (mode == truncate_mode::none || limit == 0) {
        return false;
    }
    if (framing.n_lead + framing.n_trail >= limit || framing.n_lead + framing.n_trail > tokens.size()) {
        framing = {}; // no room for content between the frames: cut the raw sequence
    }
    const size_t n_drop = tokens.size() - limit;
    const auto   lead   = static_cast<std::ptrdiff_t>(framing.n_lead);
    const auto   trail  = static_cast<std::ptrdiff_t>(framing.n_trail);
    const auto   drop   = static_cast<std::ptrdiff_t>(n_drop);
    if (mode == truncate_mode::start) {
        tokens.erase(tokens.begin() + lead, tokens.begin() + lead + drop);
    } else {
        tokens.erase(tokens.end() - trail - drop, tokens.end() - trail);
    }
    return true;
}

void l2_normalize(std::vector<float> &v) {
    double sum = 0.0;
    for (float x : v) {
        sum += static_cast<double>(x) * static_cast<double>(x);
    }
    if (sum <= 0.0) {
        return;
    }
    const double scale = 1.0 / std::sqrt(sum);
    for (float &x : v) {
        x = static_cast<float>(static_cast<double>(x) * scale);
    }
}

std::vector<float> shorten_embedding(const std::vector<float> &v, size_t dims) {
    if (dims >= v.size()) {
        return v;
    }
    std::vector<float> out(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(dims));
    l2_normalize(out);
    return out;
}

std::optional<error> embedding_queue::push(std::shared_ptr<embedding_task> task) {
    const size_t n = task->inputs.size() - task->n_taken;
    {
        std::lock_guard lock(mu_);
        if (closed_) {
            return error{error_kind::unavailable, "the server is shutting down", "", ""};
        }
        if (n_queued_ + n > max_inputs_) {
            return error{error_kind::overloaded,
                         "the embedder is at capacity: " + std::to_string(n_queued_) + " inputs are waiting (limit " +
                             std::to_string(max_inputs_) + ", --embedding-max-queue); retry shortly",
                         "", "queue_full"};
        }
        n_queued_ += n;
        tasks_.push_back(std::move(task));
        changed_locked();
    }
    cv_.notify_one();
    return std::nullopt;
}

void embedding_queue::changed_locked() const {
    if (on_change_) {
        on_change_(n_queued_);
    }
}

std::vector<embedding_batch_item> embedding_queue::take_locked(const embedding_batch_limits &limits) {
    const size_t                      n_before = n_queued_;
    std::vector<embedding_batch_item> batch;
    size_t                            n_tokens = 0;
    while (!tasks_.empty()) {
        auto &task = tasks_.front();
        if (task->cancelled()) {
            n_queued_ -= task->inputs.size() - task->n_taken;
            tasks_.pop_front();
            continue;
        }
        bool full = false;
        while (task->n_taken < task->inputs.size()) {
            const size_t len = task->inputs[task->n_taken].size();
            if (batch.size() >= limits.n_inputs || (!batch.empty() && n_tokens + len > limits.n_tokens)) {
                full = true;
                break;
            }
            batch.push_back({task, task->n_taken});
            n_tokens += len;
            ++task->n_taken;
            --n_queued_;
        }
        if (full) {
            break;
        }
        tasks_.pop_front();
    }
    in_flight_ = !batch.empty();
    if (n_queued_ != n_before) {
        changed_locked();
    }
    return batch;
}

std::vector<embedding_batch_item> embedding_queue::try_take(const embedding_batch_limits &limits) {
    std::lock_guard lock(mu_);
    return take_locked(limits);
}

std::optional<std::vector<embedding_batch_item>> embedding_queue::wait_take(const embedding_batch_limits &limits) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return closed_ || !tasks_.empty(); });
    if (closed_) {
        return std::nullopt;
    }
    return take_locked(limits);
}

void embedding_queue::batch_done() {
    std::lock_guard lock(mu_);
    in_flight_ = false;
}

void embedding_queue::close() {
    {
        std::lock_guard lock(mu_);
        closed_ = true;
    }
    cv_.notify_all();
}

std::vector<std::shared_ptr<embedding_task>> embedding_queue::drain() {
    std::lock_guard                              lock(mu_);
    std::vector<std::shared_ptr<embedding_task>> out(tasks_.begin(), tasks_.end());
    tasks_.clear();
    n_queued_ = 0;
    changed_locked();
    return out;
}

size_t embedding_queue::n_queued() const {
    std::lock_guard lock(mu_);
    return n_queued_;
}

bool embedding_queue::idle() const {
    std::lock_guard lock(mu_);
    return n_queued_ == 0 && !in_flight_;
}

} // namespace inferbox

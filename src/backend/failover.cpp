#include "backend/failover.h"

#include <algorithm>
#include <mutex>

namespace inferbox {

namespace {

// Each candidate's own prepared request (null where its preparation failed), and the request as
// the router got it, from which a continuation is made when a stream moves mid-way.
struct failover_detail {
    std::vector<std::shared_ptr<const backend_request>> prepared;
    api_request                                         original;
    // One text prompt, one choice, no tools: a stream that breaks mid-way can continue elsewhere
    // from the prompt plus the text already sent.
    bool                                  resumable = false;
    std::chrono::steady_clock::time_point deadline{};
};

class failover_stream final : public generation_stream, public std::enable_shared_from_this<failover_stream> {
  public:
    failover_stream(std::vector<route_candidate> candidates, std::shared_ptr<const failover_detail> detail,
                    std::function<void()> notify)
        : candidates_(std::move(candidates)), detail_(std::move(detail)), notify_(std::move(notify)) {}

    // Submits to candidate `from` or, when it refuses, the next ones. The first refusal is the
    // one reported when every candidate refuses (its kind; every message, in order).
    std::optional<error> start(size_t from, const std::string &reason) {
        std::optional<error> first;
        std::string          messages;
        for (size_t i = from; i < candidates_.size(); ++i) {
            const auto &prepared = detail_->prepared[i];
            if (!prepared) {
                continue;
            }
            auto s = candidates_[i].backend->submit(prepared, notify_);
            if (s) {
                std::lock_guard lock(mu_);
                current_ = i;
                inner_   = std::move(*s);
                route_   = {candidates_[i].name, i == from ? reason : "fallback"};
                return std::nullopt;
            }
            messages += (messages.empty() ? "" : "; then ") + s.err().message;
            if (!first) {
                first = s.err();
            }
            if (!failover_backend::movable(s.err())) {
                break;
            }
        }
        if (!first) {
            return error{error_kind::unavailable, "no backend could be prepared for this request", "", "no_backend"};
        }
        first->message = messages;
        return first;
    }

    std::vector<backend_event> take() override {
        std::shared_ptr<generation_stream> inner;
        {
            std::lock_guard lock(mu_);
            inner = inner_;
        }
        std::vector<backend_event> out;
        if (!inner) {
            return out;
        }
        for (auto &ev : inner->take()) {
            if (ev.err && failover_backend::movable(*ev.err) && !past_deadline() &&
                (delivered_ ? detail_->resumable && resume() : move_on(*ev.err))) {
                return out; // the next candidate's events follow on the same notify
            }
            delivered_ = true;
            if (!ev.err && !ev.content.empty()) {
                sent_text_ += ev.content;
                ++sent_events_;
            }
            if (resumed_ && ev.finish != finish_reason::none) {
                // The backend counted the streamed text as prompt: it was generated.
                ev.n_generated += sent_events_at_resume_;
                ev.n_prompt = std::max(0, ev.n_prompt - sent_events_at_resume_);
            }
            out.push_back(std::move(ev));
            if (out.back().err) {
                break;
            }
        }
        return out;
    }

    void cancel() override {
        std::shared_ptr<generation_stream> inner;
        {
            std::lock_guard lock(mu_);
            cancelled_ = true;
            inner      = inner_;
        }
        if (inner) {
            inner->cancel();
        }
    }

    route_info route() const override {
        std::lock_guard lock(mu_);
        return route_;
    }

    bool open_at_first_event() const override { return true; }

  private:
    // The current candidate failed before any event reached the client: the next one takes over.
    bool move_on(const error &err) {
        std::shared_ptr<generation_stream> old;
        size_t                             next = 0;
        {
            std::lock_guard lock(mu_);
            if (cancelled_) {
                return false;
            }
            old  = inner_;
            next = current_ + 1;
        }
        old->cancel();
        if (next >= candidates_.size()) {
            return false;
        }
        if (auto e = start(next, "fallback")) {
            (void)err;
            return false;
        }
        return true;
    }

    // A request past its deadline is not moved: the job ends it (504) anyway.
    bool past_deadline() const {
        const auto d = detail_->deadline;
        return d != std::chrono::steady_clock::time_point{} && std::chrono::steady_clock::now() >= d;
    }

    // Mid-stream failover: the same request continues on another candidate from the prompt plus
    // the text already sent, for the tokens that remain. Each token streamed so far is counted
    // as one event (backends stream a token per event; text held back by a stop string may merge
    // a few, so the remainder is an upper bound).
    bool resume() {
        std::shared_ptr<generation_stream> old;
        size_t                             failed = 0;
        {
            std::lock_guard lock(mu_);
            if (cancelled_) {
                return false;
            }
            old    = inner_;
            failed = current_;
        }
        old->cancel();
        api_request cont = detail_->original;
        cont.prompts     = {std::get<std::string>(cont.prompts.front()) + sent_text_};
        cont.echo        = false;
        if (cont.max_tokens) {
            cont.max_tokens = std::max(1, *cont.max_tokens - sent_events_);
        }
        for (size_t k = 1; k < candidates_.size(); ++k) {
            const size_t i = (failed + k) % candidates_.size();
            auto         p = candidates_[i].backend->prepare(cont);
            if (!p) {
                continue;
            }
            auto s = candidates_[i].backend->submit(std::make_shared<const backend_request>(std::move(*p)), notify_);
            if (!s) {
                continue;
            }
            std::lock_guard lock(mu_);
            current_               = i;
            inner_                 = std::move(*s);
            route_                 = {candidates_[i].name, "failover"};
            resumed_               = true;
            sent_events_at_resume_ = sent_events_;
            return true;
        }
        return false;
    }

    std::vector<route_candidate>           candidates_;
    std::shared_ptr<const failover_detail> detail_;
    std::function<void()>                  notify_;
    mutable std::mutex                     mu_;
    size_t                                 current_ = 0;
    std::shared_ptr<generation_stream>     inner_;
    route_info                             route_;
    bool                                   cancelled_ = false;
    bool                                   delivered_ = false; // consumer's executor only (and below)
    std::string                            sent_text_;
    int32_t                                sent_events_           = 0;
    int32_t                                sent_events_at_resume_ = 0;
    bool                                   resumed_               = false;
};

} // namespace

failover_backend::failover_backend(std::vector<route_candidate> candidates, std::string reason)
    : candidates_(std::move(candidates)), reason_(std::move(reason)) {}

bool failover_backend::movable(const error &err) {
    switch (err.kind) {
    case error_kind::overloaded:
    case error_kind::unavailable:
    case error_kind::upstream:
    case error_kind::timeout:
    case error_kind::internal:
        return true;
    default:
        return false;
    }
}

std::optional<error> failover_backend::check(const api_request &req) const {
    if (candidates_.empty()) {
        return error{error_kind::unavailable, "no backend serves this model now", "model", "no_backend"};
    }
    return candidates_.front().backend->check(req);
}

std::optional<error> failover_backend::over_capacity(int32_t n_sequences) const {
    std::optional<error> first;
    for (size_t i = 0; i < candidates_.size(); ++i) {
        auto err = candidates_[i].backend->over_capacity(n_sequences);
        if (!err) {
            first_ = i;
            return std::nullopt;
        }
        if (!first) {
            first = std::move(err);
        }
    }
    return first;
}

result<backend_request> failover_backend::prepare(api_request req) const {
    auto detail = std::make_shared<failover_detail>();
    detail->prepared.resize(candidates_.size());
    detail->resumable = candidates_.size() > 1 && req.kind == api_kind::completion && req.prompts.size() == 1 &&
                        std::holds_alternative<std::string>(req.prompts.front()) && req.n == 1;
    if (detail->resumable) {
        detail->original = req;
    }
    detail->deadline = req.deadline;
    std::optional<backend_request> lead;
    std::optional<error>           first_err;
    for (size_t i = first_; i < candidates_.size(); ++i) {
        auto p = candidates_[i].backend->prepare(req);
        if (!p) {
            if (!lead && !movable(p.err())) {
                return p.err(); // the request itself is at fault
            }
            if (!first_err) {
                first_err = p.err();
            }
            continue;
        }
        if (!lead) {
            lead = *p; // its prompts and choices are what the job reads
        }
        detail->prepared[i] = std::make_shared<const backend_request>(std::move(*p));
    }
    if (!lead) {
        return *first_err;
    }
    lead->detail = std::move(detail);
    return std::move(*lead);
}

result<std::shared_ptr<generation_stream>> failover_backend::submit(std::shared_ptr<const backend_request> req,
                                                                    std::function<void()>                  notify) {
    auto detail = std::static_pointer_cast<const failover_detail>(req->detail);
    auto stream = std::make_shared<failover_stream>(candidates_, detail, std::move(notify));
    if (auto err = stream->start(first_, first_ == 0 ? reason_ : "overflow")) {
        return *err;
    }
    return std::shared_ptr<generation_stream>(std::move(stream));
}

bool failover_backend::healthy() const {
    for (const auto &c : candidates_) {
        if (c.backend->healthy()) {
            return true;
        }
    }
    return false;
}

} // namespace inferbox

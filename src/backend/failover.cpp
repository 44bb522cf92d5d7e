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
    // A stream that breaks mid-way can continue elsewhere (resumable_request).
    bool                                  resumable = false;
    std::chrono::steady_clock::time_point deadline{};
};

// Whether a stream of `req` can continue on another backend from the text already sent: one
// choice, and output that a continuation can extend. A completion needs one text prompt (the
// continuation's prompt is that prompt plus the text); a chat request continues its answer as
// the final assistant message (continue_final_message). An output constraint is never resumed:
// the next backend's grammar would start over from its root in the middle of the output.
bool resumable_request(const api_request &req) {
    if (req.n != 1 || req.constraint.kind != constraint_kind::none) {
        return false;
    }
    if (req.kind == api_kind::chat) {
        return !req.messages.empty();
    }
    return req.prompts.size() == 1 && std::holds_alternative<std::string>(req.prompts.front());
}

// The request that continues `original` on another backend after `sent` (the text the client
// has) was generated in `n_sent` events. Each event is counted as one token (backends stream a
// token per event; text a stop string held back may merge a few, so the remainder is an upper
// bound).
api_request continuation_of(const api_request &original, const std::string &sent, int32_t n_sent) {
    api_request cont = original;
    if (cont.max_tokens) {
        cont.max_tokens = std::max(1, *cont.max_tokens - n_sent);
    }
    if (cont.kind == api_kind::completion) {
        cont.prompts = {std::get<std::string>(cont.prompts.front()) + sent};
        cont.echo    = false;
        return cont;
    }
    if (cont.continue_final_message) {
        cont.messages.back().content += sent; // the client's own prefix, then what was generated
    } else if (!sent.empty()) {
        chat_message prefix;
        prefix.role    = "assistant";
        prefix.content = sent;
        cont.messages.push_back(std::move(prefix));
        cont.continue_final_message = true;
    }
    return cont;
}

class failover_stream final : public generation_stream, public std::enable_shared_from_this<failover_stream> {
  public:
    failover_stream(std::vector<route_candidate> candidates, std::shared_ptr<const failover_detail> detail,
                    std::function<void()> notify, retry_policy retry)
        : candidates_(std::move(candidates)), detail_(std::move(detail)), notify_(std::move(notify)),
          retry_(std::move(retry)), backoff_(retry_.backoff) {}

    // Every candidate failed with `err` before anything reached the client: schedules another
    // round when the policy, the request's deadline and the error allow one (a remote backend
    // must be among the candidates: a box alone gets its answer at once). True when scheduled.
    bool schedule_retry(const error &err) {
        const bool remote = std::any_of(candidates_.begin(), candidates_.end(),
                                        [](const route_candidate &c) { return c.name != "local"; });
        if (!retry_.schedule || !remote || !failover_backend::retryable(err)) {
            return false;
        }
        std::chrono::milliseconds delay{0};
        {
            std::lock_guard lock(mu_);
            const auto      d = detail_->deadline;
            if (cancelled_ || retries_ >= retry_.max_retries ||
                (d != std::chrono::steady_clock::time_point{} && std::chrono::steady_clock::now() + backoff_ >= d)) {
                return false;
            }
            if (!first_err_) {
                first_err_  = err;
                first_fail_ = std::chrono::steady_clock::now();
            }
            ++retries_;
            delay    = backoff_;
            backoff_ = std::min(backoff_ * 2, retry_.max_backoff);
            inner_.reset(); // take() has nothing to give until the retry starts a stream
        }
        std::weak_ptr<failover_stream> weak = shared_from_this();
        retry_.schedule(delay, [weak] {
            if (auto self = weak.lock()) {
                self->retry_now();
            }
        });
        return true;
    }

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
        std::vector<backend_event>         out;
        {
            std::lock_guard lock(mu_);
            inner = inner_;
            if (!inner && final_err_) { // the last retry failed too
                backend_event ev;
                ev.err = std::move(final_err_);
                final_err_.reset();
                out.push_back(std::move(ev));
            }
        }
        if (!inner) {
            return out;
        }
        for (auto &ev : inner->take()) {
            // Once a tool call's delta reached the client the stream is not resumed: a
            // continuation cannot be asked to go on inside a call (continue_final_message
            // continues text), so the error ends the stream.
            if (ev.err && failover_backend::movable(*ev.err) && !past_deadline() &&
                (delivered_ ? detail_->resumable && !sent_calls_ && resume() : move_on(*ev.err))) {
                return out; // the next candidate's events follow on the same notify
            }
            if (ev.err && !delivered_ && failover_backend::movable(*ev.err)) {
                ev.err = after_retries(*ev.err); // the answer's error, after any retries
            }
            delivered_ = true;
            if (!ev.err && !ev.content.empty()) {
                sent_text_ += ev.content;
                ++sent_events_;
            }
            sent_calls_ = sent_calls_ || !ev.calls.empty();
            if (resumed_ && ev.finish != finish_reason::none) {
                finish_resumed(ev);
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
            return schedule_retry(err);
        }
        if (auto e = start(next, "fallback")) {
            return schedule_retry(*e);
        }
        return true;
    }

    // A retry's round over every candidate, on the scheduler's thread; the consumer hears of the
    // outcome through notify (a stream's events, or the last error).
    void retry_now() {
        {
            std::lock_guard lock(mu_);
            if (cancelled_) {
                return;
            }
        }
        if (auto err = start(0, "retry"); err && !schedule_retry(*err)) {
            auto            last = after_retries(*err);
            std::lock_guard lock(mu_);
            final_err_ = std::move(last);
        }
        notify_();
    }

    // The error a request that failed after retries ends with: the first round's (the one that
    // says what went wrong; later rounds may only meet the circuit it opened), with what the
    // retries added. `last` itself when there were none.
    error after_retries(const error &last) const {
        std::lock_guard lock(mu_);
        if (!first_err_) {
            return last;
        }
        error      out = *first_err_;
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - first_fail_);
        out.message += " (tried " + std::to_string(retries_) + " more time" + (retries_ == 1 ? "" : "s") + " over " +
                       std::to_string(ms.count()) + " ms; last: " + last.message + ")";
        return out;
    }

    // The finishing event of a continuation, as the client's one answer: the backend counted the
    // streamed text as prompt, but it was generated; and a whole message (with tools) holds only
    // what the continuation generated, after the text already sent.
    void finish_resumed(backend_event &ev) const {
        ev.n_generated += sent_events_at_resume_;
        ev.n_prompt = std::max(0, ev.n_prompt - sent_events_at_resume_);
        ev.n_cached = std::min(ev.n_cached, ev.n_prompt);
        if (ev.message) {
            ev.message->content.insert(0, sent_text_at_resume_);
        }
    }

    // A request past its deadline is not moved: the job ends it (504) anyway.
    bool past_deadline() const {
        const auto d = detail_->deadline;
        return d != std::chrono::steady_clock::time_point{} && std::chrono::steady_clock::now() >= d;
    }

    // Mid-stream failover: the same request continues on another candidate from the text
    // already sent (continuation_of), for the tokens that remain. Candidates are tried in order
    // after the one that failed, wrapping around to those before it; never the one that failed.
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
        const api_request cont = continuation_of(detail_->original, sent_text_, sent_events_);
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
            sent_text_at_resume_   = sent_text_;
            return true;
        }
        return false;
    }

    std::vector<route_candidate>           candidates_;
    std::shared_ptr<const failover_detail> detail_;
    std::function<void()>                  notify_;
    retry_policy                           retry_;
    mutable std::mutex                     mu_;
    int32_t                                retries_ = 0; // under mu_, as the two below
    std::chrono::milliseconds              backoff_;
    std::optional<error>                   final_err_;
    std::optional<error>                   first_err_; // what made the first retry
    std::chrono::steady_clock::time_point  first_fail_;
    size_t                                 current_ = 0;
    std::shared_ptr<generation_stream>     inner_;
    route_info                             route_;
    bool                                   cancelled_ = false;
    bool                                   delivered_ = false; // consumer's executor only (and below)
    // What reached the client, and what had reached it when the last continuation started;
    // consumer's executor only (take() and what it calls).
    std::string sent_text_;
    int32_t     sent_events_ = 0;
    bool        sent_calls_  = false; // a tool call's delta was sent: no continuation
    std::string sent_text_at_resume_;
    int32_t     sent_events_at_resume_ = 0;
    bool        resumed_               = false;
};

} // namespace

failover_backend::failover_backend(std::vector<route_candidate> candidates, std::string reason, retry_policy retry)
    : candidates_(std::move(candidates)), reason_(std::move(reason)), retry_(std::move(retry)) {}

bool failover_backend::retryable(const error &err) {
    switch (err.kind) {
    case error_kind::unavailable: // a 503, a backend cooling down or with its circuit open
    case error_kind::upstream:    // a connection refused or reset, a 5xx
    case error_kind::internal:    // this box's engine failed
        return true;
    default: // a 429 is the client's to pace; a timeout already spent its time
        return false;
    }
}

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
    detail->resumable = candidates_.size() > 1 && resumable_request(req);
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
    auto stream = std::make_shared<failover_stream>(candidates_, detail, std::move(notify), retry_);
    if (auto err = stream->start(first_, first_ == 0 ? reason_ : "overflow")) {
        if (!stream->schedule_retry(*err)) {
            return *err;
        }
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

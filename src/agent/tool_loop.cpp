#include "agent/tool_loop.h"

#include "common/utf8.h"

#include <algorithm>
#include <map>
#include <mutex>

namespace inferbox {

namespace {

// Whether tool_choice `c` ("sql", "extract=NAME", "mcp:LABEL", "mcp:LABEL:NAME") names this
// built-in function: its kind, its kind and function name, or its family (kind and server).
bool forced_by(const builtin_tool &t, const std::string &function_name, const std::string &c) {
    if (c == t.kind() || c == t.kind() + "=" + function_name) {
        return true;
    }
    const std::string family = t.kind() + ":" + t.server();
    return c == family || c == family + ":" + function_name;
}

// The request as a step offers it: the client's functions and the built-in ones, under the
// first step's tool_choice or "auto".
api_request step_request(api_request req, const std::vector<chat_tool> &all_tools,
                         const std::vector<tool_loop_backend::builtin_function> &builtins, bool first) {
    req.tools  = all_tools;
    req.choice = tool_choice::automatic;
    if (!first) {
        return req;
    }
    const std::string &c = req.builtin_choice;
    if (c == "none") {
        req.choice = tool_choice::none;
    } else if (c == "required") {
        req.choice = tool_choice::required;
    } else if (c != "auto") {
        // A named family or function: only what it names is offered, and a call is required.
        const bool             client = c.rfind("function:", 0) == 0;
        std::vector<chat_tool> only;
        for (const auto &t : all_tools) {
            const auto b =
                std::find_if(builtins.begin(), builtins.end(), [&](const auto &f) { return f.name == t.name; });
            const bool take = client ? b == builtins.end() && "function:" + t.name == c
                                     : b != builtins.end() && forced_by(*b->tool, b->name, c);
            if (take) {
                only.push_back(t);
            }
        }
        req.tools  = std::move(only);
        req.choice = tool_choice::required;
        if (!client) {
            req.parallel_tool_calls = false; // one call, then its result, then the next step decides
        }
    }
    return req;
}

class tool_loop_stream final : public generation_stream, public std::enable_shared_from_this<tool_loop_stream> {
  public:
    tool_loop_stream(std::shared_ptr<generation_backend> inner, std::vector<tool_loop_backend::builtin_function> fns,
                     std::vector<chat_tool> all_tools, task_poster post, tool_loop_limits limits,
                     std::function<void()> notify, const backend_request &first)
        : inner_(std::move(inner)), functions_(std::move(fns)), all_tools_(std::move(all_tools)),
          post_(std::move(post)), limits_(std::move(limits)), notify_(std::move(notify)), base_(first.req),
          max_tokens_(first.req.max_tokens), max_tool_calls_(first.req.max_tool_calls),
          max_corrections_(first.req.max_tool_corrections), started_(std::chrono::steady_clock::now()) {}

    std::optional<error> start(std::shared_ptr<const backend_request> first) {
        auto s = inner_->submit(std::move(first), notify_);
        if (!s) {
            return s.err();
        }
        {
            std::lock_guard lock(mu_);
            step_ = std::move(*s);
        }
        // Events that arrived before step_ was set found nothing to read them from: say so again.
        notify_();
        return std::nullopt;
    }

    std::vector<backend_event> take() override {
        std::lock_guard            lock(mu_);
        std::vector<backend_event> out = std::move(pending_);
        pending_.clear();
        if (done_ || between_steps_ || !step_) {
            return out;
        }
        for (auto &ev : step_->take()) {
            if (!done_ && !between_steps_) {
                process(std::move(ev), out);
            }
        }
        return out;
    }

    void cancel() override {
        std::shared_ptr<generation_stream> s;
        {
            std::lock_guard lock(mu_);
            cancelled_ = true;
            s          = step_;
        }
        if (s) {
            s->cancel();
        }
        signal_->cancel(); // the calls running now (team members' generations)
    }

    route_info route() const override {
        std::lock_guard lock(mu_);
        return step_ ? step_->route() : route_info{};
    }
    bool open_at_first_event() const override {
        std::lock_guard lock(mu_);
        return steps_ == 1 && step_ && step_->open_at_first_event();
    }

  private:
    const tool_loop_backend::builtin_function *builtin(const std::string &name) const {
        for (const auto &f : functions_) {
            if (f.name == name) {
                return &f;
            }
        }
        return nullptr;
    }

    // One event of the current step (under mu_).
    void process(backend_event ev, std::vector<backend_event> &out) {
        if (ev.err) {
            done_ = true;
            out.push_back(std::move(ev));
            return;
        }
        backend_event fwd;
        fwd.content  = ev.content;
        fwd.logprobs = std::move(ev.logprobs);
        for (auto &d : ev.calls) {
            if (d.first) {
                hidden_[d.call] = builtin(d.name) != nullptr;
                if (!hidden_[d.call]) {
                    shown_[d.call] = next_shown_++;
                }
            }
            if (hidden_[d.call]) {
                continue; // a built-in call: the server runs it, the client sees its item instead
            }
            d.call = shown_[d.call];
            fwd.calls.push_back(std::move(d));
        }
        content_ += ev.content;
        step_content_ += ev.content;
        if (ev.finish == finish_reason::none) {
            if (!fwd.content.empty() || !fwd.calls.empty() || !fwd.logprobs.empty()) {
                out.push_back(std::move(fwd));
            }
            return;
        }
        n_prompt_ += ev.n_prompt;
        n_cached_ += ev.n_cached;
        n_generated_ += ev.n_generated;
        chat_output                 msg = ev.message ? std::move(*ev.message) : chat_output{step_content_, {}};
        std::vector<chat_tool_call> builtin_calls, client_calls;
        for (auto &tc : msg.tool_calls) {
            (builtin(tc.name) != nullptr ? builtin_calls : client_calls).push_back(std::move(tc));
        }
        // The message's final reading is authoritative for this step's content.
        content_ = content_.substr(0, content_.size() - step_content_.size()) + msg.content;

        std::string budget;
        if (!builtin_calls.empty() && client_calls.empty() && ev.finish != finish_reason::length) {
            const auto elapsed = std::chrono::steady_clock::now() - started_;
            if (tool_calls_ + static_cast<int32_t>(builtin_calls.size()) > max_tool_calls_) {
                budget = "max_tool_calls";
            } else if (steps_ >= limits_.max_steps.value_or(max_tool_calls_ + 1)) {
                budget = "max_steps";
            } else if (elapsed >= limits_.max_time) {
                budget = "max_time";
            } else if (max_tokens_ && n_generated_ >= *max_tokens_) {
                budget = "max_output_tokens";
            } else {
                if (!fwd.content.empty() || !fwd.calls.empty() || !fwd.logprobs.empty()) {
                    out.push_back(std::move(fwd));
                }
                between_steps_ = true;
                post_([self = shared_from_this(), calls = std::move(builtin_calls), content = msg.content,
                       finished = std::chrono::steady_clock::now()]() mutable {
                    self->run_calls(std::move(calls), std::move(content), finished);
                });
                return;
            }
        }
        fwd.finish            = budget.empty() ? ev.finish : finish_reason::length;
        fwd.incomplete_reason = budget;
        fwd.message           = chat_output{content_, std::move(client_calls)};
        fwd.n_prompt          = n_prompt_;
        fwd.n_cached          = n_cached_;
        fwd.n_generated       = n_generated_;
        done_                 = true;
        out.push_back(std::move(fwd));
    }

    server_tool_call run_call(const chat_tool_call &tc) {
        const auto      *f = builtin(tc.name);
        server_tool_call c;
        const auto       prefix = f->tool->kind() + "_";
        c.id                    = tc.id.rfind(prefix, 0) == 0 ? tc.id : prefix + tc.id;
        c.type                  = f->tool->item_type();
        c.name                  = tc.name;
        c.server                = f->tool->server();
        c.arguments             = tc.arguments;
        try {
            if (const auto *sup = dynamic_cast<const supervised_tool *>(f->tool.get())) {
                tool_call_context ctx{c.id, signal_, [weak = weak_from_this()](server_tool_call ev) {
                                          if (auto self = weak.lock()) {
                                              self->emit(std::move(ev));
                                          }
                                      }};
                auto              outcome = sup->run_supervised(tc.arguments, ctx);
                c.output                  = std::move(outcome.result.output);
                c.error                   = std::move(outcome.result.error);
                if (!outcome.item_server.empty()) {
                    c.server = std::move(outcome.item_server);
                }
            } else {
                auto outcome = f->tool->run(tc.arguments);
                c.output     = std::move(outcome.output);
                c.error      = std::move(outcome.error);
            }
        } catch (const std::exception &e) {
            c.error = std::string("the tool failed: ") + e.what();
        }
        return c;
    }

    // An event a call sends while it runs (supervised_tool), to the client at once.
    void emit(server_tool_call ev) {
        {
            std::lock_guard lock(mu_);
            if (done_) {
                return;
            }
            backend_event items;
            items.server_calls.push_back(std::move(ev));
            pending_.push_back(std::move(items));
        }
        notify_();
    }

    // One step's built-in calls as they run: up to limits_.max_parallel at once, each worker
    // taking the next call until none is left; the last worker to finish goes on to the next step.
    struct fan_out {
        std::vector<chat_tool_call>           calls;
        std::vector<server_tool_call>         ran;
        std::string                           content;
        std::chrono::steady_clock::time_point finished;
        std::mutex                            mu;
        size_t                                next = 0, workers = 0;
        std::chrono::steady_clock::duration   in_tools{};
    };

    // On a worker: starts the step's calls (runs them here when only one may run at a time).
    void run_calls(std::vector<chat_tool_call> calls, std::string content,
                   std::chrono::steady_clock::time_point finished) {
        auto fan       = std::make_shared<fan_out>();
        fan->ran       = std::vector<server_tool_call>(calls.size());
        fan->calls     = std::move(calls);
        fan->content   = std::move(content);
        fan->finished  = finished;
        const size_t n = std::max<size_t>(
            1, std::min<size_t>(fan->calls.size(), static_cast<size_t>(std::max(1, limits_.max_parallel))));
        fan->workers = n;
        if (n == 1 && !limits_.run_calls) {
            work(fan);
            return;
        }
        const task_poster &post = limits_.run_calls ? limits_.run_calls : post_;
        for (size_t i = 0; i < n; ++i) {
            post([self = shared_from_this(), fan] { self->work(fan); });
        }
    }

    void work(const std::shared_ptr<fan_out> &fan) {
        for (;;) {
            size_t i = 0;
            {
                std::lock_guard lock(fan->mu);
                i = fan->next++;
            }
            if (i >= fan->calls.size()) {
                break;
            }
            if (is_cancelled()) {
                continue; // nothing more starts; the last worker still ends the fan-out
            }
            const auto t0   = std::chrono::steady_clock::now();
            auto       call = run_call(fan->calls[i]);
            const auto took = std::chrono::steady_clock::now() - t0;
            if (limits_.on_call) {
                limits_.on_call(call, std::chrono::duration<double>(took).count());
            }
            {
                std::lock_guard lock(fan->mu);
                fan->in_tools += took;
                fan->ran[i] = call;
            }
            emit(std::move(call)); // its item, as soon as it is done
        }
        {
            std::lock_guard lock(fan->mu);
            if (--fan->workers > 0) {
                return;
            }
        }
        if (is_cancelled()) {
            return;
        }
        // Calls that ran at once overlap: the loop's own time excludes the wall time they took.
        next_step(std::move(fan->calls), std::move(fan->ran), std::move(fan->content), fan->finished,
                  std::min(fan->in_tools, std::chrono::steady_clock::now() - fan->finished));
    }

    // On a worker, once the step's calls ran: prepares and submits the next step. `finished`: when
    // the step's last event was read (the loop's own time per step is measured from there, less
    // `in_tools`).
    void next_step(std::vector<chat_tool_call> calls, std::vector<server_tool_call> ran, std::string content,
                   std::chrono::steady_clock::time_point finished, std::chrono::steady_clock::duration in_tools) {
        if (corrections_spent(ran)) {
            {
                std::lock_guard lock(mu_);
                between_steps_ = false;
                pending_.push_back(last_event("max_tool_corrections"));
                done_ = true;
            }
            notify_();
            return;
        }
        api_request req = base_;
        req.messages.push_back({"assistant", std::move(content), calls, ""});
        for (size_t i = 0; i < ran.size(); ++i) {
            req.messages.push_back(
                {"tool", ran[i].error.empty() ? ran[i].output : "error: " + ran[i].error, {}, calls[i].id});
        }
        if (max_tokens_) {
            std::lock_guard lock(mu_);
            req.max_tokens = *max_tokens_ - n_generated_;
        }
        base_ = req; // the conversation so far, for the step after this one
        {
            std::lock_guard lock(mu_);
            tool_calls_ += static_cast<int32_t>(ran.size());
        }

        std::optional<error> failed;
        try {
            auto prepared = inner_->prepare(step_request(std::move(req), all_tools_, functions_, false));
            if (!prepared) {
                failed = prepared.err();
            } else if (!is_cancelled()) {
                auto s = inner_->submit(std::make_shared<const backend_request>(std::move(*prepared)), notify_);
                if (!s) {
                    failed = s.err();
                } else {
                    {
                        std::lock_guard lock(mu_);
                        step_ = std::move(*s);
                        if (cancelled_) {
                            step_->cancel();
                        }
                    }
                    if (limits_.on_step) {
                        const auto own = std::chrono::steady_clock::now() - finished - in_tools;
                        limits_.on_step(std::chrono::duration<double>(own).count());
                    }
                }
            }
        } catch (const std::exception &e) {
            failed = error{error_kind::internal, std::string("preparing the next step failed: ") + e.what(), "",
                           "internal_error"};
        }
        {
            std::lock_guard lock(mu_);
            ++steps_;
            between_steps_ = false;
            hidden_.clear();
            shown_.clear();
            step_content_.clear();
            if (failed && failed->code == "context_length_exceeded") {
                // The conversation (its tool results above all) outgrew the context: the run ends
                // with what it has, as incomplete, rather than losing it to an error.
                pending_.push_back(last_event("max_context"));
                done_ = true;
            } else if (failed) {
                backend_event err;
                err.err = std::move(failed);
                pending_.push_back(std::move(err));
                done_ = true;
            }
        }
        notify_();
    }

    // The run's last event when budget `reason` ends it between steps (under mu_): what it has.
    backend_event last_event(const char *reason) const {
        backend_event fin;
        fin.finish            = finish_reason::length;
        fin.incomplete_reason = reason;
        fin.message           = chat_output{content_, {}};
        fin.n_prompt          = n_prompt_;
        fin.n_cached          = n_cached_;
        fin.n_generated       = n_generated_;
        return fin;
    }

    // Counts a step's calls, in order, into the failed calls in a row (a success starts again from
    // zero); true when more than max_corrections_ have failed in a row. A team member's failure is
    // the captain's to weigh (its own budgets bound it), not a call to correct: not counted.
    bool corrections_spent(const std::vector<server_tool_call> &ran) {
        std::lock_guard lock(mu_);
        for (const auto &c : ran) {
            const auto *f = builtin(c.name);
            if (f == nullptr || dynamic_cast<const supervised_tool *>(f->tool.get()) != nullptr) {
                continue;
            }
            failed_in_a_row_ = c.error.empty() ? 0 : failed_in_a_row_ + 1;
        }
        return failed_in_a_row_ > max_corrections_;
    }

    bool is_cancelled() const {
        std::lock_guard lock(mu_);
        return cancelled_;
    }

    std::shared_ptr<generation_backend>              inner_;
    std::vector<tool_loop_backend::builtin_function> functions_;
    std::vector<chat_tool>                           all_tools_;
    task_poster                                      post_;
    tool_loop_limits                                 limits_;
    std::function<void()>                            notify_;
    api_request                  base_; // the conversation so far: read and extended by one step's worker at a time
    const std::optional<int32_t> max_tokens_; // across all steps
    const int32_t                max_tool_calls_;
    const int32_t                max_corrections_; // failed calls in a row the model may correct
    const std::chrono::steady_clock::time_point started_;

    mutable std::mutex                   mu_;
    std::shared_ptr<generation_stream>   step_;
    std::vector<backend_event>           pending_;
    bool                                 between_steps_ = false, done_ = false, cancelled_ = false;
    int32_t                              steps_ = 1, tool_calls_ = 0, failed_in_a_row_ = 0;
    int32_t                              n_prompt_ = 0, n_cached_ = 0, n_generated_ = 0;
    std::string                          content_, step_content_;
    std::map<size_t, bool>               hidden_;
    std::map<size_t, size_t>             shown_;
    size_t                               next_shown_ = 0;
    const std::shared_ptr<cancel_signal> signal_     = std::make_shared<cancel_signal>();
};

// The request's tools as every step offers them: the client's functions, then the built-in ones.
std::vector<chat_tool> all_tools_of(const api_request                                      &req,
                                    const std::vector<tool_loop_backend::builtin_function> &fns) {
    std::vector<chat_tool> tools = req.tools;
    for (const auto &f : fns) {
        auto fn = f.tool->function();
        tools.push_back({f.name, std::move(fn.description), std::move(fn.parameters)});
    }
    return tools;
}

} // namespace

void cancel_signal::cancel() {
    std::vector<std::pair<size_t, std::function<void()>>> hooks;
    {
        std::lock_guard lock(mu_);
        if (cancelled_) {
            return;
        }
        cancelled_ = true;
        hooks      = std::move(hooks_);
        hooks_.clear();
    }
    for (auto &[id, hook] : hooks) {
        hook();
    }
}

bool cancel_signal::cancelled() const {
    std::lock_guard lock(mu_);
    return cancelled_;
}

size_t cancel_signal::subscribe(std::function<void()> hook) {
    std::unique_lock lock(mu_);
    const size_t     id = next_++;
    if (cancelled_) {
        lock.unlock();
        hook();
        return id;
    }
    hooks_.emplace_back(id, std::move(hook));
    return id;
}

void cancel_signal::unsubscribe(size_t id) {
    std::lock_guard lock(mu_);
    hooks_.erase(std::remove_if(hooks_.begin(), hooks_.end(), [id](const auto &h) { return h.first == id; }),
                 hooks_.end());
}

tool_loop_backend::tool_loop_backend(std::shared_ptr<generation_backend> inner, builtin_toolbox tools, task_poster post,
                                     tool_loop_limits limits)
    : inner_(std::move(inner)), post_(std::move(post)), limits_(std::move(limits)) {
    for (auto &t : tools.tools) {
        auto name = t->function().name;
        functions_.push_back({std::move(name), std::move(t)});
    }
}

result<backend_request> tool_loop_backend::prepare(api_request req) const {
    for (const auto &f : functions_) {
        if (std::any_of(req.tools.begin(), req.tools.end(), [&](const chat_tool &t) { return t.name == f.name; })) {
            return error::invalid("a function tool is named '" + f.name + "', the name of a built-in tool", "tools");
        }
    }
    if (req.builtin_choice.rfind("function:", 0) == 0 &&
        std::none_of(req.tools.begin(), req.tools.end(),
                     [&](const chat_tool &t) { return "function:" + t.name == req.builtin_choice; })) {
        return error::invalid("tool_choice names a function that is not among the tools", "tool_choice");
    }
    const std::string &c = req.builtin_choice;
    if (c != "auto" && c != "none" && c != "required" && c.rfind("function:", 0) != 0 &&
        std::none_of(functions_.begin(), functions_.end(),
                     [&](const builtin_function &f) { return forced_by(*f.tool, f.name, c); })) {
        // A forced built-in that no tool of the request matches would leave the step nothing to call.
        std::string shown = c;
        std::replace(shown.begin(), shown.end(), '=', ' ');
        return error::invalid("tool_choice forces '" + utf8_sanitize(shown.substr(0, 100)) +
                                  "', which matches none of this request's built-in tools",
                              "tool_choice");
    }
    auto tools = all_tools_of(req, functions_);
    {
        std::lock_guard lock(mu_);
        all_tools_ = tools; // every step after the first offers them all
    }
    return inner_->prepare(step_request(std::move(req), tools, functions_, true));
}

result<std::shared_ptr<generation_stream>> tool_loop_backend::submit(std::shared_ptr<const backend_request> req,
                                                                     std::function<void()>                  notify) {
    std::vector<chat_tool> tools;
    {
        std::lock_guard lock(mu_);
        tools = all_tools_;
    }
    auto stream = std::make_shared<tool_loop_stream>(inner_, functions_, std::move(tools), post_, limits_,
                                                     std::move(notify), *req);
    if (auto err = stream->start(std::move(req))) {
        return *err;
    }
    return std::shared_ptr<generation_stream>(stream);
}

} // namespace inferbox

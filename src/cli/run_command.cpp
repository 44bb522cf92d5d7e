#include "cli/run_command.h"

#include "cli/output.h"
#include "cli/profile_commands.h"
#include "common/micro_batch.h"
#include "engine/engine.h"
#include "engine/llama_decoder.h"
#include "fetch/pull.h"
#include "model/model.h"
#include "store/gguf.h"
#include "store/hardware.h"
#include "store/profiles.h"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "llama.h"

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace inferbox {

namespace {

struct run_options {
    std::string              model;
    std::vector<std::string> prompt;
    std::string              system;
    int32_t                  max_tokens  = 512;
    float                    temperature = 0.7f;
    int64_t                  seed        = -1;
    int32_t                  ctx_size    = 4096;
    int32_t                  threads     = 0;
};

// Set by SIGINT; the generation loop turns it into a cancellation, the prompt into a new line.
std::atomic<bool> interrupted{false};

extern "C" void on_sigint(int /*signal*/) {
    interrupted.store(true);
}

// Installs on_sigint without SA_RESTART, so a blocked read of the next line returns (EINTR)
// instead of waiting for Enter; restores the previous handler on destruction.
class sigint_guard {
  public:
    sigint_guard() {
        struct sigaction sa {};
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;
        sigaction(SIGINT, &sa, &old_);
    }
    ~sigint_guard() { sigaction(SIGINT, &old_, nullptr); }
    sigint_guard(const sigint_guard &)            = delete;
    sigint_guard &operator=(const sigint_guard &) = delete;

  private:
    struct sigaction old_ {};
};

// Wakes the terminal thread when the engine pushes events. Shared with the channel's notify
// callback, which may still run after a cancelled reply has returned.
struct waiter {
    std::mutex              mu;
    std::condition_variable cv;
    bool                    ready = false;
};

struct reply {
    std::string          text;
    finish_reason        finish    = finish_reason::none;
    bool                 cancelled = false;
    std::optional<error> err;
};

// Generates from `prompt`, writing text to stdout as it comes. Ctrl-C cancels.
reply generate(engine &eng, const std::vector<token_id> &prompt, const run_options &o) {
    reply              out;
    auto               chan = std::make_shared<request_channel>();
    auto               w    = std::make_shared<waiter>();
    generation_request req;
    chan->set_notify([w] {
        {
            std::lock_guard lock(w->mu);
            w->ready = true;
        }
        w->cv.notify_one();
    });
    req.prompt               = prompt;
    req.max_tokens           = std::max(1, std::min(o.max_tokens, eng.n_ctx_slot() - int32_t(prompt.size())));
    req.sampling.temperature = o.temperature;
    if (o.seed >= 0) {
        req.sampling.seed = static_cast<uint32_t>(o.seed);
    }
    if (auto err = eng.submit(std::move(req), chan)) {
        out.err = *err;
        return out;
    }
    for (;;) {
        {
            std::unique_lock lock(w->mu);
            w->cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return w->ready; });
            w->ready = false;
        }
        if (interrupted.exchange(false) && !out.cancelled) {
            out.cancelled = true;
            eng.cancel(chan);
            return out; // the engine delivers nothing more after cancel
        }
        for (generation_event &ev : chan->take()) {
            if (ev.err) {
                out.err = ev.err;
                return out;
            }
            std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
            std::fflush(stdout);
            out.text += ev.text;
            if (ev.finish != finish_reason::none) {
                out.finish = ev.finish;
                return out;
            }
        }
    }
}

// The prompt for a conversation: the model's chat template, dropping the oldest turns (never
// the system message) until prompt and reply fit the context.
result<std::vector<token_id>> chat_prompt(const model &m, std::vector<chat_message> &messages, int32_t n_ctx,
                                          int32_t reserve) {
    for (;;) {
        auto text = m.apply_chat_template(messages);
        if (!text) {
            return text.err();
        }
        auto tokens = m.tokenize(*text, true);
        if (int32_t(tokens.size()) + reserve <= n_ctx) {
            return tokens;
        }
        const size_t first = (!messages.empty() && messages.front().role == "system") ? 1 : 0;
        if (messages.size() - first <= 1) {
            return error::invalid("the message is " + std::to_string(tokens.size()) +
                                  " tokens; with room for the reply it does not fit the context of " +
                                  std::to_string(n_ctx) + " tokens (--ctx-size)");
        }
        messages.erase(messages.begin() + static_cast<std::ptrdiff_t>(first));
        std::fprintf(stderr, "(the oldest turn was dropped to fit the context)\n");
    }
}

// The KV type and flash attention `serve` settles on the CPU ("auto"), for this one-sequence
// engine: the first of attention_candidates() that fits the machine's memory budget, written
// into `ec`. When the file's metadata cannot be read or nothing fits, `ec` keeps llama.cpp's
// defaults and engine::start reports what fails.
void settle_attention(const std::string &path, engine_config &ec) {
    auto info = read_gguf_file(path, path);
    if (!info) {
        return;
    }
    const hardware_info hw = detect_hardware();
    profile_settings    s;
    s.n_threads           = ec.n_threads > 0 ? ec.n_threads : 1;
    s.parallel            = ec.parallel;
    s.n_ctx_slot          = ec.n_ctx_slot; // 0: the trained context, as the engine takes it
    s.n_batch             = ec.step_tokens;
    s.n_ubatch            = micro_batch_for(true, ec.step_tokens);
    const model_shape   m = model_shape_of(*info, hw.isa);
    const model_profile p =
        evaluate_attention_options(m, hw, cpu_memory_budget(hw), "run", profile_flavour::latency, s,
                                   attention_candidates(std::nullopt, std::nullopt, cpu_attention_site(m)));
    if (p.status != profile_status::runnable) {
        return;
    }
    ec.kv_type     = p.settings.kv_type;
    ec.flash_attn  = p.settings.flash_attn ? flash_attention::automatic : flash_attention::off;
    ec.micro_batch = s.n_ubatch;
}

// One terminal conversation with a started engine. `messages` is the chat so far (chat models).
struct chat_session {
    engine                   &eng;
    const model              &mdl;
    const run_options        &o;
    int32_t                   n_ctx;
    bool                      chat;    // the model has a chat template; else the prompt is raw text
    int32_t                   reserve; // tokens of the context kept for the reply
    std::vector<chat_message> messages;
};

// One turn: generates the reply to `user`. Returns false when the prompt cannot run at all.
bool run_turn(chat_session &s, const std::string &user) {
    std::vector<token_id> prompt;
    if (s.chat) {
        s.messages.push_back({"user", user});
        auto p = chat_prompt(s.mdl, s.messages, s.n_ctx, s.reserve);
        if (!p) {
            s.messages.pop_back();
            std::fprintf(stderr, "inferbox run: %s\n", p.err().message.c_str());
            return false;
        }
        prompt = std::move(*p);
    } else {
        prompt = s.mdl.tokenize(user, true);
        if (int32_t(prompt.size()) + 1 > s.n_ctx) {
            std::fprintf(stderr, "inferbox run: the prompt is %zu tokens; the context holds %d (--ctx-size)\n",
                         prompt.size(), s.n_ctx);
            return false;
        }
    }
    reply r = generate(s.eng, prompt, s.o);
    if (r.err) {
        std::fprintf(stderr, "\ninferbox run: %s\n", r.err->message.c_str());
        if (s.chat) {
            s.messages.pop_back();
        }
        return false;
    }
    std::fputs("\n", stdout);
    if (r.cancelled) {
        std::fprintf(stderr, "(stopped)\n");
    }
    if (s.chat) {
        s.messages.push_back({"assistant", r.text});
    }
    return true;
}

// The prompt words given after the model, else all of stdin without its trailing line ends.
std::string one_shot_prompt(const run_options &o) {
    std::string text;
    for (const std::string &w : o.prompt) {
        text += (text.empty() ? "" : " ") + w;
    }
    if (text.empty()) {
        text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) {
            text.pop_back();
        }
    }
    return text;
}

// The interactive loop: one turn per line until Ctrl-D, /bye or /exit.
int converse(chat_session &s, const std::string &name) {
    std::fprintf(stderr, "%s: %s. Ctrl-C stops a reply, Ctrl-D or /bye quits, /clear starts over.\n", name.c_str(),
                 s.chat ? "chat" : "this model has no chat template, so it continues your text");
    for (;;) {
        std::fputs(">>> ", stdout);
        std::fflush(stdout);
        std::string line;
        interrupted.store(false);
        if (!std::getline(std::cin, line)) {
            if (interrupted.exchange(false)) { // Ctrl-C at the prompt: a fresh line
                std::cin.clear();
                std::fputs("\n", stdout);
                continue;
            }
            std::fputs("\n", stdout);
            return 0; // Ctrl-D
        }
        if (line == "/bye" || line == "/exit") {
            return 0;
        }
        if (line == "/clear") {
            auto &m = s.messages;
            m.erase(m.begin() + ((!m.empty() && m.front().role == "system") ? 1 : 0), m.end());
            std::fprintf(stderr, "(conversation cleared)\n");
            continue;
        }
        if (line.empty()) {
            continue;
        }
        run_turn(s, line);
    }
}

int run(const run_options &o) {
    pull_options po;
    report_pull_on_stderr(po, "run");
    auto found = resolve_model(o.model, po);
    if (!found) {
        return cli_fail("run", found.err().message);
    }
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    model_options mo;
    mo.path = found->file.string();
    auto m  = model::load(mo);
    if (!m) {
        return cli_fail("run", m.err().message);
    }
    engine_config ec;
    ec.parallel   = 1;
    ec.n_threads  = o.threads;
    ec.n_ctx_slot = o.ctx_size;
    settle_attention(mo.path, ec);
    auto eng = start_engine(*m, ec);
    if (!eng) {
        return cli_fail("run", eng.err().message);
    }
    const model  &mdl   = **m;
    const int32_t n_ctx = (*eng)->n_ctx_slot();
    chat_session  s{**eng, mdl, o, n_ctx, mdl.has_chat_template(), std::min(o.max_tokens, n_ctx / 2), {}};
    sigint_guard  sig;
    if (!o.system.empty()) {
        s.messages.push_back({"system", o.system});
    }

    const bool tty_in = ::isatty(STDIN_FILENO) == 1;
    if (!o.prompt.empty() || !tty_in) {
        const std::string text = one_shot_prompt(o);
        if (text.empty()) {
            return cli_fail("run", "no prompt: give one after the model, or on stdin");
        }
        return run_turn(s, text) ? 0 : 1;
    }
    return converse(s, found->name);
}

} // namespace

void add_run_command(CLI::App &app, std::function<int()> &action) {
    auto o   = std::make_shared<run_options>();
    auto cmd = app.add_subcommand("run", "chat with a model in the terminal, or answer one prompt and exit");
    cmd->add_option("model", o->model, "a cached name, a GGUF file, or hf://ORG/REPO/FILE.gguf (pulled first)")
        ->required();
    cmd->add_option("prompt", o->prompt, "answer this once and exit (default: interactive, or stdin when piped)");
    cmd->add_option("--system", o->system, "a system message for the conversation");
    cmd->add_option("--max-tokens", o->max_tokens, "longest reply")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--temperature", o->temperature, "sampling temperature (0 = greedy)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 2.0));
    cmd->add_option("--seed", o->seed, "sampling seed (default: random)");
    cmd->add_option("-c,--ctx-size", o->ctx_size, "context in tokens (0 = the model's trained context)")
        ->capture_default_str()
        ->check(CLI::Range(0, 1 << 20));
    cmd->add_option("-t,--threads", o->threads, "compute threads (0 = all cores)")
        ->capture_default_str()
        ->check(CLI::Range(0, 1024));
    cmd->callback([&action, o] { action = [o] { return run(*o); }; });
}

} // namespace inferbox

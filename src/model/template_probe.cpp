#include "model/template_probe.h"

#include "chat.h"
#include "common.h"
#include "llama.h"

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <new>
#include <sstream>
#include <thread>
#include <vector>

#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace inferbox {

namespace {

constexpr int exit_too_much  = 3;
constexpr int exit_no_memory = 4;
constexpr int exit_no_vocab  = 5;

#if !defined(__SANITIZE_ADDRESS__)
// The child's address space now (VmSize), so the limit is relative to what it starts with.
size_t address_space_now() {
    std::ifstream in("/proc/self/statm");
    size_t        pages = 0;
    in >> pages;
    return pages * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}
#endif

std::string self_exe() {
    std::vector<char> buf(4096);
    const ssize_t     n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    return n > 0 ? std::string(buf.data(), static_cast<size_t>(n)) : std::string();
}

void quiet_log(ggml_log_level /*level*/, const char * /*text*/, void * /*user*/) {}

} // namespace

int run_template_probe(int argc, char **argv) {
    if (argc < 5) {
        return 2;
    }
    llama_log_set(quiet_log, nullptr);
#if !defined(__SANITIZE_ADDRESS__)
    // The memory bound, relative to what the process starts with. (An ASan build reserves its
    // shadow memory lazily as well; it is left unbounded there.)
    if (const char *extra = std::getenv("INFERBOX_PROBE_AS_EXTRA")) {
        rlimit lim{};
        lim.rlim_cur = lim.rlim_max = address_space_now() + std::strtoull(extra, nullptr, 10);
        setrlimit(RLIMIT_AS, &lim);
    }
#endif
    const std::string model_path = argv[2];
    std::string       override_text;
    if (argv[3][0] != '\0') {
        std::ifstream     in(argv[3], std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        override_text = ss.str();
    }
    const size_t max_output = std::strtoull(argv[4], nullptr, 10);
    try {
        llama_backend_init();
        auto params       = llama_model_default_params();
        params.vocab_only = true;
        llama_model *m    = llama_model_load_from_file(model_path.c_str(), params);
        if (m == nullptr) {
            return exit_no_vocab;
        }
        struct model_guard {
            llama_model *m;
            ~model_guard() { llama_model_free(m); }
        } guard{m};
        auto                         tmpls = common_chat_templates_init(m, override_text);
        common_chat_templates_inputs in;
        in.use_jinja             = true;
        in.add_generation_prompt = true;
        for (const auto &[role, content] : std::vector<std::pair<std::string, std::string>>{
                 {"system", "You are helpful."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Weather?"}}) {
            common_chat_msg msg;
            msg.role    = role;
            msg.content = content;
            in.messages.push_back(std::move(msg));
        }
        in.tools.push_back({"get_weather", "Weather for a city",
                            R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})"});
        const auto out = common_chat_templates_apply(tmpls.get(), in);
        if (out.prompt.size() > max_output) {
            return exit_too_much;
        }
    } catch (const std::bad_alloc &) {
        return exit_no_memory;
    } catch (const std::exception &) {
        return 0; // a template error, not a hazard: the parent's own reading reports it
    }
    return 0;
}

std::optional<std::string> probe_chat_template(const std::string &model_path, const std::string &template_override,
                                               const template_probe_limits &limits) {
    const std::string exe = self_exe();
    if (exe.empty()) {
        spdlog::warn("chat template probe: cannot find this executable; the template is not checked");
        return std::nullopt;
    }
    std::string override_file;
    if (!template_override.empty()) {
        char      tmpl[] = "/tmp/inferbox-template-XXXXXX";
        const int fd     = mkstemp(tmpl);
        if (fd < 0) {
            spdlog::warn("chat template probe: cannot write a temporary file; the template is not checked");
            return std::nullopt;
        }
        const bool ok = write(fd, template_override.data(), template_override.size()) ==
                        static_cast<ssize_t>(template_override.size());
        close(fd);
        override_file = tmpl;
        if (!ok) {
            std::remove(tmpl);
            return std::nullopt;
        }
    }
    const std::string   max_out = std::to_string(limits.max_output_bytes);
    std::vector<char *> args    = {const_cast<char *>(exe.c_str()),        const_cast<char *>(template_probe_command),
                                   const_cast<char *>(model_path.c_str()), const_cast<char *>(override_file.c_str()),
                                   const_cast<char *>(max_out.c_str()),    nullptr};
    // The address-space limit is set by the child on itself at start (INFERBOX_PROBE_AS_EXTRA).
    std::vector<std::string> env_store;
    for (char **e = environ; e != nullptr && *e != nullptr; ++e) {
        env_store.emplace_back(*e);
    }
    env_store.push_back("INFERBOX_PROBE_AS_EXTRA=" + std::to_string(limits.extra_memory_bytes));
    std::vector<char *> envp;
    envp.reserve(env_store.size() + 1);
    for (auto &e : env_store) {
        envp.push_back(e.data());
    }
    envp.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t     pid = -1;
    const int rc  = posix_spawn(&pid, exe.c_str(), &actions, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    const auto cleanup = [&] {
        if (!override_file.empty()) {
            std::remove(override_file.c_str());
        }
    };
    if (rc != 0) {
        cleanup();
        spdlog::warn("chat template probe: cannot start a child ({}); the template is not checked", std::strerror(rc));
        return std::nullopt;
    }
    int        status   = 0;
    const auto deadline = std::chrono::steady_clock::now() + limits.time;
    for (;;) {
        const pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            cleanup();
            return "the chat template did not finish rendering a four-message conversation within " +
                   std::to_string(limits.time.count() / 1000) + " s (an endless or enormous loop?)";
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    cleanup();
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        return "the chat template crashed the renderer (signal " + std::to_string(sig) + ", " + strsignal(sig) +
               (sig == SIGSEGV ? ": endless recursion?" : "") + ") while rendering a four-message conversation";
    }
    switch (WEXITSTATUS(status)) {
    case 0:
        return std::nullopt;
    case exit_too_much:
        return "the chat template renders a four-message conversation into more than " +
               std::to_string(limits.max_output_bytes) + " bytes";
    case exit_no_memory:
        return "the chat template ran out of memory (" + std::to_string(limits.extra_memory_bytes >> 20) +
               " MiB) rendering a four-message conversation";
    default:
        spdlog::warn("chat template probe: the child exited {}; the template is not checked", WEXITSTATUS(status));
        return std::nullopt;
    }
}

} // namespace inferbox

#pragma once
// Chat templates come inside GGUF files from the internet: they are untrusted code, and
// llama.cpp's Jinja interpreter bounds neither recursion (a template that recurses without end
// overflows the stack: SIGSEGV, the whole server) nor loops (one that loops 10^10 times never lets
// the model become ready). So before this process reads a template, a child process does
// (`inferbox` re-executed with template_probe_command): it loads the model's vocabulary only,
// initializes the templates (llama.cpp renders test conversations to learn the template's
// capabilities) and renders a short conversation with a tool, under a time limit, an address-space
// limit and an output-size limit. A child that crashes, runs out of time or memory, or renders too
// much refuses the model with a message that says which.

#include <chrono>
#include <optional>
#include <string>

namespace inferbox {

inline constexpr const char *template_probe_command = "__probe-chat-template";

struct template_probe_limits {
    std::chrono::milliseconds time{10000};
    size_t                    extra_memory_bytes = size_t(2) << 30; // address space beyond the child's start
    size_t                    max_output_bytes   = 1u << 20;        // the short conversation, rendered
};

// Runs the probe in a child (this executable). nullopt: the template is safe to load here, or the
// probe could not run at all (logged; the model then loads as before). A message: why not.
std::optional<std::string> probe_chat_template(const std::string &model_path, const std::string &template_override,
                                               const template_probe_limits &limits = {});

// The child's side: argv = {exe, template_probe_command, model_path, override_file_or_empty,
// max_output_bytes}. Returns the process exit code (0 safe; 3 rendered too much; 4 out of memory;
// 5 could not load the vocabulary; a template error also exits 0: the parent reports it itself).
int run_template_probe(int argc, char **argv);

} // namespace inferbox

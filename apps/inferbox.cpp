#include "cli/commands.h"
#include "model/template_probe.h"

#include <cstdio>
#include <cstring>

#include <unistd.h>

int main(int argc, char **argv) {
    // The chat-template probe's child (model/template_probe.h): no CLI, no logging, and _exit so
    // that nothing registered at exit (a leak checker included) changes its exit code.
    if (argc > 1 && std::strcmp(argv[1], inferbox::template_probe_command) == 0) {
        const int code = inferbox::run_template_probe(argc, argv);
        std::fflush(nullptr);
        _exit(code);
    }
    return inferbox::run_cli(argc, argv);
}

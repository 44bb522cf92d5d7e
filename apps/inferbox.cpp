#include "cli/commands.h"

int main(int argc, char **argv) {
    return inferbox::run_cli(argc, argv);
}

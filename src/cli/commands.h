#pragma once
// The command line: `inferbox serve | bench | version`. main() only calls run_cli().

namespace inferbox {

int run_cli(int argc, char **argv);

} // namespace inferbox

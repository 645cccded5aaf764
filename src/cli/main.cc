// `sandbox` CLI entry point; everything lives in sbx_cli (cli.h).
#include <cstdio>
#include <cstdlib>

#include "cli/cli.h"

int main(int argc, char** argv) {
  int code = sandboxd::cli::Run(argc, argv);
  std::fflush(stdout);
  std::fflush(stderr);
  // _Exit: `exec` may leave a stdin reader thread blocked in read(2).
  std::_Exit(code);
}

// The `sandbox` command line: one file per verb (crun style), each a thin
// layer over sbx_client. Run() is what main() calls.
#pragma once

#include <map>
#include <string>
#include <utility>

#include <CLI/CLI.hpp>

#include "client/client.h"
#include "client/error.h"

namespace sandboxd::cli {

struct GlobalOptions {
  std::string endpoint;  // --endpoint
  std::string token;     // --token
};

// Shared by all verbs: the parsed global flags and the exit code the chosen
// verb produced.
struct Context {
  GlobalOptions global;
  int exit_code = 0;
};

// Each verb registers its subcommand; the callback stores the exit code in ctx.
void RegisterCreate(CLI::App& app, Context& ctx);
void RegisterExec(CLI::App& app, Context& ctx);
void RegisterList(CLI::App& app, Context& ctx);
void RegisterKill(CLI::App& app, Context& ctx);
void RegisterExtend(CLI::App& app, Context& ctx);
void RegisterCp(CLI::App& app, Context& ctx);
void RegisterSsh(CLI::App& app, Context& ctx);
void RegisterExpose(CLI::App& app, Context& ctx);
void RegisterNet(CLI::App& app, Context& ctx);

int Run(int argc, char** argv);

// --- helpers shared by the verbs (common.cc) ---
client::Result<client::Client> MakeClient(const GlobalOptions& global);
// Prints "sandbox: <what>: <error>" to stderr and returns the exit code (1).
int ReportError(const std::string& what, const client::Error& error);
// Parses "k=v" pairs; fails on an item without '='.
client::Result<std::vector<std::pair<std::string, std::string>>> ParsePairs(const std::vector<std::string>& items,
                                                                            const char* flag);

}  // namespace sandboxd::cli

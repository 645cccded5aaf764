#include "cli/cli.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "client/client.h"

namespace sandboxd::cli {

int Run(int argc, char** argv) {
  CLI::App app{"sandbox: create and drive sandboxes on a sandboxd server", "sandbox"};
  app.require_subcommand(1);
  Context ctx;
  const char* token = std::getenv("DENO_DEPLOY_TOKEN");
  ctx.global.endpoint = client::DefaultEndpoint();
  ctx.global.token = token ? token : "";
  app.add_option("--endpoint", ctx.global.endpoint,
                 "server URL (default: $DENO_SANDBOX_ENDPOINT, else $SANDBOX_ENDPOINT, else http://127.0.0.1:8080)");
  app.add_option("--token", ctx.global.token, "access token (default: $DENO_DEPLOY_TOKEN)");
  RegisterCreate(app, ctx);
  RegisterExec(app, ctx);
  RegisterList(app, ctx);
  RegisterKill(app, ctx);
  RegisterExtend(app, ctx);
  RegisterCp(app, ctx);
  RegisterSsh(app, ctx);
  RegisterExpose(app, ctx);
  RegisterNet(app, ctx);
  // `exec ID -- CMD ...`: CLI11's prefix_command() does not accept the
  // conventional `--`, so drop it (only right after exec's ID).
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i + 2 < args.size(); ++i) {
    if (args[i] == "exec" && args[i + 2] == "--") {
      args.erase(args.begin() + static_cast<std::ptrdiff_t>(i + 2));
      break;
    }
    if (args[i] == "--endpoint" || args[i] == "--token") ++i;  // skip flag values
  }
  std::reverse(args.begin(), args.end());  // CLI11 wants them reversed
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return ctx.exit_code;
}

}  // namespace sandboxd::cli

#include "cli/cli.h"

#include <cstdlib>

#include "client/client.h"

namespace sandboxd::cli {

int Run(int argc, char** argv) {
  CLI::App app{"sandbox: create and drive sandboxes on a sandboxd server"};
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return ctx.exit_code;
}

}  // namespace sandboxd::cli

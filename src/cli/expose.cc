// sandbox expose ID PORT — exposes PORT inside sandbox ID through the server's
// HTTP ingress and prints the URL (POST /api/v3/sandbox/ID/expose/http). The
// URL stays valid until the sandbox ends; exposing the same port again prints
// the same URL.
#include <cstdio>
#include <memory>

#include "cli/cli.h"

namespace sandboxd::cli {

void RegisterExpose(CLI::App& app, Context& ctx) {
  struct Args {
    std::string id;
    int port = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub =
      app.add_subcommand("expose", "expose a port of a sandbox over HTTP(S) and print its URL");
  sub->add_option("id", args->id, "sandbox id")->required();
  sub->add_option("port", args->port, "port inside the sandbox")
      ->required()
      ->check(CLI::Range(1, 65535));
  sub->callback([args, &ctx] {
    auto c = MakeClient(ctx.global);
    if (!c) {
      ctx.exit_code = ReportError("expose", c.error());
      return;
    }
    auto e = c->ExposeHttp(args->id, args->port);
    if (!e) {
      ctx.exit_code = ReportError("expose " + args->id, e.error());
      return;
    }
    std::printf("%s\n", e->url.c_str());
    ctx.exit_code = 0;
  });
}

}  // namespace sandboxd::cli

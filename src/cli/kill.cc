// sandbox kill ID — stops a sandbox (DELETE /api/v3/sandbox/ID).
#include <memory>

#include "cli/cli.h"

namespace sandboxd::cli {

void RegisterKill(CLI::App& app, Context& ctx) {
  auto id = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("kill", "stop a sandbox");
  sub->add_option("id", *id, "sandbox id")->required();
  sub->callback([id, &ctx] {
    auto c = MakeClient(ctx.global);
    if (!c) {
      ctx.exit_code = ReportError("kill", c.error());
      return;
    }
    auto s = c->Kill(*id);
    ctx.exit_code = s ? 0 : ReportError("kill " + *id, s.error());
  });
}

}  // namespace sandboxd::cli

// sandbox extend ID DUR — moves the sandbox's deadline to now+DUR and prints
// the deadline the server granted (ISO-8601, UTC).
#include <cstdio>
#include <memory>

#include "cli/cli.h"
#include "client/wire.h"

namespace sandboxd::cli {

void RegisterExtend(CLI::App& app, Context& ctx) {
  struct Args {
    std::string id, duration;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("extend", "extend a sandbox's lifetime");
  sub->add_option("id", args->id, "sandbox id")->required();
  sub->add_option("duration", args->duration, "new lifetime from now, e.g. 10m or 90s")->required();
  sub->callback([args, &ctx] {
    auto c = MakeClient(ctx.global);
    if (!c) {
      ctx.exit_code = ReportError("extend", c.error());
      return;
    }
    auto deadline = c->Extend(args->id, args->duration);
    if (!deadline) {
      ctx.exit_code = ReportError("extend " + args->id, deadline.error());
      return;
    }
    std::printf("%s\n", client::FormatIsoUtc(*deadline).c_str());
    ctx.exit_code = 0;
  });
}

}  // namespace sandboxd::cli

// sandbox create [--memory MB] [--timeout DUR|session] [--label k=v]...
//                [--env K=V]... [--allow-net HOST]...
//                [--secret NAME=VALUE@HOST,... | --secret NAME@HOST,...]...
//                [--region R] [--isolation namespaces|microvm]
//
// Prints the new sandbox id. The CLI disconnects right after creating, and a
// "session" sandbox dies with its creating connection, so the CLI's default
// timeout is "5m" (not the SDK's "session").
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "cli/cli.h"
#include "cli/net_util.h"
#include "client/sandbox.h"

namespace sandboxd::cli {
namespace {

struct CreateArgs {
  int memory_mb = 1280;
  std::string timeout = "5m";
  std::vector<std::string> labels, env, allow_net, secrets;
  std::string region;
  std::string isolation;
  bool allow_net_given = false;
};

int RunCreate(const GlobalOptions& global, const CreateArgs& args) {
  auto c = MakeClient(global);
  if (!c) return ReportError("create", c.error());
  client::CreateOptions options;
  options.memory_mb = args.memory_mb;
  options.timeout = args.timeout;
  auto labels = ParsePairs(args.labels, "--label");
  if (!labels) return ReportError("create", labels.error());
  options.labels.insert(labels->begin(), labels->end());
  auto env = ParsePairs(args.env, "--env");
  if (!env) return ReportError("create", env.error());
  options.env = std::move(*env);
  if (args.allow_net_given) options.allow_net = args.allow_net;
  EnvLookup from_env = [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  for (const auto& item : args.secrets) {
    auto secret = ParseSecretArg(item, from_env);
    if (!secret) return ReportError("create", secret.error());
    options.secrets.push_back(std::move(*secret));
  }
  if (!args.region.empty()) options.region = args.region;
  if (!args.isolation.empty()) options.isolation = args.isolation;
  auto sandbox = client::Sandbox::Create(*c, options);
  if (!sandbox) return ReportError("create", sandbox.error());
  std::printf("%s\n", sandbox->id().c_str());
  std::fflush(stdout);
  (void)sandbox->Close();
  return 0;
}

}  // namespace

void RegisterCreate(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<CreateArgs>();
  CLI::App* sub = app.add_subcommand("create", "create a sandbox and print its id");
  sub->add_option("--memory", args->memory_mb, "memory in MiB (768-4096)")->capture_default_str();
  sub->add_option("--timeout", args->timeout,
                  "lifetime: a duration like 30s/5m, or 'session' (dies when the CLI exits)")
      ->capture_default_str();
  sub->add_option("--label", args->labels, "label KEY=VALUE (repeatable)");
  sub->add_option("--env", args->env, "environment KEY=VALUE (repeatable)");
  auto* net = sub->add_option("--allow-net", args->allow_net, "allowed outbound host (repeatable)");
  sub->add_option("--secret", args->secrets,
                  "secret NAME=VALUE@HOST[,HOST...], or NAME@HOST[,HOST...] to take the value from $NAME "
                  "(keeps it out of ps); inside, $NAME holds a placeholder the proxy replaces in HTTPS requests "
                  "to HOST (repeatable)");
  sub->add_option("--region", args->region, "region the sandbox must run in");
  sub->add_option("--isolation", args->isolation,
                  "isolation backend: namespaces | microvm (default: the server's; sandboxd extension)");
  sub->callback([args, net, &ctx] {
    args->allow_net_given = net->count() > 0;
    ctx.exit_code = RunCreate(ctx.global, *args);
  });
}

}  // namespace sandboxd::cli

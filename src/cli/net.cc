// sandbox net show ID [--json]
//   the sandbox's outbound network policy and proxy counters
//   (GET /api/v3/sandboxes/ID/network, a sandboxd extension).
// sandbox net allow ID HOST... [--json]
// sandbox net allow ID --none [--json]
//   replaces the allowNet list (PUT .../network) and prints the new list, one
//   pattern per line. The secrets' hosts stay reachable either way.
#include <cstdio>
#include <memory>

#include "cli/cli.h"
#include "cli/net_util.h"

namespace sandboxd::cli {
namespace {

struct ShowArgs {
  std::string id;
  bool json = false;
};

struct AllowArgs {
  std::string id;
  std::vector<std::string> hosts;
  bool none = false;
  bool json = false;
};

int RunShow(const GlobalOptions& global, const ShowArgs& args) {
  auto c = MakeClient(global);
  if (!c) return ReportError("net show", c.error());
  auto info = c->GetNetwork(args.id);
  if (!info) return ReportError("net show " + args.id, info.error());
  if (args.json) {
    std::printf("%s\n", info->raw.dump(2).c_str());
  } else {
    std::fputs(FormatNetworkInfo(*info).c_str(), stdout);
  }
  return 0;
}

int RunAllow(const GlobalOptions& global, const AllowArgs& args) {
  const std::string what = "net allow " + args.id;
  // An empty list cuts the sandbox off: only on explicit request.
  if (args.hosts.empty() && !args.none) {
    return ReportError(
        what, client::Error::Make(client::kInvalidArgument,
                                  "give the allowed hosts (HOST...), or --none to allow none"));
  }
  auto c = MakeClient(global);
  if (!c) return ReportError("net allow", c.error());
  auto info = c->SetAllowNet(args.id, args.hosts);
  if (!info) return ReportError(what, info.error());
  if (args.json) {
    std::printf("%s\n", info->raw.dump(2).c_str());
    return 0;
  }
  for (const auto& h : info->allow_net) std::printf("%s\n", h.c_str());
  if (info->allow_net.empty()) {
    std::fprintf(stderr, "sandbox: %s: no hosts allowed now%s\n", what.c_str(),
                 info->secrets.empty() ? "" : " (the secrets' hosts stay reachable)");
  }
  return 0;
}

}  // namespace

void RegisterNet(CLI::App& app, Context& ctx) {
  CLI::App* net = app.add_subcommand("net", "show or change a sandbox's outbound network access");
  net->require_subcommand(1);

  auto show = std::make_shared<ShowArgs>();
  CLI::App* show_cmd =
      net->add_subcommand("show", "print a sandbox's allowed hosts, secrets and proxy counters");
  show_cmd->add_option("id", show->id, "sandbox id")->required();
  show_cmd->add_flag("--json", show->json, "print the server's JSON object");
  show_cmd->callback([show, &ctx] { ctx.exit_code = RunShow(ctx.global, *show); });

  auto allow = std::make_shared<AllowArgs>();
  CLI::App* allow_cmd = net->add_subcommand(
      "allow", "replace a sandbox's allowed hosts (host, host:port, *.suffix, 1.2.3.4, [::1]:443)");
  allow_cmd->add_option("id", allow->id, "sandbox id")->required();
  auto* hosts = allow_cmd->add_option("hosts", allow->hosts,
                                      "allowed host patterns (replace the current list)");
  allow_cmd->add_flag("--none", allow->none, "allow no hosts at all")->excludes(hosts);
  allow_cmd->add_flag("--json", allow->json, "print the server's JSON object");
  allow_cmd->callback([allow, &ctx] { ctx.exit_code = RunAllow(ctx.global, *allow); });
}

}  // namespace sandboxd::cli

// sandbox list|ls [--label k=v]... [--json]
#include <cstdio>
#include <memory>

#include "cli/cli.h"

namespace sandboxd::cli {
namespace {

struct ListArgs {
  std::vector<std::string> labels;
  bool json = false;
};

int RunList(const GlobalOptions& global, const ListArgs& args) {
  auto c = MakeClient(global);
  if (!c) return ReportError("list", c.error());
  auto labels = ParsePairs(args.labels, "--label");
  if (!labels) return ReportError("list", labels.error());
  auto items = c->List(client::Labels(labels->begin(), labels->end()));
  if (!items) return ReportError("list", items.error());
  if (args.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& i : *items) arr.push_back(i.raw);
    std::printf("%s\n", arr.dump(2).c_str());
    return 0;
  }
  std::printf("%-30s %-9s %-25s %s\n", "ID", "STATUS", "CREATED", "LABELS");
  for (const auto& i : *items) {
    std::string labels_text;
    for (const auto& [k, v] : i.labels) {
      if (!labels_text.empty()) labels_text += ",";
      labels_text += k + "=" + v;
    }
    std::printf("%-30s %-9s %-25s %s\n", i.id.c_str(), i.status.c_str(), i.created_at.c_str(),
                labels_text.c_str());
  }
  return 0;
}

}  // namespace

void RegisterList(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ListArgs>();
  CLI::App* sub = app.add_subcommand("list", "list sandboxes");
  sub->alias("ls");
  sub->add_option("--label", args->labels, "only sandboxes with label KEY=VALUE (repeatable)");
  sub->add_flag("--json", args->json, "print the server's JSON array");
  sub->callback([args, &ctx] { ctx.exit_code = RunList(ctx.global, *args); });
}

}  // namespace sandboxd::cli

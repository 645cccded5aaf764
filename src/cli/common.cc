#include <cstdio>

#include "cli/cli.h"

namespace sandboxd::cli {

client::Result<client::Client> MakeClient(const GlobalOptions& global) {
  client::ClientOptions options;
  options.endpoint = global.endpoint;
  options.token = global.token;
  return client::Client::Create(std::move(options));
}

int ReportError(const std::string& what, const client::Error& error) {
  std::string text = error.ToString();
  if (error.code == client::kConnectionFailed) text += " (is sandboxd running at this endpoint?)";
  std::fprintf(stderr, "sandbox: %s: %s\n", what.c_str(), text.c_str());
  return 1;
}

client::Result<std::vector<std::pair<std::string, std::string>>> ParsePairs(const std::vector<std::string>& items,
                                                                            const char* flag) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& item : items) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      return client::Fail(client::kInvalidArgument,
                          std::string(flag) + " expects KEY=VALUE, got '" + item + "'");
    }
    out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }
  return out;
}

}  // namespace sandboxd::cli

#include "cli/net_util.h"

#include <cstdint>

namespace sandboxd::cli {
namespace {

bool ValidEnvName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

constexpr char kForms[] =
    "expected NAME=VALUE@HOST[,HOST...] or NAME@HOST[,HOST...] (value from $NAME)";

}  // namespace

client::Result<client::Secret> ParseSecretArg(std::string_view arg, const EnvLookup& lookup_env) {
  auto sep = arg.find_first_of("=@");
  if (sep == std::string_view::npos) {
    // Not echoed: without '=' or '@' the argument may well be a bare value.
    return client::Fail(client::kInvalidArgument, std::string("--secret: ") + kForms);
  }
  client::Secret secret;
  secret.name = std::string(arg.substr(0, sep));
  if (!ValidEnvName(secret.name)) {
    return client::Fail(
        client::kInvalidArgument,
        "--secret: '" + secret.name + "' is not a valid environment variable name; " + kForms);
  }
  const std::string what = "--secret " + secret.name;
  std::string_view hosts_text;
  if (arg[sep] == '=') {
    std::string_view rest = arg.substr(sep + 1);
    auto at = rest.rfind('@');
    if (at == std::string_view::npos) {
      return client::Fail(client::kInvalidArgument, what + ": no hosts given; " + kForms);
    }
    secret.value = std::string(rest.substr(0, at));
    hosts_text = rest.substr(at + 1);
  } else {
    auto value = lookup_env(secret.name);
    if (!value) {
      return client::Fail(client::kInvalidArgument, what + ": environment variable " + secret.name +
                                                        " is not set (NAME@HOST takes the value "
                                                        "from the environment)");
    }
    secret.value = std::move(*value);
    hosts_text = arg.substr(sep + 1);
  }
  if (secret.value.empty())
    return client::Fail(client::kInvalidArgument, what + ": the value is empty");
  while (true) {
    auto comma = hosts_text.find(',');
    std::string_view host = hosts_text.substr(0, comma);
    if (host.empty()) {
      return client::Fail(client::kInvalidArgument, what + ": empty host in the host list");
    }
    secret.hosts.emplace_back(host);
    if (comma == std::string_view::npos) break;
    hosts_text.remove_prefix(comma + 1);
  }
  return secret;
}

std::string FormatNetworkInfo(const client::NetworkInfo& info) {
  std::string out;
  auto line = [&out](std::string_view key, const std::string& value) {
    std::string k(key);
    k.resize(13, ' ');
    out += k + value + "\n";
  };
  if (!info.enabled) {
    line("network:", "off (the server runs sandboxes without outbound networking)");
    return out;
  }
  line("network:",
       "on" + (info.address.empty() ? std::string() : " (address " + info.address + ")"));
  if (info.allow_net.empty()) line("allow-net:", "(none)");
  for (size_t i = 0; i < info.allow_net.size(); ++i)
    line(i == 0 ? "allow-net:" : "", info.allow_net[i]);
  if (info.secrets.empty()) line("secrets:", "(none)");
  for (size_t i = 0; i < info.secrets.size(); ++i) {
    std::string hosts;
    for (const auto& h : info.secrets[i].hosts) hosts += (hosts.empty() ? "" : ", ") + h;
    line(i == 0 ? "secrets:" : "", info.secrets[i].name + " -> " + hosts);
  }
  const auto& st = info.stats;
  line("connections:", std::to_string(st.connections_allowed) + " allowed, " +
                           std::to_string(st.connections_denied) + " denied");
  line("requests:", std::to_string(st.requests_substituted) + " with secrets substituted, " +
                        std::to_string(st.requests_refused) + " refused");
  line("dns queries:", std::to_string(st.dns_queries));
  return out;
}

}  // namespace sandboxd::cli

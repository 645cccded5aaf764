#include "client/network.h"

#include <optional>

namespace sandboxd::client {
namespace {

std::unexpected<Error> Bad(const std::string& why) {
  return Fail(kProtocolError, "network response: " + why);
}

std::optional<std::vector<std::string>> Strings(const nlohmann::json& j) {
  if (!j.is_array()) return std::nullopt;
  std::vector<std::string> out;
  for (const auto& e : j) {
    if (!e.is_string()) return std::nullopt;
    out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace

Result<NetworkInfo> DecodeNetworkInfo(const nlohmann::json& body) {
  if (!body.is_object()) return Bad("not a JSON object");
  NetworkInfo info;
  auto enabled = body.find("enabled");
  if (enabled == body.end() || !enabled->is_boolean())
    return Bad("`enabled` is missing or not a boolean");
  info.enabled = enabled->get<bool>();
  auto allow = body.find("allowNet");
  if (allow == body.end()) return Bad("`allowNet` is missing");
  auto hosts = Strings(*allow);
  if (!hosts) return Bad("`allowNet` is not an array of strings");
  info.allow_net = std::move(*hosts);
  if (auto it = body.find("address"); it != body.end()) {
    if (!it->is_string()) return Bad("`address` is not a string");
    info.address = it->get<std::string>();
  }
  if (auto it = body.find("secrets"); it != body.end()) {
    if (!it->is_array()) return Bad("`secrets` is not an array");
    for (const auto& s : *it) {
      auto name = s.is_object() ? s.find("name") : s.end();
      auto secret_hosts = s.is_object() && s.contains("hosts") ? Strings(s["hosts"]) : std::nullopt;
      if (!s.is_object() || name == s.end() || !name->is_string() || !secret_hosts) {
        return Bad("`secrets` entries must be {name: string, hosts: [string]}");
      }
      info.secrets.push_back({name->get<std::string>(), std::move(*secret_hosts)});
    }
  }
  if (auto it = body.find("stats"); it != body.end()) {
    if (!it->is_object()) return Bad("`stats` is not an object");
    auto counter = [&](const char* key, std::uint64_t& out) -> bool {
      auto c = it->find(key);
      if (c == it->end()) return true;  // older daemons may lack a counter
      if (!c->is_number_unsigned()) return false;
      out = c->get<std::uint64_t>();
      return true;
    };
    NetworkStats& st = info.stats;
    if (!counter("connectionsAllowed", st.connections_allowed) ||
        !counter("connectionsDenied", st.connections_denied) ||
        !counter("requestsSubstituted", st.requests_substituted) ||
        !counter("requestsRefused", st.requests_refused) ||
        !counter("dnsQueries", st.dns_queries)) {
      return Bad("`stats` counters must be non-negative integers");
    }
  }
  info.raw = body;
  return info;
}

}  // namespace sandboxd::client

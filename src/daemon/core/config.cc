#include "daemon/core/config.h"

#include "common/base64.h"
#include "daemon/net/allowlist.h"

#include <charconv>
#include <nlohmann/json.hpp>

namespace sandboxd::core {
namespace {

using nlohmann::json;

std::unexpected<ApiError> Bad(std::string m) { return std::unexpected(ApiError::InvalidConfig(std::move(m))); }

bool ValidEnvName(std::string_view s) {
  if (s.empty() || s.size() > 256) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

ApiResult<std::map<std::string, std::string>> ParseLabels(const json& j) {
  if (!j.is_object()) return std::unexpected(ApiError::InvalidLabels("labels must be an object of strings"));
  if (j.size() > kMaxLabels) {
    return std::unexpected(ApiError::InvalidLabels("at most " + std::to_string(kMaxLabels) +
                                                   " labels are allowed (got " + std::to_string(j.size()) + ")"));
  }
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : j.items()) {
    if (k.empty() || k.size() > kMaxLabelKeyBytes) {
      return std::unexpected(ApiError::InvalidLabels("label keys must be 1 to " + std::to_string(kMaxLabelKeyBytes) +
                                                     " bytes (got " + std::to_string(k.size()) + ")"));
    }
    if (!v.is_string()) return std::unexpected(ApiError::InvalidLabels("label '" + k + "' must be a string"));
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > kMaxLabelValueBytes) {
      return std::unexpected(ApiError::InvalidLabels("label '" + k + "' value exceeds " +
                                                     std::to_string(kMaxLabelValueBytes) + " bytes"));
    }
    out.emplace(k, s);
  }
  return out;
}

}  // namespace

std::string Latin1ToUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (unsigned char c : bytes) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

std::optional<int64_t> ParseDurationMs(std::string_view s) {
  if (s.size() < 2 || s.size() > 12) return std::nullopt;
  char unit = s.back();
  int64_t mult = unit == 's' ? 1000 : unit == 'm' ? 60'000 : unit == 'h' ? 3'600'000 : 0;
  if (mult == 0) return std::nullopt;
  int64_t n = 0;
  auto digits = s.substr(0, s.size() - 1);
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || p != digits.data() + digits.size() || n <= 0) return std::nullopt;
  return n * mult;
}

ApiResult<CreateConfig> ParseCreateConfigHeader(std::string_view header, const ConfigLimits& limits) {
  CreateConfig cfg;
  auto raw = Base64Decode(header);
  if (!raw) return Bad("x-deno-sandbox-config is not valid base64");
  json j = json::parse(Latin1ToUtf8(*raw), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad("x-deno-sandbox-config is not a JSON object");

  if (auto it = j.find("memory_mb"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer()) return Bad("memory_mb must be an integer");
    int64_t m = it->get<int64_t>();
    if (m < kMinMemoryMb || m > kMaxMemoryMb) {
      return Bad("memory_mb must be between " + std::to_string(kMinMemoryMb) + " and " +
                 std::to_string(kMaxMemoryMb) + " (got " + std::to_string(m) + ")");
    }
    cfg.memory_mb = static_cast<uint32_t>(m);
  }

  if (auto it = j.find("region"); it != j.end() && !it->is_null()) {
    if (!it->is_string() || it->get_ref<const std::string&>() != limits.region) {
      std::string got = it->is_string() ? it->get<std::string>() : it->dump();
      return std::unexpected(ApiError{400, "REGION_NOT_SERVED",
                                      "region '" + got + "' is not served here (this server serves '" +
                                          limits.region + "')"});
    }
  }

  // Lifetime: stop_at_ms (npm SDK) or timeout (Python SDK).
  std::optional<int64_t> stop_at;
  if (auto it = j.find("stop_at_ms"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer()) return Bad("stop_at_ms must be an integer (ms since the Unix epoch)");
    stop_at = it->get<int64_t>();
  } else if (auto t = j.find("timeout"); t != j.end() && !t->is_null()) {
    if (!t->is_string()) return Bad("timeout must be a string");
    const auto& ts = t->get_ref<const std::string&>();
    if (ts != "session") {
      auto d = ParseDurationMs(ts);
      if (!d) return Bad("timeout '" + ts + "' is not a duration like \"30s\" or \"5m\" (or \"session\")");
      stop_at = limits.now_ms + *d;
    }
  }
  if (stop_at) {
    if (*stop_at < limits.now_ms - limits.clock_skew_ms) return Bad("stop_at_ms lies in the past");
    *stop_at = std::max(*stop_at, limits.now_ms + 1000);
    if (limits.max_lifetime_ms && *stop_at - limits.now_ms > *limits.max_lifetime_ms) {
      return Bad("requested lifetime exceeds this server's maximum of " +
                 std::to_string(*limits.max_lifetime_ms / 1000) + " s");
    }
    cfg.stop_at_ms = stop_at;
  }

  if (auto it = j.find("labels"); it != j.end() && !it->is_null()) {
    auto labels = ParseLabels(*it);
    if (!labels) return std::unexpected(labels.error());
    cfg.labels = std::move(*labels);
  }

  if (auto it = j.find("root"); it != j.end() && !it->is_null()) {
    return Bad("root volumes are not supported by this server yet");
  }
  if (auto it = j.find("volumes"); it != j.end() && !it->is_null()) {
    if (!it->is_array() && !it->is_object()) return Bad("volumes must be an array");
    if (!it->empty()) return Bad("volumes are not supported by this server yet");
  }

  if (auto it = j.find("allow_net"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return Bad("allow_net must be an array of host patterns");
    std::vector<std::string> hosts;
    for (const auto& h : *it) {
      if (!h.is_string()) return Bad("allow_net entries must be host patterns (strings)");
      if (auto e = net::ParseAllowEntry(h.get_ref<const std::string&>()); !e) {
        return Bad("allow_net: " + e.error().message);
      }
      hosts.push_back(h.get<std::string>());
    }
    cfg.allow_net = std::move(hosts);
  }

  if (auto it = j.find("secrets"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return Bad("secrets must be an object");
    for (const auto& [name, s] : it->items()) {
      if (!ValidEnvName(name)) return Bad("secret name '" + name + "' is not a valid environment variable name");
      if (!s.is_object() || !s.contains("value") || !s["value"].is_string() || !s.contains("hosts") ||
          !s["hosts"].is_array()) {
        return Bad("secret '" + name + "' must be {hosts: [string], value: string}");
      }
      Secret sec;
      sec.value = s["value"].get<std::string>();
      for (const auto& h : s["hosts"]) {
        if (!h.is_string()) return Bad("secret '" + name + "' hosts must be strings");
        if (auto e = net::ParseAllowEntry(h.get_ref<const std::string&>()); !e) {
          return Bad("secret '" + name + "' hosts: " + e.error().message);
        }
        sec.hosts.push_back(h.get<std::string>());
      }
      cfg.secrets.emplace(name, std::move(sec));
    }
  }

  if (auto it = j.find("env"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return Bad("env must be an object of strings");
    for (const auto& [k, v] : it->items()) {
      if (!ValidEnvName(k) || !v.is_string()) return Bad("env entry '" + k + "' is invalid");
      cfg.env.emplace(k, v.get<std::string>());
    }
  }

  // Our extension (no SDK sends it; docs/api.md): which backend isolates
  // this sandbox. Availability on this server is the Manager's call.
  if (auto it = j.find("isolation"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return Bad("isolation must be a string: \"namespaces\" or \"microvm\"");
    const auto& v = it->get_ref<const std::string&>();
    if (v != kIsolationNamespaces && v != kIsolationMicroVm) {
      return Bad("unknown isolation '" + v + "' (supported: namespaces, microvm)");
    }
    cfg.isolation = v;
  }
  return cfg;
}

}  // namespace sandboxd::core

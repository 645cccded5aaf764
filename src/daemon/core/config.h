// Create options, parsed and validated at the edge (the x-deno-sandbox-config
// header, WIRE.md §1.4) into a plain struct; the core never sees raw JSON.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/api_error.h"

namespace sandboxd::core {

inline constexpr uint32_t kMinMemoryMb = 768;
inline constexpr uint32_t kMaxMemoryMb = 4096;
inline constexpr uint32_t kDefaultMemoryMb = 1280;
inline constexpr size_t kMaxLabels = 5;
inline constexpr size_t kMaxLabelKeyBytes = 64;
inline constexpr size_t kMaxLabelValueBytes = 128;

struct Secret {
  std::vector<std::string> hosts;
  std::string value;  // never persisted, never logged
};

struct CreateConfig {
  std::optional<int64_t> stop_at_ms;  // absent: "session" lifetime
  uint32_t memory_mb = kDefaultMemoryMb;
  std::map<std::string, std::string> labels;
  std::optional<std::vector<std::string>> allow_net;  // absent: no outbound access
  std::map<std::string, Secret> secrets;
  std::map<std::string, std::string> env;  // Python SDK sends env in the config
  // sandboxd extension: the isolation backend for this sandbox ("namespaces"
  // or "microvm"); absent: the daemon's default (--isolation). Whether that
  // backend is available here is checked by the Manager.
  std::optional<std::string> isolation;
};

// The values the `isolation` create option may take.
inline constexpr const char* kIsolationNamespaces = "namespaces";
inline constexpr const char* kIsolationMicroVm = "microvm";

struct ConfigLimits {
  std::string region;              // the region this daemon serves
  int64_t now_ms = 0;              // server clock
  int64_t clock_skew_ms = 30'000;  // tolerated client clock skew for stop_at_ms
  std::optional<int64_t> max_lifetime_ms;  // cap on stop_at_ms - now (none by default)
};

// Decodes base64 → Latin-1 bytes → UTF-8 → JSON, then validates every field.
// Unknown keys are ignored (the SDKs add keys over time).
ApiResult<CreateConfig> ParseCreateConfigHeader(std::string_view header, const ConfigLimits& limits);

// "30s", "5m", "2h" → milliseconds. Like the SDK: an integer prefix then the
// unit. Anything else (no unit, "0s", "-1m", "abc") is an error.
std::optional<int64_t> ParseDurationMs(std::string_view s);

// Latin-1 bytes to UTF-8 (every byte is one code point U+0000..U+00FF).
std::string Latin1ToUtf8(std::string_view bytes);

}  // namespace sandboxd::core

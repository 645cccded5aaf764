// Small readers for JSON-RPC params (already known to be an object) shared
// by the method handlers, and the daemon-wide server stream id counter.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace sandboxd::api {

// The string at `key`; nullopt when absent, null or not a string.
inline std::optional<std::string> OptString(const nlohmann::json& p, const char* key) {
  auto it = p.find(key);
  if (it == p.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

inline bool IsIntKey(const nlohmann::json& p, const char* key) {
  auto it = p.find(key);
  return it != p.end() && it->is_number_integer();
}

// Process-wide: the SDK keeps one table of server stream ids per client
// process (WIRE.md §3.1), so ids are unique across every connection we serve.
// Event-loop thread only.
inline int64_t NextServerStreamId() {
  static int64_t next = 1;
  return next++;
}

}  // namespace sandboxd::api

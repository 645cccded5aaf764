// The egress policy of a running sandbox as reported by sandboxd's own REST
// extension GET/PUT /api/v3/sandboxes/{id}/network (not part of the
// @deno/sandbox protocol). The calls themselves are Client::GetNetwork and
// Client::SetAllowNet (client.h); this is the typed value and its decoder.
//
// Thread-compatible plain values; DecodeNetworkInfo is a pure function.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "client/error.h"

namespace sandboxd::client {

// A secret as the server reports it: its name and hosts, never its value.
struct NetworkSecret {
  std::string name;
  std::vector<std::string> hosts;
};

// Counters kept by the daemon's egress proxy and resolver since the sandbox
// started.
struct NetworkStats {
  std::uint64_t connections_allowed = 0;
  std::uint64_t connections_denied = 0;
  std::uint64_t requests_substituted = 0;  // HTTP requests with secrets filled in
  std::uint64_t requests_refused = 0;      // refused by the HTTP relay
  std::uint64_t dns_queries = 0;
};

struct NetworkInfo {
  // false: the daemon runs with --net off (loopback only); then everything
  // below is empty/zero.
  bool enabled = false;
  std::string address;  // the sandbox's IPv4 address on its link
  // The allowNet patterns as given. The secrets' hosts are reachable too.
  std::vector<std::string> allow_net;
  std::vector<NetworkSecret> secrets;
  NetworkStats stats;
  nlohmann::json raw;  // the object as the server sent it
};

// Decodes the response body of GET/PUT .../network. Requires an object with a
// boolean `enabled` and a string array `allowNet`; `address`, `secrets` and
// `stats` are optional (absent when disabled). Anything malformed →
// PROTOCOL_ERROR.
Result<NetworkInfo> DecodeNetworkInfo(const nlohmann::json& body);

}  // namespace sandboxd::client

// Client: connection settings plus the REST calls of WIRE.md §5 (list, kill,
// extend) and sandboxd's network extension (GetNetwork, SetAllowNet).
// Sandboxes themselves are opened with sandboxd::client::Sandbox (sandbox.h).
//
// Thread-safety: a Client is an immutable value after construction; all const
// methods may be called concurrently from any thread. Each REST call opens
// its own connection and blocks the calling thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/error.h"
#include "client/network.h"
#include "client/wire.h"

namespace sandboxd::client {

struct ClientOptions {
  // "http://host:port". Empty: $DENO_SANDBOX_ENDPOINT, else $SANDBOX_ENDPOINT,
  // else http://127.0.0.1:8080.
  std::string endpoint;
  // Bearer token. Empty: $DENO_DEPLOY_TOKEN.
  std::string token;
  // Sent as X-Deno-Org when non-empty (not needed for ddo_ tokens).
  std::string org;
  // Limits for REST calls and for TCP connect of WebSocket upgrades.
  std::chrono::milliseconds request_timeout{10'000};
  // Limit for the WebSocket upgrade itself (the server may hold it open while
  // the sandbox boots).
  std::chrono::milliseconds handshake_timeout{120'000};
};

// One entry of GET /api/v2/sandboxes.
struct SandboxInfo {
  std::string id;
  std::string created_at;                 // ISO-8601
  std::optional<std::string> stopped_at;  // ISO-8601
  std::string region;
  std::string status;  // "running" | "stopped" | ...
  Labels labels;
  nlohmann::json raw;  // the entry as the server sent it
};

// Where and as whom to SSH into a sandbox (exposeSsh). The username is the
// credential: whoever knows it can log in while the sandbox runs.
struct SshAccess {
  std::string hostname;
  std::string username;
  int port = 22;
};

struct HttpExposure {
  std::string domain;  // <sandbox>-<port>.<ingress domain>[:port]
  std::string url;     // https://domain (http:// when the ingress has no TLS)
};

struct ListOptions {
  // Page size sent as `limit` (0: server default).
  int page_size = 0;
  // Stop after this many entries in total (0: follow every `Link: rel="next"`).
  int max_results = 0;
};

class Client {
 public:
  // Fills empty options from the environment (see ClientOptions) and parses
  // the endpoint. Fails with INVALID_ARGUMENT for a bad endpoint URL and with
  // MISSING_TOKEN when no token is configured.
  static Result<Client> Create(ClientOptions options = {});

  const ClientOptions& options() const { return options_; }
  const Endpoint& endpoint() const { return endpoint_; }

  // GET /api/v2/sandboxes with labels[k]=v filters, following pagination.
  Result<std::vector<SandboxInfo>> List(const Labels& labels = {},
                                        const ListOptions& list_options = {}) const;
  // DELETE /api/v3/sandbox/{id}. Does not wait for connections to close.
  Status Kill(std::string_view id) const;
  // PATCH /api/v3/sandbox/{id} with stop_at_ms = now + duration ("30s",
  // "5m"; "session" is refused). Returns the deadline the server granted
  // (ms since the Unix epoch).
  Result<std::int64_t> Extend(std::string_view id, std::string_view duration) const;
  // GET /api/v3/sandboxes/{id}/network (sandboxd extension): the running
  // sandbox's allowNet list, secret names and hosts, and proxy counters.
  // Unknown, stopped or foreign ids fail with the server's 404.
  Result<NetworkInfo> GetNetwork(std::string_view id) const;
  // PUT /api/v3/sandboxes/{id}/network: replaces the allowNet list (empty:
  // only the secrets' hosts stay reachable) and returns the new state. The
  // server validates the patterns: 400 INVALID_CONFIG names the bad entry;
  // 409 NETWORK_DISABLED when the daemon runs with --net off. Connections
  // already open are not cut.
  Result<NetworkInfo> SetAllowNet(std::string_view id,
                                  const std::vector<std::string>& allow_net) const;

  // POST /api/v3/sandbox/{id}/expose/http {"port": port}: exposes that port
  // inside the sandbox through the server's HTTP ingress and returns its URL
  // (valid until the sandbox ends). 409 INGRESS_DISABLED when the server runs
  // without an ingress; 400 for a port outside 1..65535.
  Result<HttpExposure> ExposeHttp(std::string_view id, int port) const;

  // POST /api/v3/sandbox/{id}/expose/ssh: the sandbox's SSH credential (the
  // same one on every call while the sandbox runs). 409 SSH_DISABLED when the
  // server runs without an SSH gateway.
  Result<SshAccess> ExposeSsh(std::string_view id) const;

  // Headers every request carries (Authorization, X-Deno-Org).
  std::vector<std::pair<std::string, std::string>> AuthHeaders() const;

 private:
  Client(ClientOptions options, Endpoint endpoint)
      : options_(std::move(options)), endpoint_(std::move(endpoint)) {}

  ClientOptions options_;
  Endpoint endpoint_;
};

// Endpoint default from the environment, as described on ClientOptions.
std::string DefaultEndpoint();

}  // namespace sandboxd::client

// The egress proxy: every TCP connection a sandbox opens is redirected here by
// the firewall. It finds the sandbox by the connection's source address, sees
// what the sandbox wants (TLS SNI, HTTP Host, or the address it dialled for
// IP-literal entries), decides by the sandbox's EgressPolicy, resolves names
// itself, refuses internal addresses nobody named, and then splices bytes
// (no secrets), or terminates TLS and relays HTTP with secret substitution.
// Runs on one io_context thread; the lookup and the resolver are thread-safe.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/error.h"
#include "common/fd.h"
#include "daemon/net/egress_policy.h"

namespace sandboxd::net {

class NameResolver;

struct SandboxEgress {
  std::shared_ptr<const EgressPolicy> policy;
  std::shared_ptr<EgressStats> stats;
  // Set by the proxy on the copy a connection carries: one of the sandbox's
  // connection slots, given back when the last copy is gone.
  std::shared_ptr<void> slot;
};
// Source address of a connection or datagram → its sandbox (nullopt: not a sandbox).
using EgressLookup = std::function<std::optional<SandboxEgress>(const boost::asio::ip::address&)>;

// One egress decision, for the log and for tests. Never carries secret values.
struct EgressEvent {
  std::string sandbox_id;
  std::string host;  // name decided on, or the address for IP-literal entries
  uint16_t port = 0;
  bool allowed = false;
  std::string mode;    // "splice", "intercept", "http", "deny"
  std::string reason;  // why denied / refused ("" when allowed)
  size_t substituted = 0;
};

struct EgressProxyOptions {
  // Proxied connections one sandbox may hold open at once; beyond, new ones
  // are reset (each costs the daemon six file descriptors).
  int64_t max_connections_per_sandbox = 512;
  std::chrono::milliseconds sniff_timeout{10000};    // first bytes of a connection
  std::chrono::milliseconds connect_timeout{10000};  // to the upstream
  std::shared_ptr<boost::asio::ssl::context> upstream_tls;  // verifies upstreams (system roots + test CAs)
  // Seam for tests: the address the sandbox dialled (default: SO_ORIGINAL_DST,
  // which the firewall's redirect records).
  std::function<std::optional<boost::asio::ip::tcp::endpoint>(boost::asio::ip::tcp::socket&)> original_dst;
};

class EgressProxy {
 public:
  EgressProxy(boost::asio::io_context& io, NameResolver& resolver, EgressLookup lookup,
              EgressProxyOptions opts);
  ~EgressProxy();

  // Binds and starts accepting. Port 0 picks one.
  Status Listen(const boost::asio::ip::tcp::endpoint& ep);
  uint16_t port() const;
  void Stop();

  // Observes every decision (after it is logged). Tests and metrics.
  void SetObserver(std::function<void(const EgressEvent&)> fn);

  // Serves `down` (a connected stream socket, e.g. one end of a socketpair)
  // as a connection from the sandbox at `sandbox_addr` to `original_dst`:
  // judged exactly as one the sandbox opened and the firewall redirected
  // here. For the fetch RPC of a microVM sandbox, whose address belongs to
  // the guest, so no daemon socket can have it. When `sandbox_id` is not the
  // sandbox registered at that address (any more), `down` is just closed.
  // Thread-safe: the work is posted to the proxy's thread.
  void Adopt(UniqueFd down, const boost::asio::ip::address& sandbox_addr,
             boost::asio::ip::tcp::endpoint original_dst, std::string sandbox_id);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace sandboxd::net

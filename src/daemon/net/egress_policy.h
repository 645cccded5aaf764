// What one sandbox may reach, and which secrets it may use where. Immutable
// once built (a `net allow` builds a new one and swaps it in), so the proxy
// and the resolver read it without locks.
#pragma once

#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "daemon/net/allowlist.h"

namespace sandboxd::net {

class SandboxCa;

struct SecretBinding {
  std::string name;
  std::string placeholder;  // what the sandbox sees in its environment
  std::string value;        // the real value; lives only in the daemon
  AllowList hosts;          // where the proxy substitutes it
};

struct SubstitutionPair {
  std::string placeholder, value;
};

class EgressPolicy {
 public:
  // `allow_net`: the create option (absent = empty: no outbound access).
  // Each secret's hosts are reachable too: naming a host for a secret is
  // asking to talk to it. Errors name the bad entry.
  static Result<std::shared_ptr<const EgressPolicy>> Build(std::string sandbox_id,
                                                           const std::vector<std::string>& allow_net,
                                                           std::vector<SecretBinding> secrets,
                                                           std::shared_ptr<SandboxCa> ca);
  // The same secrets and CA with a new allowNet list.
  Result<std::shared_ptr<const EgressPolicy>> WithAllowNet(const std::vector<std::string>& allow_net) const;

  const std::string& sandbox_id() const { return sandbox_id_; }
  const std::vector<std::string>& allow_net() const { return allow_net_; }
  // allowNet plus the secrets' hosts: what names and addresses may be reached.
  const AllowList& reachable() const { return *reachable_; }
  std::shared_ptr<const AllowList> reachable_ptr() const { return reachable_; }
  bool AnyOutbound() const { return !reachable_->empty(); }

  // Secrets to substitute for a request to host:port (empty: splice/pass through).
  std::vector<SubstitutionPair> SubstitutionsFor(std::string_view host, uint16_t port) const;
  // Every placeholder of this sandbox (to notice one going elsewhere).
  std::vector<SubstitutionPair> AllPlaceholders() const;
  const std::vector<SecretBinding>& secrets() const { return secrets_; }
  const std::shared_ptr<SandboxCa>& ca() const { return ca_; }

 private:
  std::string sandbox_id_;
  std::vector<std::string> allow_net_;
  std::shared_ptr<const AllowList> reachable_;
  std::vector<SecretBinding> secrets_;
  std::shared_ptr<SandboxCa> ca_;
};

// Counters of one sandbox's egress decisions (never values).
struct EgressStats {
  std::atomic<uint64_t> connections_allowed{0};
  std::atomic<uint64_t> connections_denied{0};
  std::atomic<uint64_t> requests_substituted{0};  // HTTP requests that had a secret put in
  std::atomic<uint64_t> requests_refused{0};      // refused by the HTTP relay (unsafe body, fronting, ...)
  std::atomic<uint64_t> dns_queries{0};
  std::atomic<int64_t> open_connections{0};  // proxied connections open now
};

}  // namespace sandboxd::net

// The sandbox network service: one per daemon. It owns the address range,
// the nftables table, the egress proxy, the DNS resolver and their event-loop
// thread, and attaches each sandbox's network namespace to the host (one veth
// pair, firewall set elements, a registry entry from its address to its
// policy). Everything an attachment made is removed when it is destroyed.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd.h"
#include "daemon/net/egress_policy.h"
#include "daemon/net/egress_proxy.h"

namespace sandboxd::net {

struct NetworkOptions {
  std::string range = "10.89.0.0/16";  // carved into one /30 per sandbox
  // Short tag naming this daemon's table ("sandboxd_<tag>") and interfaces
  // ("sx<tag><block>"): several daemons can share a host. ≤ 6 hex chars.
  std::string tag;
  // Test-only settings (off by default): a hosts file the resolver answers
  // from (and nothing else when hosts_only), and extra CAs trusted for upstreams.
  std::string hosts_file;
  bool hosts_only = false;
  std::vector<std::string> extra_ca_files;
  std::string system_ca_bundle = "/etc/ssl/certs/ca-certificates.crt";  // what the sandbox's trust store starts from
};

class NetworkService;

// One sandbox's network. Destroying it removes the veth pair, the firewall
// elements and the registry entry. Thread-safe.
class NetworkAttachment {
 public:
  ~NetworkAttachment();
  NetworkAttachment(const NetworkAttachment&) = delete;
  NetworkAttachment& operator=(const NetworkAttachment&) = delete;

  std::shared_ptr<const EgressPolicy> policy() const;
  // Replaces the allowlist; new connections see it at once.
  Status SetAllowNet(const std::vector<std::string>& allow_net);
  const std::shared_ptr<EgressStats>& stats() const { return stats_; }
  std::string sandbox_ip() const;
  uint32_t sandbox_ip_u32() const { return sandbox_ip_; }  // host byte order
  int prefix() const { return 30; }
  std::string host_ifname() const { return ifname_; }
  // The guest's tap this link is joined to ("" for a namespace sandbox): the
  // guest owns sandbox_ip() and must be told it (gateway_ip(), prefix()).
  const std::string& guest_tap() const { return guest_tap_; }
  // The service it belongs to (which outlives every attachment).
  NetworkService& service() const { return *service_; }

  int netns_fd() const { return netns_.get(); }
  uint32_t gateway_ip() const { return gateway_ip_; }
  // TLS client context for fetches: system roots, test CAs, the sandbox CA.
  std::shared_ptr<boost::asio::ssl::context> FetchTlsContext();

 private:
  friend class NetworkService;
  NetworkAttachment() = default;
  NetworkService* service_ = nullptr;
  std::string ifname_;
  uint32_t block_ = 0;
  uint32_t sandbox_ip_ = 0;
  uint32_t gateway_ip_ = 0;
  std::string guest_tap_;
  UniqueFd netns_;
  std::shared_ptr<EgressStats> stats_;
  std::shared_ptr<boost::asio::ssl::context> fetch_tls_;
  mutable std::mutex mu_;
  std::shared_ptr<const EgressPolicy> policy_;
};

class NetworkService {
 public:
  // Installs the firewall table (replacing a stale one of this tag), removes
  // interfaces a previous run left, starts the proxy and resolver thread.
  static Result<std::unique_ptr<NetworkService>> Start(NetworkOptions opts);
  ~NetworkService();  // stops the thread and removes the table

  // Attaches a sandbox whose network namespace is `netns_fd` (borrowed; the
  // attachment keeps its own reference). With `guest_tap` (a tap device in
  // that namespace, a microVM's NIC) the link is joined to the tap instead
  // of being configured for processes in the namespace (link.h): the guest
  // behind it owns the sandbox address. Blocking, a few ms; any thread.
  Result<std::unique_ptr<NetworkAttachment>> Attach(int netns_fd,
                                                    std::shared_ptr<const EgressPolicy> policy,
                                                    const std::string& guest_tap = {});

  // The sandbox-side trust store for a sandbox with a CA: the system bundle
  // followed by the CA (what SSL_CERT_FILE points at).
  const std::string& system_ca_bundle() const { return system_bundle_; }
  uint16_t proxy_port() const;
  uint16_t dns_port() const;
  const NetworkOptions& options() const { return opts_; }
  // A connection "from" the sandbox at `sandbox_ip` (host byte order) to
  // `dst`, for a sandbox whose address belongs to its guest (microVM): one
  // end of a socketpair, the other adopted by the egress proxy
  // (EgressProxy::Adopt), so it meets exactly the sandbox's rules. The fetch
  // RPC's connections; a sandbox's own go through its link. ECONNREFUSED
  // for a sandbox without outbound access, as its firewall would answer.
  Result<UniqueFd> ConnectAsSandbox(uint32_t sandbox_ip, const std::string& sandbox_id,
                                    const boost::asio::ip::tcp::endpoint& dst);

  // Test/metrics hook: every egress decision.
  void SetObserver(std::function<void(const EgressEvent&)> fn);
  boost::asio::io_context& io();

  struct Impl;

 private:
  friend class NetworkAttachment;
  explicit NetworkService(NetworkOptions opts);
  void Detach(NetworkAttachment& a);
  Status UpdatePolicy(NetworkAttachment& a, std::shared_ptr<const EgressPolicy> p);

  NetworkOptions opts_;
  std::string system_bundle_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sandboxd::net

// The daemon's nftables table, which steers all sandbox traffic to the
// daemon's egress proxy and resolver and keeps it away from everything else.
//
// One `table inet <name>` per daemon; several daemons can share a host with
// different table names, ports and address ranges. Sandboxes are members of
// named sets, so adding or removing one is a set-element update (one small
// netlink transaction), never a rule change. What the rules do:
//
//  - prerouting, priority raw (before conntrack): from a sandbox link, drop
//    IPv6, drop any packet whose (link, source address) pair is not the one
//    registered (anti-spoofing), drop everything but TCP and UDP. With a
//    guard prefix, links named <prefix>* that are not registered are dropped
//    outright (a link that exists before AddSandbox or after RemoveSandbox).
//  - prerouting, priority dstnat: every TCP connection from a sandbox is
//    redirected to proxy_port on the host end of its link, whatever address
//    it dialled (the proxy reads that address with SO_ORIGINAL_DST); UDP to
//    port 53 goes to dns_port; other UDP is redirected too, keeping its port,
//    so that it reaches the input chain and is refused there at once instead
//    of being routed (and silently dropped).
//  - input: from a sandbox, TCP to proxy_port is accepted only from links in
//    `net_on` and otherwise answered with a TCP reset (ECONNREFUSED in the
//    sandbox); UDP to dns_port is accepted; other UDP gets an ICMP port
//    unreachable (ECONNREFUSED); anything else is dropped. From any other
//    link, TCP to proxy_port and UDP to dns_port are dropped: the proxy and
//    resolver serve sandboxes only, even when bound to 0.0.0.0.
//  - forward: nothing from or to a sandbox link is forwarded.
//  - output: a connection the daemon opens over a sandbox link with a socket
//    marked kGuestDialMark (SO_MARK) gets that mark on its conntrack entry;
//    input then accepts from the sandbox exactly the reply direction of such
//    connections (`ct direction reply ct mark`), before any other rule.
//
// The host initiates connections to a sandbox over its link only for a guest
// with its own network stack (a microVM: the ingress dials the guest's
// address with a marked socket, SocketToGuest). A namespace sandbox's
// services are reached through sockets made with SocketInNetns instead. So a
// sandbox can answer the daemon's own connections and nothing else: replies
// to connections of any other host process (which cannot set SO_MARK without
// CAP_NET_ADMIN/CAP_NET_RAW) are dropped like everything else, and a packet a
// sandbox sends on its own is never in the reply direction of a marked entry.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/fd.h"

struct nft_ctx;

namespace sandboxd::net {

// SO_MARK of the daemon's sockets that dial a guest over its sandbox link.
// Chosen clear of the mark bits common host software uses (kube-proxy
// 0xc000, Calico and Tailscale the upper 16 bits, Cilium's 0x0f00 magic,
// wg-quick 0xca6c); it only matters on packets to sandbox links.
inline constexpr uint32_t kGuestDialMark = 0x105b;

// An unconnected socket (SOCK_CLOEXEC added) of the daemon's own namespace
// with kGuestDialMark: what the daemon dials a guest's address with.
// Needs CAP_NET_ADMIN.
Result<UniqueFd> GuestDialSocket(int domain, int type);

// Thread-safe (calls are serialised on an internal lock).
class Firewall {
 public:
  // Installs the table `table` (replacing a stale one of that name in the same
  // transaction). `table`: 1..64 chars of [A-Za-z0-9_], starting with a letter.
  // `guard_prefix` (optional, e.g. "sx1a2b3c"): links whose names start with it
  // are treated as sandbox links even before AddSandbox, and dropped.
  static Result<std::unique_ptr<Firewall>> Install(std::string table, uint16_t proxy_port,
                                                   uint16_t dns_port,
                                                   std::string guard_prefix = {});
  // Does not uninstall: whether the table outlives this object is the
  // daemon's decision (Uninstall(), or DeleteTable() at the next start).
  ~Firewall();
  Firewall(const Firewall&) = delete;
  Firewall& operator=(const Firewall&) = delete;

  // Registers a sandbox link and its address (one transaction). Idempotent.
  // Call before the link is created (CreateVeth), so it never exists without
  // rules. `outbound`: whether the sandbox may open connections to the proxy.
  Status AddSandbox(std::string_view ifname, uint32_t sandbox_ip, bool outbound);
  // Grants or revokes outbound access. Existing connections are cut too (their
  // next packet is answered with a reset). Idempotent.
  Status SetOutbound(std::string_view ifname, bool outbound);
  // Unregisters a sandbox link. Idempotent. Call after deleting the link.
  Status RemoveSandbox(std::string_view ifname, uint32_t sandbox_ip);

  // Deletes the table. Idempotent; later calls on this object fail.
  Status Uninstall();
  // Deletes `table` if it exists (reaping a previous run's table).
  static Status DeleteTable(std::string_view table);

  // The table as `nft list table inet <name>` prints it (for tests, debugging).
  Result<std::string> Dump();

  const std::string& table() const { return table_; }

 private:
  Firewall(nft_ctx* ctx, std::string table);
  Status RunLocked(const std::string& commands, std::string* output = nullptr);

  std::mutex mu_;
  nft_ctx* const ctx_;  // owned; libnftables contexts are not thread-safe
  const std::string table_;
};

}  // namespace sandboxd::net

// The veth pair that attaches a sandbox's network namespace to the host, via
// rtnetlink (libnl-route-3). The host end is a plain routed interface with a
// /30: there is no bridge, and the firewall (firewall.h) makes sure the host
// never forwards anything from it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace sandboxd::net {

struct VethConfig {
  // Host end, unique on the host and at most 15 characters; by convention
  // "sx" + 6 hex chars naming the daemon + 7 naming the sandbox, so a daemon
  // can find its own leftovers with ListLinks("sx<daemon>").
  std::string host_ifname;
  std::string sandbox_ifname = "eth0";
  uint32_t host_ip = 0;     // host byte order; also the sandbox's default gateway
  uint32_t sandbox_ip = 0;  // host byte order
  int prefix = 30;
};

// Creates the veth pair with one end inside `netns_fd` (borrowed), named
// cfg.sandbox_ifname, and configures both ends:
//  - inside: IPv6 disabled (all, default, the new link), lo up, the address
//    sandbox_ip/prefix, link up, default route via host_ip;
//  - host: rp_filter=1 (strict), IPv6 disabled, accept_ra=0, the address
//    host_ip/prefix, link up (last, so nothing flows before both ends are set).
// Returns once both ends can pass packets (see WaitOperUp in link.cc), so the
// sandbox's first packets are not dropped. Takes about 1 ms.
// On failure, everything created is removed again. The caller must be on a
// thread in the host's namespace. Register the link with the firewall before
// calling this (Firewall::AddSandbox), so it never carries traffic unfiltered.
Status CreateVeth(int netns_fd, const VethConfig& cfg);

// Deletes a host link (for a veth, both ends). A missing link is success.
Status DeleteLink(std::string_view ifname);

// Names of the host's links starting with `prefix` (for reaping what a
// previous run of the daemon left behind).
Result<std::vector<std::string>> ListLinks(std::string_view prefix);

// True if `name` is usable as an interface name: 1..15 characters from
// [A-Za-z0-9_.-], not "." or "..". Stricter than the kernel, so names can be
// put in nft commands and /proc/sys paths without quoting.
bool ValidIfname(std::string_view name);

}  // namespace sandboxd::net

// The veth pair that attaches a sandbox's network namespace to the host, via
// rtnetlink (libnl-route-3). The host end is a plain routed interface with a
// /30: there is no bridge, and the firewall (firewall.h) makes sure the host
// never forwards anything from it.
//
// Two shapes of the namespace's side:
//  - the sandbox's processes live in the namespace (namespaces backend): its
//    end is their eth0, with the sandbox address and the default route;
//  - a guest with its own network stack lives behind a tap device in the
//    namespace (microVM backend: QEMU's netns, `guest_tap`): the veth's end
//    there gets no address at all, and two tc ingress redirects join it and
//    the tap, so the guest's frames leave through the veth unchanged and the
//    guest itself owns the sandbox address. The namespace's own stack never
//    sees a packet (and has no address to answer with), so there is nothing
//    to route, forward or answer ARP for in between: the host rules judge the
//    guest's packets exactly as a namespace sandbox's.
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
  // Non-empty: the name of an existing tap device inside the namespace that
  // carries a guest's traffic (see above). sandbox_ifname is then only the
  // veth end beside it, never configured with an address.
  std::string guest_tap;
};

// Creates the veth pair with one end inside `netns_fd` (borrowed), named
// cfg.sandbox_ifname, and configures both ends:
//  - inside: IPv6 disabled (all, default, the new link), lo up, the address
//    sandbox_ip/prefix, link up, default route via host_ip;
//  - inside, with guest_tap instead: IPv6 disabled (all, default: the tap
//    too), no address, an ingress qdisc on the veth end and on the tap;
//    everything arriving on the veth end is redirected to the tap, and from
//    the tap only IPv4 and ARP frames are redirected to the veth end (any
//    other protocol dies in the namespace, whose stack has no address); both
//    up;
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

// The names of the links inside `netns_fd` (borrowed), for tests and leak
// checks.
Result<std::vector<std::string>> ListLinksIn(int netns_fd);

// Names of the host's links starting with `prefix` (for reaping what a
// previous run of the daemon left behind).
Result<std::vector<std::string>> ListLinks(std::string_view prefix);

// True if `name` is usable as an interface name: 1..15 characters from
// [A-Za-z0-9_.-], not "." or "..". Stricter than the kernel, so names can be
// put in nft commands and /proc/sys paths without quoting.
bool ValidIfname(std::string_view name);

}  // namespace sandboxd::net

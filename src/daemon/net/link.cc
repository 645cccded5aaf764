#include "daemon/net/link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/tc_act/tc_mirred.h>
#include <net/if.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/act/mirred.h>
#include <netlink/route/action.h>
#include <netlink/route/addr.h>
#include <netlink/route/classifier.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <memory>
#include <thread>
#include <utility>

#include "common/fd.h"
#include "daemon/net/netns.h"
#include "daemon/net/subnet.h"

namespace sandboxd::net {
namespace {

// Owners for libnl objects (reference counted on libnl's side).
struct NlSockDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct LinkDeleter {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct AddrDeleter {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct NlAddrDeleter {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct RouteDeleter {
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }
};
struct CacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
struct QdiscDeleter {
  void operator()(rtnl_qdisc* q) const { rtnl_qdisc_put(q); }
};
struct ClsDeleter {
  void operator()(rtnl_cls* c) const { rtnl_cls_put(c); }
};
struct ActDeleter {
  void operator()(rtnl_act* a) const { rtnl_act_put(a); }
};
using NlSock = std::unique_ptr<nl_sock, NlSockDeleter>;
using Link = std::unique_ptr<rtnl_link, LinkDeleter>;
using Addr = std::unique_ptr<rtnl_addr, AddrDeleter>;
using NlAddr = std::unique_ptr<nl_addr, NlAddrDeleter>;
using Route = std::unique_ptr<rtnl_route, RouteDeleter>;
using Cache = std::unique_ptr<nl_cache, CacheDeleter>;
using Qdisc = std::unique_ptr<rtnl_qdisc, QdiscDeleter>;
using Cls = std::unique_ptr<rtnl_cls, ClsDeleter>;
using Act = std::unique_ptr<rtnl_act, ActDeleter>;

// libnl reports its own error numbers (already mapped from errno, lossy);
// map the ones callers may care about back.
Error NlError(const std::string& what, int nlerr) {
  static constexpr std::pair<int, int> kErrno[] = {
      {NLE_EXIST, EEXIST},         {NLE_OBJ_NOTFOUND, ENOENT},  {NLE_NODEV, ENODEV},
      {NLE_PERM, EPERM},           {NLE_NOACCESS, EPERM},       {NLE_BUSY, EBUSY},
      {NLE_INVAL, EINVAL},         {NLE_RANGE, ERANGE},         {NLE_NOMEM, ENOMEM},
      {NLE_OPNOTSUPP, EOPNOTSUPP}, {NLE_NOADDR, EADDRNOTAVAIL},
  };
  int code = EIO;
  for (const auto& [nle, err] : kErrno) {
    if (nle == (nlerr < 0 ? -nlerr : nlerr)) code = err;
  }
  return Error{code, what + ": " + nl_geterror(nlerr)};
}

// A rtnetlink socket in the calling thread's network namespace.
Result<NlSock> Connect() {
  NlSock sk(nl_socket_alloc());
  if (!sk) return FailMsg("nl_socket_alloc failed");
  if (int err = nl_connect(sk.get(), NETLINK_ROUTE); err < 0) {
    return std::unexpected(NlError("netlink connect", err));
  }
  return sk;
}

Result<NlAddr> MakeAddr(uint32_t ip, int prefix) {
  const uint32_t be = htonl(ip);
  NlAddr a(nl_addr_build(AF_INET, &be, sizeof be));
  if (!a) return FailMsg("nl_addr_build failed");
  nl_addr_set_prefixlen(a.get(), prefix);
  return a;
}

Result<Link> GetLink(nl_sock* sk, const std::string& ifname) {
  rtnl_link* raw = nullptr;
  if (int err = rtnl_link_get_kernel(sk, 0, ifname.c_str(), &raw); err < 0) {
    return std::unexpected(NlError("looking up link " + ifname, err));
  }
  return Link(raw);
}

Status SetUp(nl_sock* sk, rtnl_link* link) {
  Link change(rtnl_link_alloc());
  if (!change) return FailMsg("rtnl_link_alloc failed");
  rtnl_link_set_flags(change.get(), IFF_UP);
  if (int err = rtnl_link_change(sk, link, change.get(), 0); err < 0) {
    return std::unexpected(
        NlError(std::string("setting ") + rtnl_link_get_name(link) + " up", err));
  }
  return {};
}

Status AddAddress(nl_sock* sk, int ifindex, uint32_t ip, int prefix, const std::string& ifname) {
  Addr addr(rtnl_addr_alloc());
  if (!addr) return FailMsg("rtnl_addr_alloc failed");
  auto local = MakeAddr(ip, prefix);
  if (!local) return std::unexpected(local.error());
  rtnl_addr_set_ifindex(addr.get(), ifindex);
  if (int err = rtnl_addr_set_local(addr.get(), local->get()); err < 0) {
    return std::unexpected(NlError("rtnl_addr_set_local", err));
  }
  if (int err = rtnl_addr_add(sk, addr.get(), 0); err < 0) {
    return std::unexpected(NlError(
        "adding " + Ipv4ToString(ip) + "/" + std::to_string(prefix) + " to " + ifname, err));
  }
  return {};
}

Status AddDefaultRoute(nl_sock* sk, int ifindex, uint32_t gateway) {
  Route route(rtnl_route_alloc());
  if (!route) return FailMsg("rtnl_route_alloc failed");
  auto dst = MakeAddr(0, 0);
  auto gw = MakeAddr(gateway, 32);
  if (!dst) return std::unexpected(dst.error());
  if (!gw) return std::unexpected(gw.error());
  rtnl_route_set_family(route.get(), AF_INET);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
  rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
  rtnl_route_set_type(route.get(), RTN_UNICAST);
  if (int err = rtnl_route_set_dst(route.get(), dst->get()); err < 0) {
    return std::unexpected(NlError("rtnl_route_set_dst", err));
  }
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  if (!nh) return FailMsg("rtnl_route_nh_alloc failed");
  rtnl_route_nh_set_ifindex(nh, ifindex);
  rtnl_route_nh_set_gateway(nh, gw->get());
  rtnl_route_add_nexthop(route.get(), nh);  // the route owns nh from here
  if (int err = rtnl_route_add(sk, route.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
    return std::unexpected(NlError("adding default route via " + Ipv4ToString(gateway), err));
  }
  return {};
}

// Writes a sysctl of the calling thread's network namespace (/proc/sys/net is
// resolved per thread). With `optional`, a missing file is fine: that is how a
// kernel without IPv6 looks.
Status WriteSysctl(const std::string& path, std::string_view value, bool optional = false) {
  const std::string full = "/proc/sys/net/" + path;
  UniqueFd fd(::open(full.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) {
    if (optional && errno == ENOENT) return {};
    return FailErrno("open " + full);
  }
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return FailErrno("write " + full);
  }
  return {};
}

// Waits until the kernel has finished bringing `ifname` up. A veth end whose
// carrier comes on because its peer went up is activated asynchronously (by
// the kernel's linkwatch work); until then its queueing discipline is the
// "noop" one, which drops every packet it is given. Without this wait, a
// sandbox's first packets (its ARP request, its first SYN) may be lost and
// cost it a retransmission timeout. linkwatch runs under the RTNL lock, and
// so does (or, on newer kernels, syncs) RTM_GETLINK, so operstate UP seen
// here means the activation is complete.
Status WaitOperUp(nl_sock* sk, const std::string& ifname) {
  constexpr uint8_t kOperUp = 6;  // IF_OPER_UP (RFC 2863); <linux/if.h> clashes with <net/if.h>
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  auto delay = std::chrono::microseconds(20);
  for (;;) {
    auto link = GetLink(sk, ifname);
    if (!link) return std::unexpected(link.error());
    if (rtnl_link_get_operstate(link->get()) == kOperUp) return {};
    if (Clock::now() > deadline) return FailMsg(ifname + " did not come up");
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::microseconds(5000));
  }
}

// An ingress qdisc (handle ffff:) on `ifindex`, where ingress filters hang.
Status AddIngressQdisc(nl_sock* sk, int ifindex, const std::string& ifname) {
  Qdisc q(rtnl_qdisc_alloc());
  if (!q) return FailMsg("rtnl_qdisc_alloc failed");
  rtnl_tc_set_ifindex(TC_CAST(q.get()), ifindex);
  rtnl_tc_set_parent(TC_CAST(q.get()), TC_H_INGRESS);
  rtnl_tc_set_handle(TC_CAST(q.get()), TC_HANDLE(0xffff, 0));
  if (int err = rtnl_tc_set_kind(TC_CAST(q.get()), "ingress"); err < 0) {
    return std::unexpected(NlError("ingress qdisc kind", err));
  }
  if (int err = rtnl_qdisc_add(sk, q.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
    return std::unexpected(NlError("adding an ingress qdisc to " + ifname, err));
  }
  return {};
}

// An ingress filter on `from` that steals every frame of `protocol` (an
// ETH_P_* value; ETH_P_ALL for any) and hands it to `to`'s transmit path
// unchanged: u32 matching everything + mirred egress redirect. (u32, not
// matchall: some kernels are built without cls_matchall.)
Status AddRedirect(nl_sock* sk, int from, int to, uint16_t protocol, uint16_t prio,
                   const std::string& what) {
  Cls cls(rtnl_cls_alloc());
  Act act(rtnl_act_alloc());
  if (!cls || !act) return FailMsg("rtnl_cls_alloc/rtnl_act_alloc failed");
  if (int err = rtnl_tc_set_kind(TC_CAST(act.get()), "mirred"); err < 0) {
    return std::unexpected(NlError("mirred kind", err));
  }
  rtnl_mirred_set_action(act.get(), TCA_EGRESS_REDIR);
  rtnl_mirred_set_policy(act.get(), TC_ACT_STOLEN);
  rtnl_mirred_set_ifindex(act.get(), static_cast<uint32_t>(to));
  rtnl_tc_set_ifindex(TC_CAST(cls.get()), from);
  rtnl_tc_set_parent(TC_CAST(cls.get()), TC_HANDLE(0xffff, 0));
  if (int err = rtnl_tc_set_kind(TC_CAST(cls.get()), "u32"); err < 0) {
    return std::unexpected(NlError("u32 kind", err));
  }
  rtnl_cls_set_prio(cls.get(), prio);
  rtnl_cls_set_protocol(cls.get(), protocol);
  int err = rtnl_u32_add_key_uint32(cls.get(), 0, 0, 0, 0);  // value 0 under mask 0: every frame
  if (err >= 0) err = rtnl_u32_set_cls_terminal(cls.get());
  if (err >= 0) err = rtnl_u32_add_action(cls.get(), act.get());  // takes its own reference
  if (err < 0) return std::unexpected(NlError("building the " + what + " filter", err));
  if (err = rtnl_cls_add(sk, cls.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
    return std::unexpected(NlError("adding the " + what + " filter", err));
  }
  return {};
}

// The namespace side for a guest behind `cfg.guest_tap`: the veth end and the
// tap joined by redirects both ways, no address anywhere. Filters before the
// links go up, so no frame ever passes unfiltered into the namespace's stack.
Status JoinGuestTap(const VethConfig& cfg, nl_sock* inner) {
  auto veth_end = GetLink(inner, cfg.sandbox_ifname);
  if (!veth_end) return std::unexpected(veth_end.error());
  auto tap = GetLink(inner, cfg.guest_tap);
  if (!tap) return std::unexpected(tap.error());
  const int veth_index = rtnl_link_get_ifindex(veth_end->get());
  const int tap_index = rtnl_link_get_ifindex(tap->get());
  SBX_TRY(AddIngressQdisc(inner, veth_index, cfg.sandbox_ifname));
  SBX_TRY(AddIngressQdisc(inner, tap_index, cfg.guest_tap));
  SBX_TRY(AddRedirect(inner, veth_index, tap_index, ETH_P_ALL, 1, "host-to-guest"));
  // Only what the host side speaks: the sandbox network is IPv4 (the host
  // drops IPv6 anyway) and needs ARP. Other ethertypes a guest's root can
  // craft (VLAN tags, LLDP, ...) never reach the host.
  SBX_TRY(AddRedirect(inner, tap_index, veth_index, ETH_P_IP, 1, "guest-to-host IPv4"));
  SBX_TRY(AddRedirect(inner, tap_index, veth_index, ETH_P_ARP, 2, "guest-to-host ARP"));
  SBX_TRY(SetUp(inner, tap->get()));
  return SetUp(inner, veth_end->get());
}

// Creates the pair through `inner` (a socket in the sandbox's namespace): the
// sandbox end is made there, the host end in `host_netns`. Sets `created` as
// soon as the pair exists.
Status ConfigureLinks(const VethConfig& cfg, nl_sock* inner, int host_netns, bool& created) {
  Link veth(rtnl_link_veth_alloc());
  if (!veth) return FailMsg("rtnl_link_veth_alloc failed");
  rtnl_link_set_name(veth.get(), cfg.sandbox_ifname.c_str());
  {
    Link peer(rtnl_link_veth_get_peer(veth.get()));  // a new reference
    rtnl_link_set_name(peer.get(), cfg.host_ifname.c_str());
    rtnl_link_set_ns_fd(peer.get(), host_netns);
  }
  if (int err = rtnl_link_add(inner, veth.get(), NLM_F_CREATE | NLM_F_EXCL); err < 0) {
    return std::unexpected(
        NlError("creating veth " + cfg.host_ifname + " <-> " + cfg.sandbox_ifname, err));
  }
  created = true;

  if (!cfg.guest_tap.empty()) {
    SBX_TRY(JoinGuestTap(cfg, inner));
  } else {
    // Sandbox end: up before the host end, so its route can be added (the
    // kernel wants the device up; the missing carrier is fine).
    auto lo = GetLink(inner, "lo");
    if (!lo) return std::unexpected(lo.error());
    SBX_TRY(SetUp(inner, lo->get()));
    auto sandbox_end = GetLink(inner, cfg.sandbox_ifname);
    if (!sandbox_end) return std::unexpected(sandbox_end.error());
    const int index = rtnl_link_get_ifindex(sandbox_end->get());
    SBX_TRY(AddAddress(inner, index, cfg.sandbox_ip, cfg.prefix, cfg.sandbox_ifname));
    SBX_TRY(SetUp(inner, sandbox_end->get()));
    SBX_TRY(AddDefaultRoute(inner, index, cfg.host_ip));
  }

  // Host end (this thread is in the host's namespace). Sysctls before the
  // link goes up: no IPv6 address is ever configured on it.
  SBX_TRY(WriteSysctl("ipv6/conf/" + cfg.host_ifname + "/disable_ipv6", "1", true));
  SBX_TRY(WriteSysctl("ipv6/conf/" + cfg.host_ifname + "/accept_ra", "0", true));
  SBX_TRY(WriteSysctl("ipv4/conf/" + cfg.host_ifname + "/rp_filter", "1"));
  auto host_sk = Connect();
  if (!host_sk) return std::unexpected(host_sk.error());
  auto host_end = GetLink(host_sk->get(), cfg.host_ifname);
  if (!host_end) return std::unexpected(host_end.error());
  SBX_TRY(AddAddress(host_sk->get(), rtnl_link_get_ifindex(host_end->get()), cfg.host_ip,
                     cfg.prefix, cfg.host_ifname));
  SBX_TRY(SetUp(host_sk->get(), host_end->get()));
  // The host end was activated synchronously (its carrier was on when it
  // went up); the sandbox end gets its carrier now and is activated later.
  // (A tap has carrier from the moment its owner attached to it, so going up
  // activated it at once: nothing to wait for on that side.)
  return WaitOperUp(inner, cfg.sandbox_ifname);
}

}  // namespace

bool ValidIfname(std::string_view name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == "..") return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status CreateVeth(int netns_fd, const VethConfig& cfg) {
  if (!ValidIfname(cfg.host_ifname) || !ValidIfname(cfg.sandbox_ifname) ||
      (!cfg.guest_tap.empty() &&
       (!ValidIfname(cfg.guest_tap) || cfg.guest_tap == cfg.sandbox_ifname))) {
    return FailMsg("creating veth: bad interface name \"" + cfg.host_ifname + "\", \"" +
                   cfg.sandbox_ifname + "\" or \"" + cfg.guest_tap + "\"");
  }
  if (cfg.prefix < 1 || cfg.prefix > 30) return FailMsg("creating veth: bad prefix length");
  auto host_netns = OpenCurrentNetns();
  if (!host_netns) return std::unexpected(host_netns.error());

  // The only work that must run in the sandbox's namespace: its sysctls
  // (/proc/sys/net follows the calling thread) and the netlink socket, which
  // keeps that namespace for the rest of the work done from this thread.
  NlSock inner;
  SBX_TRY(RunInNetns(netns_fd, [&]() -> Status {
    // New links copy ipv6/conf/default, so with this set first the sandbox
    // end never gets an IPv6 (link-local) address; `all` covers lo.
    SBX_TRY(WriteSysctl("ipv6/conf/all/disable_ipv6", "1", true));
    SBX_TRY(WriteSysctl("ipv6/conf/default/disable_ipv6", "1", true));
    auto sk = Connect();
    if (!sk) return std::unexpected(sk.error().Wrap("in sandbox netns"));
    inner = std::move(*sk);
    return {};
  }));

  bool created = false;
  Status st = ConfigureLinks(cfg, inner.get(), host_netns->get(), created);
  if (!st && created) {
    // Deleting either end of a veth deletes the pair.
    if (auto del = DeleteLink(cfg.host_ifname); !del) {
      return std::unexpected(st.error().Wrap("(and cleanup failed: " + del.error().message + ")"));
    }
  }
  if (!st) return std::unexpected(st.error().Wrap("creating veth " + cfg.host_ifname));
  return {};
}

Status DeleteLink(std::string_view ifname) {
  if (!ValidIfname(ifname))
    return FailMsg("deleting link: bad name \"" + std::string(ifname) + "\"");
  auto sk = Connect();
  if (!sk) return std::unexpected(sk.error());
  Link link(rtnl_link_alloc());
  if (!link) return FailMsg("rtnl_link_alloc failed");
  const std::string name(ifname);
  rtnl_link_set_name(link.get(), name.c_str());
  if (int err = rtnl_link_delete(sk->get(), link.get()); err < 0) {
    if (err == -NLE_NODEV || err == -NLE_OBJ_NOTFOUND) return {};
    return std::unexpected(NlError("deleting link " + name, err));
  }
  return {};
}

namespace {
Result<std::vector<std::string>> LinkNames(nl_sock* sk, std::string_view prefix) {
  nl_cache* raw = nullptr;
  if (int err = rtnl_link_alloc_cache(sk, AF_UNSPEC, &raw); err < 0) {
    return std::unexpected(NlError("listing links", err));
  }
  Cache cache(raw);
  std::vector<std::string> names;
  for (nl_object* obj = nl_cache_get_first(cache.get()); obj; obj = nl_cache_get_next(obj)) {
    const char* name = rtnl_link_get_name(reinterpret_cast<rtnl_link*>(obj));
    if (name && std::string_view(name).starts_with(prefix)) names.emplace_back(name);
  }
  return names;
}
}  // namespace

Result<std::vector<std::string>> ListLinks(std::string_view prefix) {
  auto sk = Connect();
  if (!sk) return std::unexpected(sk.error());
  return LinkNames(sk->get(), prefix);
}

Result<std::vector<std::string>> ListLinksIn(int netns_fd) {
  NlSock inner;
  SBX_TRY(RunInNetns(netns_fd, [&]() -> Status {
    auto sk = Connect();
    if (!sk) return std::unexpected(sk.error());
    inner = std::move(*sk);
    return {};
  }));
  return LinkNames(inner.get(), "");
}

}  // namespace sandboxd::net

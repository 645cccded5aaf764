#include "daemon/net/link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <functional>
#include <vector>
#include <fstream>
#include <sstream>
#include <string>

#include "daemon/net/netns.h"
#include "daemon/net/subnet.h"
#include "daemon/net/test_frames.h"
#include "daemon/net/test_netns.h"

namespace sandboxd::net {
namespace {

using testing::ArpRequest;
using testing::EtherType;
using testing::EthHeader;
using testing::Frame;
using testing::kBroadcast;
using testing::MakeTap;
using testing::NewNetns;
using testing::ReadFrame;
using testing::UdpFrame;
using testing::UniqueName;

struct IfState {
  bool exists = false;
  bool up = false;
  uint32_t addr = 0;  // host byte order; 0 if none
  int prefix = -1;
};

// Queries a link through an AF_INET socket: ioctls act on the socket's netns.
IfState QueryIf(int sock, const std::string& name) {
  IfState st;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(sock, SIOCGIFFLAGS, &ifr) != 0) return st;
  st.exists = true;
  st.up = ifr.ifr_flags & IFF_UP;
  if (::ioctl(sock, SIOCGIFADDR, &ifr) == 0) {
    st.addr = ntohl(reinterpret_cast<sockaddr_in*>(&ifr.ifr_addr)->sin_addr.s_addr);
    if (::ioctl(sock, SIOCGIFNETMASK, &ifr) == 0) {
      st.prefix =
          __builtin_popcount(reinterpret_cast<sockaddr_in*>(&ifr.ifr_netmask)->sin_addr.s_addr);
    }
  }
  return st;
}

IfState QueryIfIn(int netns, const std::string& name) {
  auto sock = SocketInNetns(netns, AF_INET, SOCK_DGRAM);
  EXPECT_TRUE(sock) << sock.error().message;
  return sock ? QueryIf(sock->get(), name) : IfState{};
}

IfState QueryHostIf(const std::string& name) {
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  return QueryIf(sock.get(), name);
}

// The calling thread's netns's file under /proc/sys/net (or "" if missing).
std::string ReadSysctl(const std::string& path) {
  std::ifstream in("/proc/sys/net/" + path);
  std::string s;
  std::getline(in, s);
  return s;
}

std::string ReadSysctlIn(int netns, const std::string& path) {
  std::string value;
  EXPECT_TRUE(RunInNetns(netns, [&]() -> Status {
    value = ReadSysctl(path);
    return {};
  }));
  return value;
}

// The IPv4 default route's (device, gateway) inside `netns`, from
// /proc/thread-self/net/route (not /proc/net, which follows the main thread).
std::pair<std::string, uint32_t> DefaultRouteIn(int netns) {
  std::pair<std::string, uint32_t> found;
  EXPECT_TRUE(RunInNetns(netns, [&]() -> Status {
    std::ifstream in("/proc/thread-self/net/route");
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string iface, dst, gw;
      fields >> iface >> dst >> gw;
      if (dst == "00000000") {
        // Fields are in network byte order, printed as a native-endian u32.
        found = {iface, ntohl(static_cast<uint32_t>(std::stoul(gw, nullptr, 16)))};
      }
    }
    return {};
  }));
  return found;
}

class VethTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    auto ns = NewNetns();
    ASSERT_TRUE(ns) << ns.error().message;
    netns_ = std::move(*ns);
    const uint32_t base = testing::RandomTestSubnet24();
    cfg_.host_ifname = UniqueName("sxt") + "v";
    cfg_.host_ip = base + 1;
    cfg_.sandbox_ip = base + 2;
  }
  void TearDown() override {
    if (!cfg_.host_ifname.empty()) (void)DeleteLink(cfg_.host_ifname);
  }

  UniqueFd netns_;
  VethConfig cfg_;
};

TEST_F(VethTest, CreatesConfiguredPairAndDeletesIt) {
  auto st = CreateVeth(netns_.get(), cfg_);
  ASSERT_TRUE(st) << st.error().message;

  // Inside: eth0 with the address, up; lo up; default route via the host end.
  const IfState eth0 = QueryIfIn(netns_.get(), "eth0");
  EXPECT_TRUE(eth0.exists);
  EXPECT_TRUE(eth0.up);
  EXPECT_EQ(Ipv4ToString(eth0.addr), Ipv4ToString(cfg_.sandbox_ip));
  EXPECT_EQ(eth0.prefix, 30);
  EXPECT_TRUE(QueryIfIn(netns_.get(), "lo").up);
  const auto [dev, gw] = DefaultRouteIn(netns_.get());
  EXPECT_EQ(dev, "eth0");
  EXPECT_EQ(Ipv4ToString(gw), Ipv4ToString(cfg_.host_ip));
  EXPECT_FALSE(QueryIfIn(netns_.get(), cfg_.host_ifname).exists) << "host end leaked into netns";
  if (::access("/proc/sys/net/ipv6", F_OK) == 0) {
    EXPECT_EQ(ReadSysctlIn(netns_.get(), "ipv6/conf/eth0/disable_ipv6"), "1");
    EXPECT_EQ(ReadSysctlIn(netns_.get(), "ipv6/conf/all/disable_ipv6"), "1");
    EXPECT_EQ(ReadSysctlIn(netns_.get(), "ipv6/conf/default/disable_ipv6"), "1");
  }

  // Host end: address, up, strict rp_filter, no IPv6.
  const IfState host = QueryHostIf(cfg_.host_ifname);
  EXPECT_TRUE(host.exists);
  EXPECT_TRUE(host.up);
  EXPECT_EQ(Ipv4ToString(host.addr), Ipv4ToString(cfg_.host_ip));
  EXPECT_EQ(host.prefix, 30);
  EXPECT_FALSE(QueryHostIf("eth0").addr == cfg_.sandbox_ip) << "sandbox end on the host";
  EXPECT_EQ(ReadSysctl("ipv4/conf/" + cfg_.host_ifname + "/rp_filter"), "1");
  if (::access("/proc/sys/net/ipv6", F_OK) == 0) {
    EXPECT_EQ(ReadSysctl("ipv6/conf/" + cfg_.host_ifname + "/disable_ipv6"), "1");
    EXPECT_EQ(ReadSysctl("ipv6/conf/" + cfg_.host_ifname + "/accept_ra"), "0");
  }

  auto listed = ListLinks(UniqueName("sxt"));
  ASSERT_TRUE(listed) << listed.error().message;
  EXPECT_EQ(*listed, std::vector<std::string>{cfg_.host_ifname});

  ASSERT_TRUE(DeleteLink(cfg_.host_ifname));
  EXPECT_EQ(::if_nametoindex(cfg_.host_ifname.c_str()), 0u);
  EXPECT_FALSE(QueryIfIn(netns_.get(), "eth0").exists);
  EXPECT_TRUE(DeleteLink(cfg_.host_ifname)) << "deleting a missing link is success";
  listed = ListLinks(UniqueName("sxt"));
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty());
}

TEST_F(VethTest, FailureMidwayLeavesNothing) {
  // The sandbox end's /30 does not contain the gateway: the pair gets created
  // and configured up to the default route, which the kernel refuses.
  cfg_.sandbox_ip = cfg_.host_ip + 5;
  auto st = CreateVeth(netns_.get(), cfg_);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("default route"), std::string::npos) << st.error().message;
  EXPECT_EQ(::if_nametoindex(cfg_.host_ifname.c_str()), 0u);
  EXPECT_FALSE(QueryIfIn(netns_.get(), "eth0").exists);
}

TEST_F(VethTest, NameClashLeavesTheExistingLinkAlone) {
  ASSERT_TRUE(CreateVeth(netns_.get(), cfg_));
  auto other = NewNetns();
  ASSERT_TRUE(other);
  auto st = CreateVeth(other->get(), cfg_);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EEXIST) << st.error().message;
  EXPECT_TRUE(QueryHostIf(cfg_.host_ifname).up) << "the first pair must survive";
  EXPECT_TRUE(QueryIfIn(netns_.get(), "eth0").up);
  EXPECT_FALSE(QueryIfIn(other->get(), "eth0").exists);
}

TEST_F(VethTest, RejectsBadNames) {
  for (const char* bad : {"", "0123456789abcdef", "a/b", "a b", "..", "x\"y"}) {
    VethConfig cfg = cfg_;
    cfg.host_ifname = bad;
    EXPECT_FALSE(CreateVeth(netns_.get(), cfg)) << bad;
  }
  EXPECT_FALSE(DeleteLink("a/b"));
}

// ---- a guest behind a tap (the microVM backend's shape) ----

TEST_F(VethTest, GuestTapIsJoinedToTheLinkAndNothingElse) {
  auto tap = MakeTap(netns_.get(), "tap0");
  ASSERT_TRUE(tap) << tap.error().message;
  cfg_.sandbox_ifname = "uplink";
  cfg_.guest_tap = "tap0";
  auto st = CreateVeth(netns_.get(), cfg_);
  ASSERT_TRUE(st) << st.error().message;

  // The namespace: the tap and the veth end, both up, no address, no route,
  // no IPv6: its own stack has nothing to answer or route with.
  for (const char* name : {"uplink", "tap0"}) {
    const IfState i = QueryIfIn(netns_.get(), name);
    EXPECT_TRUE(i.exists && i.up) << name;
    EXPECT_EQ(i.addr, 0u) << name;
  }
  EXPECT_EQ(DefaultRouteIn(netns_.get()).first, "");
  if (::access("/proc/sys/net/ipv6", F_OK) == 0) {
    EXPECT_EQ(ReadSysctlIn(netns_.get(), "ipv6/conf/tap0/disable_ipv6"), "1");
  }
  auto inside = ListLinksIn(netns_.get());
  ASSERT_TRUE(inside) << inside.error().message;
  std::sort(inside->begin(), inside->end());
  EXPECT_EQ(*inside, (std::vector<std::string>{"lo", "tap0", "uplink"}));
  EXPECT_EQ(Ipv4ToString(QueryHostIf(cfg_.host_ifname).addr), Ipv4ToString(cfg_.host_ip));

  // What leaves the host end, seen from the host.
  UniqueFd sniff(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL)));
  ASSERT_TRUE(sniff) << strerror(errno);
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = static_cast<int>(::if_nametoindex(cfg_.host_ifname.c_str()));
  ASSERT_EQ(::bind(sniff.get(), reinterpret_cast<sockaddr*>(&sll), sizeof sll), 0);

  // ARP through the tap reaches the host, and its answer comes back to the
  // guest: both redirects work, frames unchanged.
  Frame req = ArpRequest(cfg_.sandbox_ip, cfg_.host_ip);
  ASSERT_EQ(::write(tap->get(), req.data(), req.size()), static_cast<ssize_t>(req.size()));
  Frame seen = ReadFrame(sniff.get(), 2000, [&](const Frame& f) { return f == req; });
  EXPECT_FALSE(seen.empty()) << "the guest's ARP request did not reach the host end unchanged";
  Frame reply = ReadFrame(tap->get(), 2000, testing::IsArpReply);
  ASSERT_FALSE(reply.empty()) << "no ARP reply reached the guest";
  const testing::Mac host_mac = testing::ArpSender(reply);

  // IPv4 from the guest's address reaches a socket on the host end's address.
  UniqueFd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_in local{.sin_family = AF_INET, .sin_port = 0};
  local.sin_addr.s_addr = htonl(cfg_.host_ip);
  ASSERT_EQ(::bind(udp.get(), reinterpret_cast<sockaddr*>(&local), sizeof local), 0);
  socklen_t len = sizeof local;
  ASSERT_EQ(::getsockname(udp.get(), reinterpret_cast<sockaddr*>(&local), &len), 0);
  Frame dgram = UdpFrame(host_mac, cfg_.sandbox_ip, cfg_.host_ip, ntohs(local.sin_port), "hello");
  ASSERT_EQ(::write(tap->get(), dgram.data(), dgram.size()), static_cast<ssize_t>(dgram.size()));
  pollfd p{udp.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 2000), 1) << "the guest's datagram did not arrive";
  char buf[16];
  sockaddr_in from{};
  len = sizeof from;
  ssize_t n = ::recvfrom(udp.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "hello");
  EXPECT_EQ(Ipv4ToString(ntohl(from.sin_addr.s_addr)), Ipv4ToString(cfg_.sandbox_ip));

  // Other protocols a guest's root can craft stay in the namespace.
  for (uint16_t type : {uint16_t{0x86dd}, uint16_t{0x88b5}, uint16_t{0x8100}}) {
    Frame odd = EthHeader(kBroadcast, type);
    odd.resize(60, 0x5b);
    ASSERT_EQ(::write(tap->get(), odd.data(), odd.size()), static_cast<ssize_t>(odd.size()));
    Frame leaked =
        ReadFrame(sniff.get(), 300, [&](const Frame& f) { return EtherType(f) == type; });
    EXPECT_TRUE(leaked.empty()) << "ethertype 0x" << std::hex << type << " reached the host";
  }

  // The tap is the guest's: the pair goes, the tap stays with its owner.
  ASSERT_TRUE(DeleteLink(cfg_.host_ifname));
  EXPECT_FALSE(QueryIfIn(netns_.get(), "uplink").exists);
  EXPECT_TRUE(QueryIfIn(netns_.get(), "tap0").exists);
}

TEST_F(VethTest, GuestTapThatDoesNotExistLeavesNothing) {
  cfg_.sandbox_ifname = "uplink";
  cfg_.guest_tap = "tap0";
  auto st = CreateVeth(netns_.get(), cfg_);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("tap0"), std::string::npos) << st.error().message;
  EXPECT_EQ(::if_nametoindex(cfg_.host_ifname.c_str()), 0u);
  EXPECT_FALSE(QueryIfIn(netns_.get(), "uplink").exists);
}

TEST(Netns, SocketInNetnsStaysInItsNamespace) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  auto ns = NewNetns();
  ASSERT_TRUE(ns) << ns.error().message;
  auto sock = SocketInNetns(ns->get(), AF_INET, SOCK_DGRAM);
  ASSERT_TRUE(sock) << sock.error().message;
  // The new namespace has only lo (down): no route anywhere.
  sockaddr_in dst{.sin_family = AF_INET, .sin_port = htons(53)};
  dst.sin_addr.s_addr = htonl(0x08080808);
  EXPECT_NE(::connect(sock->get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst), 0);
  EXPECT_EQ(errno, ENETUNREACH);
  EXPECT_FALSE(QueryIf(sock->get(), "lo").up);
  EXPECT_FALSE(RunInNetns(-1, [] { return Status{}; }));
}

}  // namespace
}  // namespace sandboxd::net

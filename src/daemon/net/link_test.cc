#include "daemon/net/link.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "daemon/net/netns.h"
#include "daemon/net/subnet.h"
#include "daemon/net/test_netns.h"

namespace sandboxd::net {
namespace {

using testing::NewNetns;
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

// End-to-end checks of the firewall with real namespaces, links and sockets:
// a TCP listener on the host plays the egress proxy, a UDP socket the DNS
// resolver, and sockets made with SocketInNetns play the sandboxes.
#include "daemon/net/firewall.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <linux/netfilter_ipv4.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/if_ether.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "daemon/net/link.h"
#include "daemon/net/netns.h"
#include "daemon/net/sock_diag.h"
#include "daemon/net/subnet.h"
#include "daemon/net/test_frames.h"
#include "daemon/net/test_netns.h"

namespace sandboxd::net {
namespace {

using std::chrono::milliseconds;
using testing::NewNetns;
using testing::UniqueName;

// How long a negative check ("nothing arrives") waits. Every positive path in
// these tests completes in well under a millisecond; this bounds the test time.
constexpr int kQuietMs = 250;
// Upper bound for things that must happen "at once" (refusals).
constexpr int kPromptMs = 1000;

sockaddr_in Sin(uint32_t ip, uint16_t port) {
  sockaddr_in sin{.sin_family = AF_INET, .sin_port = htons(port)};
  sin.sin_addr.s_addr = htonl(ip);
  return sin;
}

uint32_t Ip(const char* dotted) {
  in_addr in{};
  ::inet_pton(AF_INET, dotted, &in);
  return ntohl(in.s_addr);
}

bool WaitFor(int fd, short events, int timeout_ms) {
  pollfd p{.fd = fd, .events = events};
  return ::poll(&p, 1, timeout_ms) == 1;
}

UniqueFd HostSocket(int type) {
  UniqueFd fd(::socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in any = Sin(INADDR_ANY, 0);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&any), sizeof any), 0);
  if (type == SOCK_STREAM) {
    EXPECT_EQ(::listen(fd.get(), 16), 0);
  }
  return fd;
}

uint16_t LocalPort(int fd) {
  sockaddr_in sin{};
  socklen_t len = sizeof sin;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  return ntohs(sin.sin_port);
}

// Non-blocking connect bounded by `timeout_ms`: 0 on success, else the errno
// (ETIMEDOUT if nothing happened in time).
int ConnectWithin(int fd, uint32_t ip, uint16_t port, int timeout_ms) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  sockaddr_in dst = Sin(ip, port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) == 0) return 0;
  if (errno != EINPROGRESS) return errno;
  if (!WaitFor(fd, POLLOUT, timeout_ms)) return ETIMEDOUT;
  int err = 0;
  socklen_t len = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  return err;
}

// Accepts one connection if one arrives within `timeout_ms`.
UniqueFd AcceptWithin(int listener, int timeout_ms, sockaddr_in* peer = nullptr) {
  if (!WaitFor(listener, POLLIN, timeout_ms)) return {};
  sockaddr_in sin{};
  socklen_t len = sizeof sin;
  UniqueFd fd(::accept4(listener, reinterpret_cast<sockaddr*>(&sin), &len, SOCK_CLOEXEC));
  if (peer) *peer = sin;
  return fd;
}

std::string Endpoint(const sockaddr_in& sin) {
  return Ipv4ToString(ntohl(sin.sin_addr.s_addr)) + ":" + std::to_string(ntohs(sin.sin_port));
}

std::string OriginalDst(int fd) {
  sockaddr_in orig{};
  socklen_t len = sizeof orig;
  if (::getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &orig, &len) != 0) return "error";
  return Endpoint(orig);
}

std::string Shell(const std::string& cmd) {
  std::string out;
  std::unique_ptr<FILE, int (*)(FILE*)> p(::popen(cmd.c_str(), "r"), ::pclose);
  char buf[4096];
  size_t n;
  while (p && (n = std::fread(buf, 1, sizeof buf, p.get())) > 0) out.append(buf, n);
  return out;
}

std::string ReadHostSysctl(const std::string& path) {
  std::string s = Shell("cat /proc/sys/net/" + path);
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

void WriteHostSysctl(const std::string& path, const std::string& value) {
  FILE* f = std::fopen(("/proc/sys/net/" + path).c_str(), "w");
  ASSERT_TRUE(f) << path;
  std::fputs(value.c_str(), f);
  std::fclose(f);
}

// An IPv4 address of the host's that no test made (e.g. eth0's); 0 if none.
uint32_t HostAddressOutsideTests() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return 0;
  uint32_t found = 0;
  for (ifaddrs* i = list; i && !found; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    if (std::string_view(i->ifa_name).starts_with("sx") || (i->ifa_flags & IFF_LOOPBACK)) continue;
    found = ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
  }
  ::freeifaddrs(list);
  return found;
}

struct Sandbox {
  UniqueFd netns;
  std::string ifname;
  uint32_t host_ip = 0;
  uint32_t sandbox_ip = 0;
};

class FirewallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    proxy_ = HostSocket(SOCK_STREAM);
    dns_ = HostSocket(SOCK_DGRAM);
    table_ = UniqueName("sbxtest_");
    prefix_ = UniqueName("sxf");
    subnet_ = testing::RandomTestSubnet24();
    auto fw = Firewall::Install(table_, LocalPort(proxy_.get()), LocalPort(dns_.get()), prefix_);
    ASSERT_TRUE(fw) << fw.error().message;
    fw_ = std::move(*fw);
  }

  void TearDown() override {
    for (auto& s : sandboxes_) {
      EXPECT_TRUE(DeleteLink(s->ifname));
      if (fw_) {
        EXPECT_TRUE(fw_->RemoveSandbox(s->ifname, s->sandbox_ip));
      }
    }
    if (fw_) {
      EXPECT_TRUE(fw_->Uninstall());
    }
  }

  // A namespace attached through a registered link (block `i` of the subnet).
  // With register_it = false the link is made but never given to AddSandbox.
  Sandbox& AddSandbox(int i, bool outbound, bool register_it = true) {
    auto s = std::make_unique<Sandbox>();
    auto ns = NewNetns();
    if (!ns) {
      ADD_FAILURE() << ns.error().message;
      std::abort();
    }
    s->netns = std::move(*ns);
    s->ifname = prefix_ + static_cast<char>('a' + i);
    s->host_ip = subnet_ + 4 * i + 1;
    s->sandbox_ip = subnet_ + 4 * i + 2;
    if (register_it) {
      auto st = fw_->AddSandbox(s->ifname, s->sandbox_ip, outbound);
      EXPECT_TRUE(st) << st.error().message;
    }
    VethConfig cfg{.host_ifname = s->ifname, .host_ip = s->host_ip, .sandbox_ip = s->sandbox_ip};
    auto st = CreateVeth(s->netns.get(), cfg);
    EXPECT_TRUE(st) << st.error().message;
    sandboxes_.push_back(std::move(s));
    return *sandboxes_.back();
  }

  UniqueFd SandboxSocket(const Sandbox& s, int type) {
    auto fd = SocketInNetns(s.netns.get(), AF_INET, type);
    EXPECT_TRUE(fd) << fd.error().message;
    return fd ? std::move(*fd) : UniqueFd();
  }

  // Connects from `s` to ip:port and expects the connection at the proxy,
  // with ip:port as its original destination.
  void ExpectAtProxy(const Sandbox& s, uint32_t ip, uint16_t port) {
    UniqueFd c = SandboxSocket(s, SOCK_STREAM);
    ASSERT_EQ(ConnectWithin(c.get(), ip, port, kPromptMs), 0) << Ipv4ToString(ip) << ":" << port;
    sockaddr_in peer{};
    UniqueFd a = AcceptWithin(proxy_.get(), kPromptMs, &peer);
    ASSERT_TRUE(a) << "not at the proxy";
    EXPECT_EQ(Ipv4ToString(ntohl(peer.sin_addr.s_addr)), Ipv4ToString(s.sandbox_ip));
    EXPECT_EQ(OriginalDst(a.get()), Ipv4ToString(ip) + ":" + std::to_string(port));
    // Bytes flow both ways, un-NATed on the way back.
    ASSERT_EQ(::send(c.get(), "ping", 4, 0), 4);
    char buf[8] = {};
    ASSERT_TRUE(WaitFor(a.get(), POLLIN, kPromptMs));
    ASSERT_EQ(::recv(a.get(), buf, sizeof buf, 0), 4);
    ASSERT_EQ(::send(a.get(), "pong", 4, 0), 4);
    ASSERT_TRUE(WaitFor(c.get(), POLLIN, kPromptMs));
    ASSERT_EQ(::recv(c.get(), buf, sizeof buf, 0), 4);
    EXPECT_EQ(std::string(buf, 4), "pong");
  }

  UniqueFd proxy_, dns_;
  std::string table_, prefix_;
  uint32_t subnet_ = 0;
  std::unique_ptr<Firewall> fw_;
  std::vector<std::unique_ptr<Sandbox>> sandboxes_;
};

TEST_F(FirewallTest, AnyTcpConnectionLandsAtTheProxyWithItsOriginalDestination) {
  Sandbox& a = AddSandbox(0, true);
  ExpectAtProxy(a, Ip("1.2.3.4"), 80);
  ExpectAtProxy(a, Ip("93.184.216.34"), 443);
  ExpectAtProxy(a, Ip("169.254.169.254"), 80);
}

TEST_F(FirewallTest, DnsGoesToTheResolverAndRepliesComeBack) {
  Sandbox& a = AddSandbox(0, false);  // DNS works without outbound access
  UniqueFd u = SandboxSocket(a, SOCK_DGRAM);
  sockaddr_in dst = Sin(Ip("8.8.8.8"), 53);
  ASSERT_EQ(::connect(u.get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst), 0);
  ASSERT_EQ(::send(u.get(), "query", 5, 0), 5);

  ASSERT_TRUE(WaitFor(dns_.get(), POLLIN, kPromptMs)) << "query not at the resolver";
  char buf[16];
  sockaddr_in from{};
  socklen_t len = sizeof from;
  ASSERT_EQ(::recvfrom(dns_.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len),
            5);
  EXPECT_EQ(Ipv4ToString(ntohl(from.sin_addr.s_addr)), Ipv4ToString(a.sandbox_ip));

  // The reply appears to come from 8.8.8.8:53 (the connected socket accepts it).
  ASSERT_EQ(::sendto(dns_.get(), "answer", 6, 0, reinterpret_cast<sockaddr*>(&from), len), 6);
  ASSERT_TRUE(WaitFor(u.get(), POLLIN, kPromptMs)) << "reply not back in the sandbox";
  ASSERT_EQ(::recv(u.get(), buf, sizeof buf, 0), 6);
  EXPECT_EQ(std::string(buf, 6), "answer");
}

TEST_F(FirewallTest, OtherUdpIsRefusedAtOnce) {
  Sandbox& a = AddSandbox(0, true);
  const uint16_t dns_port = LocalPort(dns_.get());
  for (auto [ip, port] : {std::pair{Ip("8.8.8.8"), uint16_t{1234}},
                          {a.host_ip, uint16_t{1234}},
                          {a.host_ip, dns_port},
                          {Ip("8.8.8.8"), dns_port}}) {
    UniqueFd u = SandboxSocket(a, SOCK_DGRAM);
    sockaddr_in dst = Sin(ip, port);
    ASSERT_EQ(::connect(u.get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst), 0);
    ASSERT_EQ(::send(u.get(), "x", 1, 0), 1);
    ASSERT_TRUE(WaitFor(u.get(), POLLIN | POLLERR, kPromptMs)) << Ipv4ToString(ip) << ":" << port;
    char c;
    EXPECT_EQ(::recv(u.get(), &c, 1, MSG_DONTWAIT), -1);
    EXPECT_EQ(errno, ECONNREFUSED) << Ipv4ToString(ip) << ":" << port;
  }
  EXPECT_FALSE(WaitFor(dns_.get(), POLLIN, 0)) << "only port 53 leads to the resolver";
}

TEST_F(FirewallTest, WithoutOutboundTcpIsRefusedAndSetOutboundFlipsIt) {
  Sandbox& a = AddSandbox(0, false);
  const auto refused = [&] {
    UniqueFd c = SandboxSocket(a, SOCK_STREAM);
    const auto start = std::chrono::steady_clock::now();
    const int err = ConnectWithin(c.get(), Ip("1.2.3.4"), 443, kPromptMs);
    EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(kPromptMs));
    return err == ECONNREFUSED;
  };
  EXPECT_TRUE(refused());
  EXPECT_FALSE(AcceptWithin(proxy_.get(), 0));

  ASSERT_TRUE(fw_->SetOutbound(a.ifname, true));
  ASSERT_TRUE(fw_->SetOutbound(a.ifname, true)) << "idempotent";
  ExpectAtProxy(a, Ip("1.2.3.4"), 443);

  ASSERT_TRUE(fw_->SetOutbound(a.ifname, false));
  ASSERT_TRUE(fw_->SetOutbound(a.ifname, false)) << "idempotent";
  EXPECT_TRUE(refused());
}

TEST_F(FirewallTest, SandboxesCannotReachEachOther) {
  Sandbox& a = AddSandbox(0, true);
  Sandbox& b = AddSandbox(1, true);
  // B listens on every address of its namespace, TCP and UDP.
  UniqueFd b_tcp = SandboxSocket(b, SOCK_STREAM);
  UniqueFd b_udp = SandboxSocket(b, SOCK_DGRAM);
  sockaddr_in any = Sin(INADDR_ANY, 8080);
  ASSERT_EQ(::bind(b_tcp.get(), reinterpret_cast<sockaddr*>(&any), sizeof any), 0);
  ASSERT_EQ(::listen(b_tcp.get(), 4), 0);
  ASSERT_EQ(::bind(b_udp.get(), reinterpret_cast<sockaddr*>(&any), sizeof any), 0);

  ExpectAtProxy(a, b.sandbox_ip, 8080);
  ExpectAtProxy(a, b.host_ip, 8080);
  UniqueFd u = SandboxSocket(a, SOCK_DGRAM);
  sockaddr_in dst = Sin(b.sandbox_ip, 8080);
  ASSERT_EQ(::sendto(u.get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst), 1);

  EXPECT_FALSE(WaitFor(b_tcp.get(), POLLIN, kQuietMs)) << "A reached B's TCP listener";
  EXPECT_FALSE(WaitFor(b_udp.get(), POLLIN, 0)) << "A reached B's UDP socket";
}

TEST_F(FirewallTest, HostServicesBehindTheGatewayAreNotReachable) {
  Sandbox& a = AddSandbox(0, true);
  UniqueFd service = HostSocket(SOCK_STREAM);  // say, an sshd on 0.0.0.0
  ExpectAtProxy(a, a.host_ip, LocalPort(service.get()));
  if (const uint32_t other = HostAddressOutsideTests(); other != 0) {
    ExpectAtProxy(a, other, LocalPort(service.get()));
  }
  EXPECT_FALSE(AcceptWithin(service.get(), 0)) << "the host service was reached";
}

TEST_F(FirewallTest, ProxyAndResolverAreNotReachableFromOtherInterfaces) {
  UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(ConnectWithin(c.get(), INADDR_LOOPBACK, LocalPort(proxy_.get()), kQuietMs), ETIMEDOUT);
  EXPECT_FALSE(AcceptWithin(proxy_.get(), 0));
  UniqueFd u(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in dst = Sin(INADDR_LOOPBACK, LocalPort(dns_.get()));
  ASSERT_EQ(::sendto(u.get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst), 1);
  EXPECT_FALSE(WaitFor(dns_.get(), POLLIN, kQuietMs));
}

TEST_F(FirewallTest, SpoofedSourcesAreDropped) {
  Sandbox& a = AddSandbox(0, true);
  Sandbox& b = AddSandbox(1, true);
  // Strict rp_filter on the host end would drop these too; relax it on this
  // link so that the firewall's own (link . address) check is what is tested.
  WriteHostSysctl("ipv4/conf/" + a.ifname + "/rp_filter", "0");
  const bool rp_filter_off = ReadHostSysctl("ipv4/conf/all/rp_filter") != "1";

  const auto send_dns_from = [&](uint32_t src) {
    UniqueFd u = SandboxSocket(a, SOCK_DGRAM);
    const int one = 1;
    // IP_TRANSPARENT lets the socket bind and send from a foreign address.
    EXPECT_EQ(::setsockopt(u.get(), SOL_IP, IP_TRANSPARENT, &one, sizeof one), 0);
    sockaddr_in from = Sin(src, 0);
    EXPECT_EQ(::bind(u.get(), reinterpret_cast<sockaddr*>(&from), sizeof from), 0);
    sockaddr_in dst = Sin(Ip("8.8.8.8"), 53);
    EXPECT_EQ(::sendto(u.get(), "q", 1, 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst), 1);
  };
  const auto dns_got_from = [&](int timeout_ms) -> std::string {
    if (!WaitFor(dns_.get(), POLLIN, timeout_ms)) return "nothing";
    char c;
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ::recvfrom(dns_.get(), &c, 1, 0, reinterpret_cast<sockaddr*>(&from), &len);
    return Ipv4ToString(ntohl(from.sin_addr.s_addr));
  };

  send_dns_from(b.sandbox_ip);
  EXPECT_EQ(dns_got_from(kQuietMs), "nothing") << "A spoofed B's address";
  send_dns_from(a.sandbox_ip);
  EXPECT_EQ(dns_got_from(kPromptMs), Ipv4ToString(a.sandbox_ip));

  // Control: the spoofed datagram was stopped by the anti-spoofing set (and
  // not by something else): with the pair in the set, it gets through.
  if (rp_filter_off) {
    Shell("nft add element inet " + table_ + " ifaddr '{ \"" + a.ifname + "\" . " +
          Ipv4ToString(b.sandbox_ip) + " }'");
    send_dns_from(b.sandbox_ip);
    EXPECT_EQ(dns_got_from(kPromptMs), Ipv4ToString(b.sandbox_ip));
  }
}

TEST_F(FirewallTest, OnlyTheDaemonsMarkedConnectionsIntoASandboxAreAnswered) {
  // How the ingress reaches a microVM guest: from the host, at the sandbox
  // address (here a namespace's socket stands in for the guest's server).
  Sandbox& a = AddSandbox(0, false);
  Sandbox& b = AddSandbox(1, true);
  UniqueFd server = SandboxSocket(a, SOCK_STREAM);
  sockaddr_in any = Sin(INADDR_ANY, 8080);
  ASSERT_EQ(::bind(server.get(), reinterpret_cast<sockaddr*>(&any), sizeof any), 0);
  ASSERT_EQ(::listen(server.get(), 8), 0);

  // Any other host process: the sandbox's answer is dropped like everything
  // it sends on its own.
  UniqueFd plain(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(ConnectWithin(plain.get(), a.sandbox_ip, 8080, kQuietMs), ETIMEDOUT);
  plain.Reset();

  // The daemon's marked socket: connected, bytes both ways.
  auto dial = GuestDialSocket(AF_INET, SOCK_STREAM);
  ASSERT_TRUE(dial) << dial.error().message;
  ASSERT_EQ(ConnectWithin(dial->get(), a.sandbox_ip, 8080, kPromptMs), 0);
  UniqueFd in = AcceptWithin(server.get(), kPromptMs);
  ASSERT_TRUE(in);
  ASSERT_EQ(::send(dial->get(), "req", 3, 0), 3);
  char buf[8] = {};
  ASSERT_TRUE(WaitFor(in.get(), POLLIN, kPromptMs));
  ASSERT_EQ(::recv(in.get(), buf, sizeof buf, 0), 3);
  ASSERT_EQ(::send(in.get(), "resp", 4, 0), 4);
  ASSERT_TRUE(WaitFor(dial->get(), POLLIN, kPromptMs));
  ASSERT_EQ(::recv(dial->get(), buf, sizeof buf, 0), 4);
  EXPECT_EQ(std::string(buf, 4), "resp");

  // That opens nothing for the sandbox: without outbound access its own
  // connections are still refused, and to a neighbour they end at the proxy.
  UniqueFd out = SandboxSocket(a, SOCK_STREAM);
  EXPECT_EQ(ConnectWithin(out.get(), a.host_ip, 8080, kPromptMs), ECONNREFUSED);
  ExpectAtProxy(b, a.sandbox_ip, 8080);
  EXPECT_FALSE(AcceptWithin(server.get(), 0)) << "B reached A's server";

  // When A goes, the daemon ends its side of the connection itself (a
  // killed VM would never answer again); B's are not touched.
  UniqueFd b_conn = SandboxSocket(b, SOCK_STREAM);
  ASSERT_EQ(ConnectWithin(b_conn.get(), Ip("1.2.3.4"), 443, kPromptMs), 0);
  UniqueFd at_proxy = AcceptWithin(proxy_.get(), kPromptMs);
  ASSERT_TRUE(at_proxy);
  auto aborted = AbortTcpConnectionsTo(a.sandbox_ip);
  ASSERT_TRUE(aborted) << aborted.error().message;
  EXPECT_EQ(*aborted, 1);
  EXPECT_EQ(::recv(dial->get(), buf, sizeof buf, 0), -1);
  EXPECT_EQ(errno, ECONNABORTED);
  EXPECT_FALSE(WaitFor(at_proxy.get(), POLLIN, 0)) << "another sandbox's connection was touched";
  ASSERT_EQ(::send(b_conn.get(), "x", 1, 0), 1);
  EXPECT_TRUE(WaitFor(at_proxy.get(), POLLIN, kPromptMs));
}

// A guest behind a tap (microVM): what it forges at layer 2 or 3 meets the
// same host rules as a namespace sandbox's packets.
TEST_F(FirewallTest, AGuestBehindATapMeetsTheSameRules) {
  Sandbox& b = AddSandbox(1, true);
  auto ns = NewNetns();
  ASSERT_TRUE(ns) << ns.error().message;
  auto tap = testing::MakeTap(ns->get(), "tap0");
  ASSERT_TRUE(tap) << tap.error().message;
  auto g = std::make_unique<Sandbox>();
  g->netns = std::move(*ns);
  g->ifname = prefix_ + "g";
  g->host_ip = subnet_ + 1;
  g->sandbox_ip = subnet_ + 2;
  ASSERT_TRUE(fw_->AddSandbox(g->ifname, g->sandbox_ip, true));
  VethConfig cfg{.host_ifname = g->ifname,
                 .sandbox_ifname = "uplink",
                 .host_ip = g->host_ip,
                 .sandbox_ip = g->sandbox_ip,
                 .guest_tap = "tap0"};
  ASSERT_TRUE(CreateVeth(g->netns.get(), cfg));
  sandboxes_.push_back(std::move(g));
  const Sandbox& guest = *sandboxes_.back();
  WriteHostSysctl("ipv4/conf/" + guest.ifname + "/rp_filter",
                  "0");  // test the firewall, not rp_filter

  const auto write = [&](const testing::Frame& f) {
    ASSERT_EQ(::write(tap->get(), f.data(), f.size()), static_cast<ssize_t>(f.size()));
  };
  write(testing::ArpRequest(guest.sandbox_ip, guest.host_ip));
  testing::Frame reply = testing::ReadFrame(tap->get(), kPromptMs, testing::IsArpReply);
  ASSERT_FALSE(reply.empty()) << "no ARP reply";
  const testing::Mac host_mac = testing::ArpSender(reply);
  const auto resolver_got = [&](int timeout_ms) -> std::string {
    if (!WaitFor(dns_.get(), POLLIN, timeout_ms)) return "nothing";
    char c;
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ::recvfrom(dns_.get(), &c, 1, 0, reinterpret_cast<sockaddr*>(&from), &len);
    return Ipv4ToString(ntohl(from.sin_addr.s_addr));
  };
  const uint32_t dns_server = Ip("8.8.8.8");

  // Its own address: a DNS query reaches the resolver (redirected, as for
  // any sandbox); whatever source MAC it claims.
  write(testing::UdpFrame(host_mac, guest.sandbox_ip, dns_server, 53, "q"));
  EXPECT_EQ(resolver_got(kPromptMs), Ipv4ToString(guest.sandbox_ip));
  write(testing::UdpFrame(host_mac, guest.sandbox_ip, dns_server, 53, "q",
                          testing::Mac{0x02, 0xde, 0xad, 0xbe, 0xef, 0x01}));
  EXPECT_EQ(resolver_got(kPromptMs), Ipv4ToString(guest.sandbox_ip));
  // Another sandbox's address, the gateway's, a made-up one: dropped.
  for (uint32_t spoofed : {b.sandbox_ip, guest.host_ip, Ip("192.0.2.7")}) {
    write(testing::UdpFrame(host_mac, spoofed, dns_server, 53, "q"));
    EXPECT_EQ(resolver_got(kQuietMs), "nothing") << "spoofed " << Ipv4ToString(spoofed);
  }
  // A frame not addressed to the host end's MAC is not the host's to route.
  write(testing::UdpFrame(testing::Mac{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}, guest.sandbox_ip,
                          dns_server, 53, "q"));
  EXPECT_EQ(resolver_got(kQuietMs), "nothing");
}

TEST_F(FirewallTest, IcmpIsDropped) {
  Sandbox& a = AddSandbox(0, true);
  auto r = SocketInNetns(a.netns.get(), AF_INET, SOCK_RAW, IPPROTO_ICMP);
  ASSERT_TRUE(r) << r.error().message;
  icmphdr echo{.type = ICMP_ECHO};
  echo.un.echo.id = htons(0x5b5b);
  echo.checksum = htons(~((ICMP_ECHO << 8) + 0x5b5b));  // one's complement sum of the header
  sockaddr_in dst = Sin(a.host_ip, 0);
  ASSERT_EQ(
      ::sendto(r->get(), &echo, sizeof echo, 0, reinterpret_cast<sockaddr*>(&dst), sizeof dst),
      static_cast<ssize_t>(sizeof echo));
  EXPECT_FALSE(WaitFor(r->get(), POLLIN, kQuietMs)) << "got an answer to a ping of the gateway";
}

TEST_F(FirewallTest, UnregisteredLinksWithTheGuardPrefixAreDropped) {
  // A link that exists without being registered (before AddSandbox, after
  // RemoveSandbox) would otherwise reach host services unfiltered.
  Sandbox& a = AddSandbox(0, true, /*register_it=*/false);
  UniqueFd service = HostSocket(SOCK_STREAM);
  UniqueFd c = SandboxSocket(a, SOCK_STREAM);
  EXPECT_EQ(ConnectWithin(c.get(), a.host_ip, LocalPort(service.get()), kQuietMs), ETIMEDOUT);
  EXPECT_FALSE(AcceptWithin(service.get(), 0));
  EXPECT_FALSE(AcceptWithin(proxy_.get(), 0));
}

TEST_F(FirewallTest, SetsTrackSandboxesAndNothingRemainsAfterwards) {
  Sandbox& a = AddSandbox(0, true);
  ASSERT_TRUE(fw_->AddSandbox(a.ifname, a.sandbox_ip, true)) << "idempotent";
  auto dump = fw_->Dump();
  ASSERT_TRUE(dump) << dump.error().message;
  const std::string ifaddr = "\"" + a.ifname + "\" . " + Ipv4ToString(a.sandbox_ip);
  EXPECT_NE(dump->find(ifaddr), std::string::npos);
  EXPECT_NE(dump->find("elements = { \"" + a.ifname + "\" }"), std::string::npos);

  ASSERT_TRUE(DeleteLink(a.ifname));
  ASSERT_TRUE(fw_->RemoveSandbox(a.ifname, a.sandbox_ip));
  ASSERT_TRUE(fw_->RemoveSandbox(a.ifname, a.sandbox_ip)) << "idempotent";
  dump = fw_->Dump();
  ASSERT_TRUE(dump);
  EXPECT_EQ(dump->find(a.ifname), std::string::npos) << *dump;
  const std::string ifname = a.ifname;
  const uint32_t sandbox_ip = a.sandbox_ip;
  sandboxes_.clear();  // already removed; `a` is gone from here on

  // Installing again over an existing table replaces it.
  auto again = Firewall::Install(table_, 1, 2);
  ASSERT_TRUE(again) << again.error().message;
  ASSERT_TRUE((*again)->Uninstall());
  ASSERT_TRUE(fw_->Uninstall()) << "idempotent";
  EXPECT_EQ(Shell("nft list tables").find(table_), std::string::npos);
  EXPECT_EQ(Shell("ip -o link show").find(prefix_), std::string::npos);
  EXPECT_TRUE(Firewall::DeleteTable(table_));
  EXPECT_FALSE(fw_->AddSandbox(ifname, sandbox_ip, true)) << "the table is gone";
  fw_.reset();
}

TEST(FirewallInstall, RejectsBadArguments) {
  EXPECT_FALSE(Firewall::Install("", 1, 2));
  EXPECT_FALSE(Firewall::Install("1abc", 1, 2));
  EXPECT_FALSE(Firewall::Install("a b", 1, 2));
  EXPECT_FALSE(Firewall::Install("a;flush ruleset", 1, 2));
  EXPECT_FALSE(Firewall::Install("abc", 0, 2));
  EXPECT_FALSE(Firewall::Install("abc", 1, 2, "bad\"prefix"));
  EXPECT_FALSE(Firewall::DeleteTable("x y"));
}

}  // namespace
}  // namespace sandboxd::net

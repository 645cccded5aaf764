#include "daemon/net/test_frames.h"

#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "daemon/net/netns.h"

namespace sandboxd::net::testing {
namespace {

void Put16(Frame& f, uint16_t v) {
  f.push_back(static_cast<uint8_t>(v >> 8));
  f.push_back(static_cast<uint8_t>(v));
}
void Put32(Frame& f, uint32_t v) {
  Put16(f, static_cast<uint16_t>(v >> 16));
  Put16(f, static_cast<uint16_t>(v));
}

}  // namespace

Result<UniqueFd> MakeTap(int netns, const std::string& name) {
  UniqueFd fd;
  SBX_TRY(RunInNetns(netns, [&]() -> Status {
    // The tap is made in the namespace of whoever opens /dev/net/tun.
    fd.Reset(::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
    if (!fd) return FailErrno("open /dev/net/tun");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) return FailErrno("TUNSETIFF");
    return {};
  }));
  return fd;
}

Frame EthHeader(const Mac& dst, uint16_t type, const Mac& src) {
  Frame f(dst.begin(), dst.end());
  f.insert(f.end(), src.begin(), src.end());
  Put16(f, type);
  return f;
}

uint16_t EtherType(const Frame& f) {
  return f.size() < 14 ? 0 : static_cast<uint16_t>((f[12] << 8) | f[13]);
}

Frame ArpRequest(uint32_t sender, uint32_t target) {
  Frame f = EthHeader(kBroadcast, ETH_P_ARP);
  Put16(f, 1);       // Ethernet
  Put16(f, 0x0800);  // IPv4
  f.push_back(6);
  f.push_back(4);
  Put16(f, 1);  // request
  f.insert(f.end(), kGuestMac.begin(), kGuestMac.end());
  Put32(f, sender);
  f.insert(f.end(), 6, 0);
  Put32(f, target);
  return f;
}

bool IsArpReply(const Frame& f) {
  return EtherType(f) == ETH_P_ARP && f.size() >= 42 && f[21] == 2;
}

Mac ArpSender(const Frame& reply) {
  Mac m{};
  if (reply.size() >= 28) std::copy(reply.begin() + 22, reply.begin() + 28, m.begin());
  return m;
}

Frame UdpFrame(const Mac& dst_mac, uint32_t src, uint32_t dst, uint16_t port,
               const std::string& payload, const Mac& src_mac) {
  Frame f = EthHeader(dst_mac, ETH_P_IP, src_mac);
  const size_t ip = f.size();
  Put16(f, 0x4500);
  Put16(f, static_cast<uint16_t>(20 + 8 + payload.size()));
  Put32(f, 0);       // id, flags, fragment offset
  Put16(f, 0x4011);  // TTL 64, UDP
  Put16(f, 0);       // header checksum, below
  Put32(f, src);
  Put32(f, dst);
  uint32_t sum = 0;
  for (size_t i = ip; i < ip + 20; i += 2) sum += static_cast<uint32_t>((f[i] << 8) | f[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  f[ip + 10] = static_cast<uint8_t>(~sum >> 8);
  f[ip + 11] = static_cast<uint8_t>(~sum);
  Put16(f, 40000);
  Put16(f, port);
  Put16(f, static_cast<uint16_t>(8 + payload.size()));
  Put16(f, 0);
  f.insert(f.end(), payload.begin(), payload.end());
  return f;
}

Frame ReadFrame(int fd, int ms, const std::function<bool(const Frame&)>& want) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return {};
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    Frame f(65536);
    ssize_t n = ::read(fd, f.data(), f.size());
    if (n <= 0) continue;
    f.resize(static_cast<size_t>(n));
    if (f.size() >= 14 && want(f)) return f;
  }
}

}  // namespace sandboxd::net::testing

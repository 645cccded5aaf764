#include "daemon/net/subnet.h"

#include <arpa/inet.h>

#include <charconv>

namespace sandboxd::net {

Result<Ipv4Range> ParseIpv4Range(std::string_view cidr) {
  const auto slash = cidr.find('/');
  if (slash == std::string_view::npos) {
    return FailMsg("IPv4 range \"" + std::string(cidr) + "\": expected a.b.c.d/prefix");
  }
  const std::string addr(cidr.substr(0, slash));
  const std::string_view prefix_str = cidr.substr(slash + 1);
  in_addr in{};
  if (::inet_pton(AF_INET, addr.c_str(), &in) != 1) {
    return FailMsg("IPv4 range \"" + std::string(cidr) + "\": bad address");
  }
  int prefix = -1;
  const auto [end, ec] =
      std::from_chars(prefix_str.data(), prefix_str.data() + prefix_str.size(), prefix);
  if (prefix_str.empty() || ec != std::errc() || end != prefix_str.data() + prefix_str.size()) {
    return FailMsg("IPv4 range \"" + std::string(cidr) + "\": bad prefix length");
  }
  if (prefix < 8 || prefix > 28) {
    return FailMsg("IPv4 range \"" + std::string(cidr) + "\": prefix length must be 8..28");
  }
  const uint32_t base = ntohl(in.s_addr);
  const uint32_t host_mask = (uint32_t{1} << (32 - prefix)) - 1;
  if (base & host_mask) {
    return FailMsg("IPv4 range \"" + std::string(cidr) + "\": address has host bits set");
  }
  return Ipv4Range{base, prefix};
}

std::string Ipv4ToString(uint32_t addr) {
  in_addr in{htonl(addr)};
  char buf[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &in, buf, sizeof buf);
  return buf;
}

SubnetPool::SubnetPool(Ipv4Range range)
    : range_(range), capacity_(uint32_t{1} << (32 - range.prefix - 2)) {}

std::optional<uint32_t> SubnetPool::Allocate() {
  std::lock_guard lock(mu_);
  if (!free_.empty()) {
    const uint32_t block = *free_.begin();
    free_.erase(free_.begin());
    return block;
  }
  if (next_ < capacity_) return next_++;
  return std::nullopt;
}

bool SubnetPool::Release(uint32_t block) {
  std::lock_guard lock(mu_);
  if (block >= next_ || free_.contains(block)) return false;
  if (block + 1 == next_) {
    // Shrink the watermark over the trailing free blocks instead of recording
    // them, so a pool that empties out holds no set entries at all.
    --next_;
    while (!free_.empty() && *free_.rbegin() + 1 == next_) {
      free_.erase(std::prev(free_.end()));
      --next_;
    }
  } else {
    free_.insert(block);
  }
  return true;
}

}  // namespace sandboxd::net

// IPv4 addressing for sandbox links: a range carved into /30 blocks, one per
// sandbox. Block i covers base + 4*i .. base + 4*i + 3; the host end of the
// veth gets .1 of the block and the sandbox end .2 (.0 and .3 are the /30's
// network and broadcast addresses and stay unused).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "common/error.h"

namespace sandboxd::net {

// Addresses are in host byte order throughout this component.
struct Ipv4Range {
  uint32_t base = 0;
  int prefix = 0;
};

// Parses "a.b.c.d/n". Rejects prefixes outside 8..28 (a /28 still holds four
// blocks) and a base with host bits set ("10.89.0.1/16").
Result<Ipv4Range> ParseIpv4Range(std::string_view cidr);

// Dotted quad.
std::string Ipv4ToString(uint32_t addr);

// Hands out /30 blocks of a range, lowest free first (so a restarted daemon
// that reaped everything starts again at block 0 and names stay small).
// Thread-safe.
class SubnetPool {
 public:
  explicit SubnetPool(Ipv4Range range);

  // The lowest free block index, now owned by the caller; nullopt when the
  // range is exhausted.
  std::optional<uint32_t> Allocate();

  // Returns a block to the pool. Releasing a block that is not allocated is
  // ignored and reported as false.
  bool Release(uint32_t block);

  uint32_t Capacity() const { return capacity_; }
  uint32_t HostIp(uint32_t block) const { return range_.base + 4 * block + 1; }
  uint32_t SandboxIp(uint32_t block) const { return range_.base + 4 * block + 2; }
  static constexpr int kBlockPrefix = 30;

 private:
  const Ipv4Range range_;
  const uint32_t capacity_;
  std::mutex mu_;
  // Blocks [0, next_) have been handed out at some point; free_ holds those
  // among them that were released since. Allocation is O(log n), memory is
  // proportional to the number of holes, not to the size of the range.
  uint32_t next_ = 0;
  std::set<uint32_t> free_;
};

}  // namespace sandboxd::net

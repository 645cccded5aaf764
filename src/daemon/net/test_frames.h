// Test helpers for a guest behind a tap (the microVM backend's shape): the
// tap, and Ethernet frames as a guest's kernel (or its root, forging them)
// would write them.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::net::testing {

// A tap named `name` in `netns`, held by the returned (non-blocking) fd as
// QEMU holds the guest's: plain frames, no packet info, no vnet header.
Result<UniqueFd> MakeTap(int netns, const std::string& name);

using Frame = std::vector<uint8_t>;
using Mac = std::array<uint8_t, 6>;
inline constexpr Mac kGuestMac = {0x02, 0x5b, 0, 0, 0, 0x02};
inline constexpr Mac kBroadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

// dst, src, ethertype.
Frame EthHeader(const Mac& dst, uint16_t type, const Mac& src = kGuestMac);
uint16_t EtherType(const Frame& f);

// "Who has `target`? Tell `sender`" (host byte order addresses).
Frame ArpRequest(uint32_t sender, uint32_t target);
// The sender MAC of an ARP reply frame.
Mac ArpSender(const Frame& reply);
bool IsArpReply(const Frame& f);

// An IPv4/UDP datagram (no UDP checksum: allowed for IPv4).
Frame UdpFrame(const Mac& dst_mac, uint32_t src, uint32_t dst, uint16_t port,
               const std::string& payload, const Mac& src_mac = kGuestMac);

// The next frame read from `fd` for which `want` holds, within `ms`; empty
// if none came.
Frame ReadFrame(int fd, int ms, const std::function<bool(const Frame&)>& want);

}  // namespace sandboxd::net::testing

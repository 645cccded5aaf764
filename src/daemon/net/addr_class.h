// Classification of destination addresses for the egress filter: the proxy
// and the DNS server refuse every address that is not kPublic unless the
// sandbox's allowNet names that exact address (AllowList::NamesAddress).
//
// Addresses that embed an IPv4 address are classified by it: IPv4-mapped
// (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and
// 6to4 (2002:AABB:CCDD::/48), so "::ffff:169.254.169.254" is kMetadata.
//
// Deliberate choices:
// - The documentation and benchmarking ranges 192.0.2.0/24, 198.51.100.0/24,
//   203.0.113.0/24, 198.18.0.0/15, 2001:db8::/32, 3fff::/20 and 2001:2::/48
//   are kPublic. They are never routed on the Internet, so allowing them
//   costs nothing, and the tests run fake "public" upstreams on them.
// - 0.0.0.0 and :: are kLoopback, not kReserved: on Linux connect() to the
//   unspecified address reaches the local host.
// - Outside 2000::/3 (global unicast) every IPv6 address not listed below is
//   kReserved (fail closed), as is Teredo (2001::/32), whose embedded
//   addresses say nothing reliable about where a packet ends up.
// - 100.64.0.0/10 (CGNAT) is kPrivate; Alibaba Cloud's metadata service
//   (100.100.100.200) lives there and is therefore refused too.
//
// Pure functions; thread-safe.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <string_view>

namespace sandboxd::net {

enum class AddrClass {
  kPublic,
  kPrivate,    // RFC 1918, CGNAT, IPv6 ULA (fc00::/7), site-local (fec0::/10)
  kLoopback,   // 127/8, ::1, and the unspecified 0.0.0.0 / ::
  kLinkLocal,  // 169.254/16, fe80::/10
  kMetadata,   // cloud instance metadata endpoints (see addr_class.cc)
  kReserved,   // multicast, 240/4, broadcast, 0/8, 192.0.0/24, other special use
};

AddrClass Classify(const boost::asio::ip::address& addr);

// Everything except kPublic: refused unless allowNet names the address.
inline bool IsForbiddenByDefault(const boost::asio::ip::address& addr) {
  return Classify(addr) != AddrClass::kPublic;
}

// "public", "private", "loopback", "link-local", "metadata", "reserved".
std::string_view AddrClassName(AddrClass c);

}  // namespace sandboxd::net

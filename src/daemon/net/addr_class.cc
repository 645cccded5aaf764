#include "daemon/net/addr_class.h"

#include <array>
#include <cstdint>

namespace sandboxd::net {

namespace ip = boost::asio::ip;

namespace {

constexpr uint32_t V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return (uint32_t{a} << 24) | (uint32_t{b} << 16) | (uint32_t{c} << 8) | uint32_t{d};
}

constexpr bool InV4(uint32_t addr, uint32_t net, int prefix) {
  const uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  return (addr & mask) == (net & mask);
}

AddrClass ClassifyV4(uint32_t a) {
  // Metadata endpoints first: they sit inside ranges classified below.
  //   169.254.169.254  AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle ...
  //   169.254.170.2    AWS ECS task metadata / credentials
  //   168.63.129.16    Azure WireServer: a public-looking address that only
  //                    the Azure host answers; it hands out VM secrets.
  if (a == V4(169, 254, 169, 254) || a == V4(169, 254, 170, 2) || a == V4(168, 63, 129, 16)) {
    return AddrClass::kMetadata;
  }
  if (a == 0) return AddrClass::kLoopback;  // connect(0.0.0.0) reaches the local host
  if (InV4(a, V4(0, 0, 0, 0), 8)) return AddrClass::kReserved;
  if (InV4(a, V4(10, 0, 0, 0), 8)) return AddrClass::kPrivate;
  if (InV4(a, V4(100, 64, 0, 0), 10)) return AddrClass::kPrivate;  // CGNAT
  if (InV4(a, V4(127, 0, 0, 0), 8)) return AddrClass::kLoopback;
  if (InV4(a, V4(169, 254, 0, 0), 16)) return AddrClass::kLinkLocal;
  if (InV4(a, V4(172, 16, 0, 0), 12)) return AddrClass::kPrivate;
  if (InV4(a, V4(192, 0, 0, 0), 24)) return AddrClass::kReserved;  // IETF protocol assignments
  if (InV4(a, V4(192, 168, 0, 0), 16)) return AddrClass::kPrivate;
  if (InV4(a, V4(224, 0, 0, 0), 4)) return AddrClass::kReserved;  // multicast
  if (InV4(a, V4(240, 0, 0, 0), 4)) return AddrClass::kReserved;  // incl. 255.255.255.255
  // 192.0.2/24, 198.51.100/24, 203.0.113/24, 198.18/15: public on purpose
  // (see the header).
  return AddrClass::kPublic;
}

using Bytes = std::array<unsigned char, 16>;

bool InV6(const Bytes& a, const Bytes& net, int prefix) {
  for (int i = 0; i < 16 && prefix > 0; ++i, prefix -= 8) {
    const unsigned char mask =
        prefix >= 8 ? 0xff : static_cast<unsigned char>(0xff << (8 - prefix));
    if ((a[i] & mask) != (net[i] & mask)) return false;
  }
  return true;
}

uint32_t V4At(const Bytes& a, int offset) {
  return V4(a[offset], a[offset + 1], a[offset + 2], a[offset + 3]);
}

constexpr Bytes kZero{};
constexpr Bytes kMapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
constexpr Bytes kNat64{0x00, 0x64, 0xff, 0x9b};
constexpr Bytes kNat64Local{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01};
constexpr Bytes k6to4{0x20, 0x02};
constexpr Bytes kTeredo{0x20, 0x01, 0x00, 0x00};
constexpr Bytes kBenchmark{0x20, 0x01, 0x00, 0x02, 0x00, 0x00};
constexpr Bytes kDiscard{0x01, 0x00};
constexpr Bytes kGlobalUnicast{0x20};
constexpr Bytes kUla{0xfc};
constexpr Bytes kSiteLocal{0xfe, 0xc0};
constexpr Bytes kLinkLocal{0xfe, 0x80};
constexpr Bytes kMulticast{0xff};
// AWS IMDS over IPv6 (Nitro instances).
constexpr Bytes kAwsMetadataV6{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54};

AddrClass ClassifyV6(const Bytes& a) {
  if (a == kAwsMetadataV6) return AddrClass::kMetadata;
  if (InV6(a, kZero, 127)) return AddrClass::kLoopback;  // :: and ::1
  // Embedded IPv4: mapped, compatible (deprecated, but the kernel may still
  // route it), NAT64 well-known prefix, 6to4.
  if (InV6(a, kMapped, 96) || InV6(a, kZero, 96) || InV6(a, kNat64, 96)) {
    return ClassifyV4(V4At(a, 12));
  }
  if (InV6(a, k6to4, 16)) return ClassifyV4(V4At(a, 2));
  if (InV6(a, kNat64Local, 48)) return AddrClass::kPrivate;  // RFC 8215 local-use NAT64
  if (InV6(a, kBenchmark, 48)) return AddrClass::kPublic;    // like 198.18/15
  if (InV6(a, kTeredo, 32)) return AddrClass::kReserved;
  if (InV6(a, kDiscard, 64)) return AddrClass::kReserved;
  if (InV6(a, kUla, 7)) return AddrClass::kPrivate;
  if (InV6(a, kLinkLocal, 10)) return AddrClass::kLinkLocal;
  if (InV6(a, kSiteLocal, 10)) return AddrClass::kPrivate;
  if (InV6(a, kMulticast, 8)) return AddrClass::kReserved;
  if (InV6(a, kGlobalUnicast, 3)) return AddrClass::kPublic;  // incl. 2001:db8::/32, 3fff::/20
  return AddrClass::kReserved;
}

}  // namespace

AddrClass Classify(const ip::address& addr) {
  if (addr.is_v4()) return ClassifyV4(addr.to_v4().to_uint());
  // A scoped address (fe80::1%eth0) is link-local by prefix anyway; the
  // scope id does not change the class.
  return ClassifyV6(addr.to_v6().to_bytes());
}

std::string_view AddrClassName(AddrClass c) {
  switch (c) {
    case AddrClass::kPublic:
      return "public";
    case AddrClass::kPrivate:
      return "private";
    case AddrClass::kLoopback:
      return "loopback";
    case AddrClass::kLinkLocal:
      return "link-local";
    case AddrClass::kMetadata:
      return "metadata";
    case AddrClass::kReserved:
      return "reserved";
  }
  return "reserved";
}

}  // namespace sandboxd::net

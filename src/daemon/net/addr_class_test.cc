#include "daemon/net/addr_class.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sandboxd::net {
namespace {

using boost::asio::ip::make_address;

struct Case {
  std::string addr;
  AddrClass want;
};

void ExpectAll(const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    const AddrClass got = Classify(make_address(c.addr));
    EXPECT_EQ(got, c.want) << c.addr << ": got " << AddrClassName(got) << ", want "
                           << AddrClassName(c.want);
    EXPECT_EQ(IsForbiddenByDefault(make_address(c.addr)), c.want != AddrClass::kPublic) << c.addr;
  }
}

TEST(AddrClassTest, V4) {
  ExpectAll({
      {"0.0.0.0", AddrClass::kLoopback},
      {"0.1.2.3", AddrClass::kReserved},
      {"0.255.255.255", AddrClass::kReserved},
      {"1.0.0.0", AddrClass::kPublic},
      {"9.255.255.255", AddrClass::kPublic},
      {"10.0.0.0", AddrClass::kPrivate},
      {"10.255.255.255", AddrClass::kPrivate},
      {"11.0.0.0", AddrClass::kPublic},
      {"100.63.255.255", AddrClass::kPublic},
      {"100.64.0.0", AddrClass::kPrivate},
      {"100.100.100.200", AddrClass::kPrivate},  // Alibaba metadata, inside CGNAT
      {"100.127.255.255", AddrClass::kPrivate},
      {"100.128.0.0", AddrClass::kPublic},
      {"126.255.255.255", AddrClass::kPublic},
      {"127.0.0.1", AddrClass::kLoopback},
      {"127.255.255.254", AddrClass::kLoopback},
      {"128.0.0.0", AddrClass::kPublic},
      {"169.253.255.255", AddrClass::kPublic},
      {"169.254.0.1", AddrClass::kLinkLocal},
      {"169.254.169.253", AddrClass::kLinkLocal},
      {"169.254.169.254", AddrClass::kMetadata},
      {"169.254.170.2", AddrClass::kMetadata},
      {"169.254.255.255", AddrClass::kLinkLocal},
      {"169.255.0.0", AddrClass::kPublic},
      {"168.63.129.16", AddrClass::kMetadata},  // Azure WireServer
      {"168.63.129.17", AddrClass::kPublic},
      {"172.15.255.255", AddrClass::kPublic},
      {"172.16.0.0", AddrClass::kPrivate},
      {"172.31.255.255", AddrClass::kPrivate},
      {"172.32.0.0", AddrClass::kPublic},
      {"192.0.0.0", AddrClass::kReserved},
      {"192.0.0.255", AddrClass::kReserved},
      {"192.0.1.0", AddrClass::kPublic},
      {"192.167.255.255", AddrClass::kPublic},
      {"192.168.0.1", AddrClass::kPrivate},
      {"192.168.255.255", AddrClass::kPrivate},
      {"192.169.0.0", AddrClass::kPublic},
      {"223.255.255.255", AddrClass::kPublic},
      {"224.0.0.1", AddrClass::kReserved},
      {"239.255.255.255", AddrClass::kReserved},
      {"240.0.0.1", AddrClass::kReserved},
      {"255.255.255.254", AddrClass::kReserved},
      {"255.255.255.255", AddrClass::kReserved},
      {"8.8.8.8", AddrClass::kPublic},
      {"93.184.216.34", AddrClass::kPublic},
  });
}

TEST(AddrClassTest, DocumentationAndBenchmarkRangesArePublic) {
  // A deliberate choice (see addr_class.h): tests run fake upstreams there.
  ExpectAll({
      {"192.0.2.1", AddrClass::kPublic},
      {"198.51.100.1", AddrClass::kPublic},
      {"203.0.113.255", AddrClass::kPublic},
      {"198.18.0.1", AddrClass::kPublic},
      {"198.19.255.255", AddrClass::kPublic},
      {"2001:db8::1", AddrClass::kPublic},
      {"2001:2::1", AddrClass::kPublic},
      {"3fff::1", AddrClass::kPublic},
  });
}

TEST(AddrClassTest, V6) {
  ExpectAll({
      {"::", AddrClass::kLoopback},
      {"::1", AddrClass::kLoopback},
      {"fe80::1", AddrClass::kLinkLocal},
      {"febf:ffff::1", AddrClass::kLinkLocal},
      {"fec0::1", AddrClass::kPrivate},
      {"fc00::1", AddrClass::kPrivate},
      {"fd12:3456::1", AddrClass::kPrivate},
      {"fdff:ffff::1", AddrClass::kPrivate},
      {"fd00:ec2::254", AddrClass::kMetadata},
      {"fd00:ec2::253", AddrClass::kPrivate},
      {"ff02::1", AddrClass::kReserved},
      {"ff0e::1", AddrClass::kReserved},
      {"100::1", AddrClass::kReserved},
      {"2001::1", AddrClass::kReserved},  // Teredo
      {"2001:4860:4860::8888", AddrClass::kPublic},
      {"2606:4700::1111", AddrClass::kPublic},
      {"3ffe::1", AddrClass::kPublic},
      {"4000::1", AddrClass::kReserved},
      {"8000::1", AddrClass::kReserved},
      {"64:ff9b:1::1", AddrClass::kPrivate},
  });
}

TEST(AddrClassTest, EmbeddedV4IsClassifiedByTheV4) {
  ExpectAll({
      {"::ffff:8.8.8.8", AddrClass::kPublic},
      {"::ffff:127.0.0.1", AddrClass::kLoopback},
      {"::ffff:10.0.0.1", AddrClass::kPrivate},
      {"::ffff:169.254.169.254", AddrClass::kMetadata},
      {"::ffff:0.0.0.0", AddrClass::kLoopback},
      {"::127.0.0.1", AddrClass::kLoopback},  // IPv4-compatible
      {"::8.8.8.8", AddrClass::kPublic},
      {"::10.0.0.1", AddrClass::kPrivate},
      {"64:ff9b::8.8.8.8", AddrClass::kPublic},
      {"64:ff9b::192.168.1.1", AddrClass::kPrivate},
      {"64:ff9b::169.254.169.254", AddrClass::kMetadata},
      {"64:ff9b::7f00:1", AddrClass::kLoopback},
      {"2002:0808:0808::1", AddrClass::kPublic},
      {"2002:7f00:0001::1", AddrClass::kLoopback},
      {"2002:a9fe:a9fe::", AddrClass::kMetadata},
      {"2002:c0a8:0101:1::1", AddrClass::kPrivate},
      {"2002:e000:0001::1", AddrClass::kReserved},
  });
}

TEST(AddrClassTest, Names) {
  EXPECT_EQ(AddrClassName(AddrClass::kPublic), "public");
  EXPECT_EQ(AddrClassName(AddrClass::kPrivate), "private");
  EXPECT_EQ(AddrClassName(AddrClass::kLoopback), "loopback");
  EXPECT_EQ(AddrClassName(AddrClass::kLinkLocal), "link-local");
  EXPECT_EQ(AddrClassName(AddrClass::kMetadata), "metadata");
  EXPECT_EQ(AddrClassName(AddrClass::kReserved), "reserved");
}

}  // namespace
}  // namespace sandboxd::net

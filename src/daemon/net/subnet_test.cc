#include "daemon/net/subnet.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace sandboxd::net {
namespace {

TEST(ParseIpv4Range, Valid) {
  auto r = ParseIpv4Range("10.89.0.0/16");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->base, 0x0A590000u);
  EXPECT_EQ(r->prefix, 16);
  EXPECT_TRUE(ParseIpv4Range("10.0.0.0/8"));
  EXPECT_TRUE(ParseIpv4Range("192.168.7.16/28"));
}

TEST(ParseIpv4Range, Errors) {
  for (const char* bad : {"", "10.89.0.0", "10.89.0.0/", "/16", "10.89.0/16", "10.89.0.0.0/16",
                          "10.89.0.256/24", "10.89.0.0/x", "10.89.0.0/16x", "10.89.0.0/-16",
                          "10.89.0.0/ 16", "10.89.0.0/7", "10.89.0.0/29", "10.89.0.0/32",
                          "10.89.0.1/16", "10.89.0.4/24", "192.168.7.8/28", "fd00::/64"}) {
    EXPECT_FALSE(ParseIpv4Range(bad)) << bad;
  }
}

TEST(Ipv4ToString, DottedQuad) {
  EXPECT_EQ(Ipv4ToString(0x0A590001u), "10.89.0.1");
  EXPECT_EQ(Ipv4ToString(0), "0.0.0.0");
  EXPECT_EQ(Ipv4ToString(0xFFFFFFFFu), "255.255.255.255");
}

TEST(SubnetPool, AddressesOfBlocks) {
  SubnetPool pool(*ParseIpv4Range("10.89.0.0/16"));
  EXPECT_EQ(pool.Capacity(), 16384u);
  EXPECT_EQ(Ipv4ToString(pool.HostIp(0)), "10.89.0.1");
  EXPECT_EQ(Ipv4ToString(pool.SandboxIp(0)), "10.89.0.2");
  EXPECT_EQ(Ipv4ToString(pool.HostIp(1)), "10.89.0.5");
  EXPECT_EQ(Ipv4ToString(pool.SandboxIp(64)), "10.89.1.2");
  EXPECT_EQ(Ipv4ToString(pool.SandboxIp(16383)), "10.89.255.254");
}

TEST(SubnetPool, LowestFreeFirstAndExhaustion) {
  SubnetPool pool(*ParseIpv4Range("192.168.7.0/28"));  // four blocks
  ASSERT_EQ(pool.Capacity(), 4u);
  EXPECT_EQ(pool.Allocate(), 0u);
  EXPECT_EQ(pool.Allocate(), 1u);
  EXPECT_EQ(pool.Allocate(), 2u);
  EXPECT_EQ(pool.Allocate(), 3u);
  EXPECT_EQ(pool.Allocate(), std::nullopt);

  EXPECT_TRUE(pool.Release(2));
  EXPECT_TRUE(pool.Release(0));
  EXPECT_FALSE(pool.Release(0)) << "double release";
  EXPECT_FALSE(pool.Release(4)) << "never allocated";
  EXPECT_EQ(pool.Allocate(), 0u);
  EXPECT_EQ(pool.Allocate(), 2u);
  EXPECT_EQ(pool.Allocate(), std::nullopt);

  // Releasing from the top shrinks the watermark over trailing holes.
  EXPECT_TRUE(pool.Release(1));
  EXPECT_TRUE(pool.Release(2));
  EXPECT_TRUE(pool.Release(3));
  EXPECT_FALSE(pool.Release(3));
  EXPECT_EQ(pool.Allocate(), 1u);
  EXPECT_EQ(pool.Allocate(), 2u);
  EXPECT_EQ(pool.Allocate(), 3u);
  EXPECT_EQ(pool.Allocate(), std::nullopt);
}

TEST(SubnetPool, ThreadSafe) {
  SubnetPool pool(*ParseIpv4Range("10.0.0.0/16"));
  constexpr int kThreads = 4, kPerThread = 1000;
  std::vector<std::vector<uint32_t>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto b = pool.Allocate();
        ASSERT_TRUE(b);
        got[t].push_back(*b);
        if (i % 3 == 0) {
          EXPECT_TRUE(pool.Release(got[t].back()));
          got[t].pop_back();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  std::vector<bool> seen(pool.Capacity());
  for (const auto& v : got) {
    for (uint32_t b : v) {
      EXPECT_FALSE(seen[b]) << "block " << b << " handed out twice";
      seen[b] = true;
    }
  }
}

}  // namespace
}  // namespace sandboxd::net

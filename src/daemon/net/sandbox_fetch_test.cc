#include "daemon/net/sandbox_fetch.h"

#include <gtest/gtest.h>

namespace sandboxd::net {
namespace {

TEST(FetchUrlTest, Parses) {
  auto u = ParseHttpUrl("https://API.example.com/v1/x?y=1#frag");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "api.example.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/v1/x?y=1");
  auto p = ParseHttpUrl("http://10.0.0.1:8080");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->port, 8080);
  EXPECT_EQ(p->target, "/");
  auto v6 = ParseHttpUrl("http://[::1]:81/a");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 81);
  auto q = ParseHttpUrl("http://h?x");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->target, "/?x");
}

TEST(FetchUrlTest, Rejects) {
  for (const char* bad : {"ftp://x/", "example.com", "http://", "http://:80/", "http://u:p@h/", "http://h:0/",
                          "http://h:65536/", "http://h:8x/", "http://[::1/", "http://h/a b"}) {
    EXPECT_FALSE(ParseHttpUrl(bad)) << bad;
  }
}

TEST(FetchUrlTest, ResolvesLocations) {
  EXPECT_EQ(*ResolveLocation("http://a.test/x/y?q", "https://b.test/z"), "https://b.test/z");
  EXPECT_EQ(*ResolveLocation("http://a.test:81/x/y?q", "/z"), "http://a.test:81/z");
  EXPECT_EQ(*ResolveLocation("https://a.test/x/y", "z?w"), "https://a.test/x/z?w");
  EXPECT_EQ(*ResolveLocation("https://a.test/x/y", "//c.test/p"), "https://c.test/p");
  EXPECT_FALSE(ResolveLocation("http://a.test/", "gopher://x/"));
}

}  // namespace
}  // namespace sandboxd::net

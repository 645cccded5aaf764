#include "daemon/net/sniff.h"

#include "daemon/net/test_client_hello.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <random>
#include <string>

namespace sandboxd::net {
namespace {

std::string ClientHello(const char* sni, bool tls13_only = false) { return TestClientHello(sni, tls13_only); }

TEST(SniffTest, TlsClientHelloGivesSni) {
  auto hello = ClientHello("api.example.com");
  auto s = Sniff(hello);
  EXPECT_EQ(s.kind, Sniffed::kTls);
  EXPECT_EQ(s.host, "api.example.com");
  auto s13 = Sniff(ClientHello("x.test", true));
  EXPECT_EQ(s13.kind, Sniffed::kTls);
  EXPECT_EQ(s13.host, "x.test");
}

TEST(SniffTest, TlsWithoutSni) {
  auto s = Sniff(ClientHello(nullptr));
  EXPECT_EQ(s.kind, Sniffed::kTls);
  EXPECT_EQ(s.host, "");
}

TEST(SniffTest, PartialHelloNeedsMore) {
  auto hello = ClientHello("api.example.com");
  for (size_t n : {size_t{1}, size_t{3}, size_t{5}, size_t{40}, hello.size() - 1}) {
    EXPECT_EQ(Sniff(std::string_view(hello).substr(0, n)).kind, Sniffed::kNeedMore) << n;
  }
}

TEST(SniffTest, HelloSplitAcrossRecords) {
  // A ClientHello may legally span several TLS records; OpenSSL reassembles.
  auto hello = ClientHello("split.example.com");
  std::string body = hello.substr(5);
  std::string out;
  for (size_t off = 0; off < body.size(); off += 50) {
    std::string part = body.substr(off, 50);
    out += std::string{0x16, 0x03, 0x01, static_cast<char>(part.size() >> 8), static_cast<char>(part.size() & 0xff)};
    out += part;
  }
  auto s = Sniff(out);
  EXPECT_EQ(s.kind, Sniffed::kTls);
  EXPECT_EQ(s.host, "split.example.com");
}

TEST(SniffTest, HttpHost) {
  auto s = Sniff("GET /x HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\n\r\n");
  EXPECT_EQ(s.kind, Sniffed::kHttp);
  EXPECT_EQ(s.host, "example.com:8080");
  EXPECT_EQ(Sniff("POST /x HTTP/1.1\r\nHost: a\r\n").kind, Sniffed::kNeedMore);
  EXPECT_EQ(Sniff("GE").kind, Sniffed::kNeedMore);
  auto no_host = Sniff("GET / HTTP/1.0\r\n\r\n");
  EXPECT_EQ(no_host.kind, Sniffed::kHttp);
  EXPECT_EQ(no_host.host, "");
}

TEST(SniffTest, OtherProtocolsAreUnknown) {
  EXPECT_EQ(Sniff("SSH-2.0-OpenSSH_9.2\r\n").kind, Sniffed::kUnknown);
  EXPECT_EQ(Sniff(std::string("\x00\x01\x02", 3)).kind, Sniffed::kUnknown);
  EXPECT_EQ(Sniff("get / HTTP/1.1\r\n\r\n").kind, Sniffed::kUnknown);
  EXPECT_EQ(Sniff(std::string("\x16\x02\x00", 3)).kind, Sniffed::kUnknown);
  EXPECT_EQ(Sniff("GET / HTTP/1.1\r\nHost a\r\n\r\n").kind, Sniffed::kUnknown);  // malformed header
  EXPECT_EQ(Sniff(std::string(kMaxSniffBytes, 'A')).kind, Sniffed::kUnknown);
}

TEST(SniffTest, HostileBytesNeverCrash) {
  std::mt19937 rng(7);
  auto hello = ClientHello("fuzz.example.com");
  for (int i = 0; i < 3000; ++i) {
    std::string b = hello;
    int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<char>(rng());
    b.resize(rng() % (b.size() + 1));
    (void)Sniff(b);
  }
}

}  // namespace
}  // namespace sandboxd::net

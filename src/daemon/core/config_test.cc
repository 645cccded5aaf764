#include "daemon/core/config.h"

#include <gtest/gtest.h>

#include "common/base64.h"

namespace sandboxd::core {
namespace {

ConfigLimits Limits() {
  ConfigLimits l;
  l.region = "loc";
  l.now_ms = 1'700'000'000'000;
  return l;
}

std::string Header(std::string_view latin1_json) { return Base64Encode(latin1_json); }

TEST(ConfigTest, DefaultsFromTheSdksMinimalConfig) {
  auto c = ParseCreateConfigHeader(Header(R"({"memory_mb":1280,"volumes":[]})"), Limits());
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->memory_mb, 1280u);
  EXPECT_FALSE(c->stop_at_ms);
  EXPECT_FALSE(c->allow_net);
}

TEST(ConfigTest, DecodesLatin1Labels) {
  // The SDK encodes with btoa: "é" arrives as the single byte 0xE9.
  auto c = ParseCreateConfigHeader(Header("{\"memory_mb\":2048,\"labels\":{\"app\":\"t\xe9st\"},\"volumes\":[]}"),
                                   Limits());
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->labels.at("app"), "t\xc3\xa9st");
  EXPECT_EQ(c->memory_mb, 2048u);
}

TEST(ConfigTest, RejectsMemoryOutOfRange) {
  for (const char* m : {"767", "4097", "100", "-1", "1280.5", "\"1280\""}) {
    auto c = ParseCreateConfigHeader(Header(std::string(R"({"memory_mb":)") + m + "}"), Limits());
    ASSERT_FALSE(c) << m;
    EXPECT_EQ(c.error().status, 400);
    EXPECT_EQ(c.error().code, "INVALID_CONFIG");
  }
  EXPECT_TRUE(ParseCreateConfigHeader(Header(R"({"memory_mb":768})"), Limits()));
  EXPECT_TRUE(ParseCreateConfigHeader(Header(R"({"memory_mb":4096})"), Limits()));
}

TEST(ConfigTest, IsolationExtension) {
  auto none = ParseCreateConfigHeader(Header(R"({"memory_mb":1280,"volumes":[]})"), Limits());
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_FALSE(none->isolation);  // the daemon's default
  for (const char* v : {"namespaces", "microvm"}) {
    auto c = ParseCreateConfigHeader(Header(std::string(R"({"memory_mb":1280,"isolation":")") + v + "\"}"),
                                     Limits());
    ASSERT_TRUE(c) << v << ": " << c.error().message;
    EXPECT_EQ(c->isolation, v);
  }
  auto null = ParseCreateConfigHeader(Header(R"({"isolation":null})"), Limits());
  ASSERT_TRUE(null) << null.error().message;
  EXPECT_FALSE(null->isolation);
  for (const char* bad : {R"("auto")", R"("kvm")", R"("MicroVM")", R"("")", "1", "true", R"(["microvm"])"}) {
    auto c = ParseCreateConfigHeader(Header(std::string(R"({"isolation":)") + bad + "}"), Limits());
    ASSERT_FALSE(c) << bad;
    EXPECT_EQ(c.error().status, 400);
    EXPECT_EQ(c.error().code, "INVALID_CONFIG");
    EXPECT_NE(c.error().message.find("isolation"), std::string::npos) << c.error().message;
  }
}

TEST(ConfigTest, RejectsBadLabels) {
  auto six = ParseCreateConfigHeader(Header(R"({"labels":{"a":"1","b":"2","c":"3","d":"4","e":"5","f":"6"}})"),
                                     Limits());
  ASSERT_FALSE(six);
  EXPECT_EQ(six.error().code, "INVALID_LABELS");
  auto long_key = ParseCreateConfigHeader(Header(R"({"labels":{")" + std::string(65, 'k') + R"(":"v"}})"), Limits());
  EXPECT_FALSE(long_key);
  auto long_val = ParseCreateConfigHeader(Header(R"({"labels":{"k":")" + std::string(129, 'v') + R"("}})"), Limits());
  EXPECT_FALSE(long_val);
  auto not_string = ParseCreateConfigHeader(Header(R"({"labels":{"k":1}})"), Limits());
  EXPECT_FALSE(not_string);
  EXPECT_TRUE(ParseCreateConfigHeader(Header(R"({"labels":{")" + std::string(64, 'k') + R"(":")" +
                                             std::string(128, 'v') + R"("}})"),
                                      Limits()));
}

TEST(ConfigTest, RejectsGarbageHeaders) {
  EXPECT_FALSE(ParseCreateConfigHeader("not base64!", Limits()));
  EXPECT_FALSE(ParseCreateConfigHeader(Header("[1,2]"), Limits()));
  EXPECT_FALSE(ParseCreateConfigHeader(Header("{"), Limits()));
  EXPECT_FALSE(ParseCreateConfigHeader("", Limits()));
}

TEST(ConfigTest, RegionMustBeServed) {
  auto c = ParseCreateConfigHeader(Header(R"({"region":"xyz"})"), Limits());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, "REGION_NOT_SERVED");
  EXPECT_TRUE(ParseCreateConfigHeader(Header(R"({"region":"loc"})"), Limits()));
}

TEST(ConfigTest, Lifetimes) {
  auto l = Limits();
  auto timed = ParseCreateConfigHeader(Header(R"({"stop_at_ms":)" + std::to_string(l.now_ms + 60'000) + "}"), l);
  ASSERT_TRUE(timed);
  EXPECT_EQ(*timed->stop_at_ms, l.now_ms + 60'000);
  EXPECT_FALSE(ParseCreateConfigHeader(Header(R"({"stop_at_ms":)" + std::to_string(l.now_ms - 3'600'000) + "}"), l));
  auto py = ParseCreateConfigHeader(Header(R"({"timeout":"5m"})"), l);
  ASSERT_TRUE(py);
  EXPECT_EQ(*py->stop_at_ms, l.now_ms + 300'000);
  EXPECT_FALSE(ParseCreateConfigHeader(Header(R"({"timeout":"5 minutes"})"), l));
  EXPECT_FALSE(ParseCreateConfigHeader(Header(R"({"timeout":"0s"})"), l));
  EXPECT_FALSE(ParseCreateConfigHeader(Header(R"({"stop_at_ms":"soon"})"), l));
  l.max_lifetime_ms = 60'000;
  EXPECT_FALSE(ParseCreateConfigHeader(Header(R"({"timeout":"2m"})"), l));
}

TEST(ConfigTest, VolumesAndSecrets) {
  EXPECT_FALSE(ParseCreateConfigHeader(Header(R"({"volumes":[{"volume":"v","path":"/d"}]})"), Limits()));
  EXPECT_FALSE(ParseCreateConfigHeader(Header(R"({"root":{"volume":"v"}})"), Limits()));
  auto s = ParseCreateConfigHeader(
      Header(R"({"secrets":{"KEY":{"hosts":["api.example.com"],"value":"s3cr3t"}},"allow_net":["example.com"]})"),
      Limits());
  ASSERT_TRUE(s);
  EXPECT_EQ(s->secrets.at("KEY").value, "s3cr3t");
  EXPECT_EQ(s->allow_net->size(), 1u);
  EXPECT_FALSE(ParseCreateConfigHeader(Header(R"({"secrets":{"BAD NAME":{"hosts":[],"value":"x"}}})"), Limits()));
}

TEST(ConfigTest, AllowNetPatternsAreValidatedAtTheEdge) {
  auto ok = ParseCreateConfigHeader(
      Header(R"({"allow_net":["example.com","api.example.com:443","*.example.org","10.0.0.1:8080","[::1]"]})"),
      Limits());
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->allow_net->size(), 5u);
  for (const char* bad : {R"({"allow_net":["exa mple.com"]})", R"({"allow_net":["example.com:99999"]})",
                          R"({"allow_net":["*"]})", R"({"allow_net":[""]})", R"({"allow_net":[42]})",
                          R"({"secrets":{"K":{"hosts":["bad host"],"value":"v"}}})"}) {
    auto r = ParseCreateConfigHeader(Header(bad), Limits());
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().status, 400) << bad;
  }
}

TEST(ConfigTest, Durations) {
  EXPECT_EQ(ParseDurationMs("30s"), 30'000);
  EXPECT_EQ(ParseDurationMs("5m"), 300'000);
  EXPECT_EQ(ParseDurationMs("2h"), 7'200'000);
  for (const char* bad : {"", "s", "5", "0m", "-1m", "1.5m", "5d", "m5", "99999999999999m"}) {
    EXPECT_FALSE(ParseDurationMs(bad)) << bad;
  }
}

}  // namespace
}  // namespace sandboxd::core

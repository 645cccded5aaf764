#include <gtest/gtest.h>

#include <csignal>
#include <vector>

#include "common/base64.h"
#include "common/signals.h"

namespace sandboxd {
namespace {

TEST(Base64Test, RoundTripsAndRejectsMalformedInput) {
  for (const std::string& s : std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    EXPECT_EQ(Base64Decode(Base64Encode(s)), s);
  }
  EXPECT_EQ(Base64Encode("hello"), "aGVsbG8=");
  EXPECT_FALSE(Base64Decode("abc"));
  EXPECT_FALSE(Base64Decode("ab=c"));
  EXPECT_FALSE(Base64Decode("a==="));
  EXPECT_FALSE(Base64Decode("ab!c"));
}

TEST(SignalsTest, NamesAndNumbers) {
  EXPECT_EQ(SignalNumber("SIGKILL"), SIGKILL);
  EXPECT_EQ(SignalNumber("SIGTERM"), SIGTERM);
  EXPECT_EQ(SignalNumber("SIGUNUSED"), SIGSYS);
  EXPECT_FALSE(SignalNumber("SIGBREAK"));
  EXPECT_FALSE(SignalNumber("SIGINFO"));
  EXPECT_FALSE(SignalNumber("KILL"));
  EXPECT_EQ(SignalName(SIGKILL), "SIGKILL");
  EXPECT_EQ(SignalName(SIGIO), "SIGIO");
  EXPECT_EQ(SignalName(SIGSYS), "SIGSYS");
  EXPECT_EQ(SignalName(200), "");
}

TEST(Base64EnvelopeTest, MatchesOnlyTheExactShape) {
  auto m = MatchBase64Envelope(R"({"id":42,"ok":{"data":"YWJj"}})", R"({"id":)", R"(,"ok":{"data":")", R"("}})");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->id, 42u);
  EXPECT_EQ(m->base64, "YWJj");
  for (const char* t : {R"({"id":042,"ok":{"data":"YWJj"}})", R"({"id":,"ok":{"data":"YWJj"}})",
                        R"({"id":1,"ok":{"data":"YW\"j"}})", R"({"id":1,"ok":{"data":null}})",
                        R"({"id":1,"ok":{"size":3}})", R"({"id":1234567890123456,"ok":{"data":""}})", ""}) {
    EXPECT_FALSE(MatchBase64Envelope(t, R"({"id":)", R"(,"ok":{"data":")", R"("}})")) << t;
  }
}

}  // namespace
}  // namespace sandboxd

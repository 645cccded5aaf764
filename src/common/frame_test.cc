#include "common/frame.h"

#include <gtest/gtest.h>

namespace sandboxd::link {
namespace {

TEST(FrameTest, RoundTripsFramesFedByteByByte) {
  std::string wire;
  AppendFrame(wire, FrameType::kControl, 0, R"({"id":1,"op":"ping"})");
  AppendFrame(wire, FrameType::kData, 7, std::string(1000, 'x'));
  AppendWindow(wire, 7, 65536);
  AppendFrame(wire, FrameType::kEof, 7, "");

  FrameDecoder dec;
  std::vector<Frame> got;
  for (char c : wire) {
    auto used = dec.Feed(std::span<const char>(&c, 1));
    ASSERT_TRUE(used.has_value());
    ASSERT_EQ(*used, 1u);
    while (auto f = dec.Next()) got.push_back(std::move(*f));
  }
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].type, FrameType::kControl);
  EXPECT_EQ(got[0].payload, R"({"id":1,"op":"ping"})");
  EXPECT_EQ(got[1].channel, 7u);
  EXPECT_EQ(got[1].payload.size(), 1000u);
  EXPECT_EQ(ParseWindow(got[2].payload), 65536u);
  EXPECT_EQ(got[3].type, FrameType::kEof);
}

TEST(FrameTest, FeedStopsAtEachCompleteFrame) {
  std::string wire;
  AppendFrame(wire, FrameType::kData, 1, "abc");
  AppendFrame(wire, FrameType::kData, 2, "defg");
  FrameDecoder dec;
  std::span<const char> rest(wire);
  std::vector<Frame> got;
  while (!rest.empty()) {
    auto used = dec.Feed(rest);
    ASSERT_TRUE(used);
    rest = rest.subspan(*used);
    while (auto f = dec.Next()) got.push_back(std::move(*f));
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].payload, "defg");
}

TEST(FrameTest, RejectsOversizedFrame) {
  std::string wire;
  AppendFrame(wire, FrameType::kData, 1, "");
  wire[0] = wire[1] = wire[2] = '\xff';  // claims ~16 MiB
  FrameDecoder dec;
  EXPECT_FALSE(dec.Feed(wire).has_value());
  EXPECT_FALSE(dec.Feed(wire).has_value());  // stays failed
}

TEST(FrameTest, RejectsOversizedDataChunkAndBadTypes) {
  {
    std::string wire;
    AppendFrame(wire, FrameType::kData, 1, std::string(kMaxDataChunk + 1, 'a'));
    FrameDecoder dec;
    EXPECT_FALSE(dec.Feed(wire).has_value());
  }
  {
    std::string wire;
    AppendFrame(wire, FrameType::kData, 1, "x");
    wire[8] = 9;
    FrameDecoder dec;
    EXPECT_FALSE(dec.Feed(wire).has_value());
  }
  {
    std::string wire;
    AppendFrame(wire, FrameType::kControl, 3, "{}");  // control must be channel 0
    FrameDecoder dec;
    EXPECT_FALSE(dec.Feed(wire).has_value());
  }
}

}  // namespace
}  // namespace sandboxd::link

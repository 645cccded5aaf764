#include "common/vm_boot.h"

#include <gtest/gtest.h>

#include "common/frame.h"

namespace sandboxd::vmboot {
namespace {

// The CONTROL payload of one whole frame.
std::string Payload(const std::string& frame) {
  link::FrameDecoder d;
  auto n = d.Feed(frame);
  EXPECT_TRUE(n && *n == frame.size());
  auto f = d.Next();
  EXPECT_TRUE(f && f->type == link::FrameType::kControl && f->channel == 0);
  return f ? f->payload : "";
}

TEST(VmBoot, AwaitingConfigRoundTrip) {
  EXPECT_TRUE(IsAwaitingConfig(Payload(AwaitingConfigFrame())));
  EXPECT_FALSE(IsAwaitingConfig(R"({"event":"ready","version":1})"));
  EXPECT_FALSE(IsAwaitingConfig(R"({"event":"awaiting-config","version":2})"));
  EXPECT_FALSE(IsAwaitingConfig("not json"));
}

TEST(VmBoot, ConfigRoundTrip) {
  BootConfig c;
  c.hostname = "sbx-1.example";
  c.pids_max = 2048;
  c.realtime_ns = 1'700'000'000'123'456'789;
  c.entropy = std::string("\x00\x01\xfe\xff random", 11);
  auto back = ParseConfig(Payload(ConfigFrame(c)));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->hostname, c.hostname);
  EXPECT_EQ(back->pids_max, c.pids_max);
  EXPECT_EQ(back->realtime_ns, c.realtime_ns);
  EXPECT_EQ(back->entropy, c.entropy);
}

TEST(VmBoot, ConfigIsValidated) {
  const std::string ok_tail = R"(,"realtime_ns":1,"entropy":"00ff"})";
  EXPECT_TRUE(ParseConfig(R"({"op":"config","version":1,"hostname":"h","pids_max":16)" + ok_tail));
  for (
      const std::string& bad : {
          std::string("[]"),
          std::string(R"({"op":"config","version":2,"hostname":"h","pids_max":16)") + ok_tail,
          std::string(R"({"op":"other","version":1,"hostname":"h","pids_max":16)") + ok_tail,
          std::string(R"({"op":"config","version":1,"hostname":"a b","pids_max":16)") + ok_tail,
          std::string(R"({"op":"config","version":1,"hostname":"","pids_max":16)") + ok_tail,
          std::string(R"({"op":"config","version":1,"hostname":"h","pids_max":15)") + ok_tail,
          std::string(R"({"op":"config","version":1,"hostname":"h","pids_max":-1)") + ok_tail,
          std::string(
              R"({"op":"config","version":1,"hostname":"h","pids_max":16,"realtime_ns":0,"entropy":"00"})"),
          std::string(
              R"({"op":"config","version":1,"hostname":"h","pids_max":16,"realtime_ns":1,"entropy":""})"),
          std::string(
              R"({"op":"config","version":1,"hostname":"h","pids_max":16,"realtime_ns":1,"entropy":"0"})"),
          std::string(
              R"({"op":"config","version":1,"hostname":"h","pids_max":16,"realtime_ns":1,"entropy":"zz"})"),
          std::string(
              R"({"op":"config","version":1,"hostname":"h","pids_max":16,"realtime_ns":1,"entropy":"AB"})"),
          std::string(
              R"({"op":"config","version":1,"hostname":"h","pids_max":16,"realtime_ns":1,"entropy":")") +
              std::string(2 * (kMaxEntropyBytes + 1), 'a') + "\"}",
      }) {
    EXPECT_FALSE(ParseConfig(bad)) << bad;
  }
}

}  // namespace
}  // namespace sandboxd::vmboot

#include "daemon/core/ids.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>

namespace sandboxd::core {
namespace {

TEST(IdsTest, SandboxIdsMatchTheSdksRegex) {
  std::regex re("^sbx_([a-z]{3})_[0-9a-hjkmnp-z]{20}$");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto id = NewSandboxId("loc");
    EXPECT_TRUE(std::regex_match(id, re)) << id;
    EXPECT_TRUE(IsValidSandboxId(id));
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_FALSE(IsValidSandboxId("sbx_loc_0123456789abcdefghjl"));  // 'l' excluded
  EXPECT_FALSE(IsValidSandboxId("sbx_LOC_0123456789abcdefghjk"));
  EXPECT_FALSE(IsValidSandboxId("sbx_loc_0123456789abcdefghj"));
  EXPECT_FALSE(IsValidSandboxId("../../etc/passwd"));
}

TEST(IdsTest, TokensAreOrgTokensAndHashStable) {
  auto t = NewOrgToken();
  EXPECT_TRUE(t.starts_with("ddo_"));
  EXPECT_EQ(t.size(), 44u);
  EXPECT_NE(t, NewOrgToken());
  EXPECT_EQ(HashToken(t), HashToken(t));
  EXPECT_EQ(HashToken(t).size(), 64u);
  EXPECT_EQ(HashToken("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(IdsTest, Regions) {
  EXPECT_TRUE(IsValidRegion("loc"));
  EXPECT_FALSE(IsValidRegion("lo"));
  EXPECT_FALSE(IsValidRegion("Loc"));
  EXPECT_FALSE(IsValidRegion("l0c"));
}

}  // namespace
}  // namespace sandboxd::core

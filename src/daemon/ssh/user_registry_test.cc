#include "daemon/ssh/user_registry.h"

#include <gtest/gtest.h>

#include <set>

namespace sandboxd::ssh {
namespace {

TEST(UserRegistry, UsernamesAreLongRandomAndWellFormed) {
  UserRegistry r;
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    std::string name = r.Expose("org", "sbx_loc_" + std::to_string(i));
    EXPECT_EQ(name.size(), 26u);  // 130 bits of base32
    EXPECT_TRUE(UserRegistry::IsWellFormed(name)) << name;
    EXPECT_TRUE(seen.insert(name).second) << "duplicate " << name;
  }
}

TEST(UserRegistry, ExposeIsStablePerSandbox) {
  UserRegistry r;
  std::string a = r.Expose("org", "sbx_loc_a");
  EXPECT_EQ(r.Expose("org", "sbx_loc_a"), a);
  EXPECT_NE(r.Expose("org", "sbx_loc_b"), a);
  EXPECT_EQ(r.size(), 2u);
}

TEST(UserRegistry, LookupFindsTheSandboxAndNothingElse) {
  UserRegistry r;
  std::string a = r.Expose("org1", "sbx_loc_a");
  auto ref = r.Lookup(a);
  ASSERT_TRUE(ref);
  EXPECT_EQ(ref->org, "org1");
  EXPECT_EQ(ref->id, "sbx_loc_a");
  EXPECT_FALSE(r.Lookup(""));
  EXPECT_FALSE(r.Lookup("root"));
  std::string other = a;
  other[0] = other[0] == 'a' ? 'b' : 'a';
  EXPECT_FALSE(r.Lookup(other));
  EXPECT_FALSE(r.Lookup(a + "x"));
  std::string upper = a;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_FALSE(r.Lookup(upper));
}

TEST(UserRegistry, PruneForgetsStoppedSandboxes) {
  UserRegistry r;
  std::string a = r.Expose("org", "sbx_loc_a");
  std::string b = r.Expose("org", "sbx_loc_b");
  r.Prune([](const SandboxRef& ref) { return ref.id == "sbx_loc_b"; });
  EXPECT_FALSE(r.Lookup(a));
  EXPECT_TRUE(r.Lookup(b));
  EXPECT_EQ(r.size(), 1u);
  // A new expose of the pruned sandbox id gets a fresh name.
  EXPECT_NE(r.Expose("org", "sbx_loc_a"), a);
}

TEST(UserRegistry, AnotherOrgNeverGetsTheSameName) {
  UserRegistry r;
  std::string a = r.Expose("org1", "sbx_loc_a");
  std::string b = r.Expose("org2", "sbx_loc_a");
  EXPECT_NE(a, b);
  EXPECT_EQ(r.Lookup(b)->org, "org2");
}

}  // namespace
}  // namespace sandboxd::ssh

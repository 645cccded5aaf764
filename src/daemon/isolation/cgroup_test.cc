#include "daemon/isolation/cgroup.h"

#include <unistd.h>

#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace sandboxd::isolation {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

TEST(Cgroup, CreatesLimitsAndRemoves) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  auto driver = CgroupDriver::Detect("sandboxd-cgtest-" + std::to_string(::getpid()));
  ASSERT_TRUE(driver) << driver.error().message;
  const std::string name = "cg_" + std::to_string(::getpid());
  auto cg = driver->Create(name, {.memory_bytes = 256ULL << 20, .cpus = 1, .pids_max = 32});
  ASSERT_TRUE(cg) << cg.error().message;
  bool saw_memory = false, saw_pids = false;
  for (const auto& d : (*cg)->dirs()) {
    ASSERT_EQ(::access(d.c_str(), F_OK), 0) << d;
    if (!::access((d + "/memory.max").c_str(), F_OK)) {
      EXPECT_EQ(Slurp(d + "/memory.max"), std::to_string(256ULL << 20));
      saw_memory = true;
    }
    if (!::access((d + "/memory.limit_in_bytes").c_str(), F_OK)) {
      EXPECT_EQ(Slurp(d + "/memory.limit_in_bytes"), std::to_string(256ULL << 20));
      saw_memory = true;
    }
    if (!::access((d + "/pids.max").c_str(), F_OK)) {
      EXPECT_EQ(Slurp(d + "/pids.max"), "32");
      saw_pids = true;
    }
    if (!::access((d + "/cpu.cfs_quota_us").c_str(), F_OK)) {
      EXPECT_EQ(Slurp(d + "/cpu.cfs_quota_us"), "100000");
    }
  }
  EXPECT_TRUE(saw_memory);
  EXPECT_TRUE(saw_pids);
  EXPECT_EQ((*cg)->OomKillCount(), 0u);
  auto dirs = (*cg)->dirs();
  ASSERT_TRUE((*cg)->Destroy());
  ASSERT_TRUE((*cg)->Destroy());  // idempotent
  for (const auto& d : dirs) EXPECT_NE(::access(d.c_str(), F_OK), 0) << d;
  driver->ReapStale({});
  for (const auto& p : driver->parent_dirs()) ::rmdir(p.c_str());
}

}  // namespace
}  // namespace sandboxd::isolation

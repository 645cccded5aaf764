// The scratch disk template and its sparse copies (needs mke2fs).
#include "daemon/isolation/microvm/scratch_image.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace sandboxd::isolation::microvm {
namespace {

class ScratchImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbx-scratch-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ScratchImageTest, TemplateIsSparseExt4AndCopiesKeepHoles) {
  const std::string tmpl = dir_ + "/t/scratch.img";
  constexpr uint64_t kSize = 10ULL << 30;
  auto st = EnsureScratchTemplate(tmpl, kSize);
  if (!st && st.error().message.find("mke2fs not found") != std::string::npos) {
    GTEST_SKIP() << st.error().message;
  }
  ASSERT_TRUE(st) << st.error().message;
  struct stat s {};
  ASSERT_EQ(::stat(tmpl.c_str(), &s), 0);
  EXPECT_EQ(static_cast<uint64_t>(s.st_size), kSize);
  const uint64_t allocated = static_cast<uint64_t>(s.st_blocks) * 512;
  EXPECT_LT(allocated, 64ULL << 20) << "the template is not sparse";
  const auto mtime = s.st_mtim;

  // Up to date: not remade.
  ASSERT_TRUE(EnsureScratchTemplate(tmpl, kSize));
  ASSERT_EQ(::stat(tmpl.c_str(), &s), 0);
  EXPECT_EQ(s.st_mtim.tv_nsec, mtime.tv_nsec);

  auto copy = CloneSparse(tmpl, dir_ + "/copy.img");
  ASSERT_TRUE(copy) << copy.error().message;
  struct stat c {};
  ASSERT_EQ(::fstat(copy->get(), &c), 0);
  EXPECT_EQ(c.st_size, s.st_size);
  EXPECT_EQ(c.st_mode & 0777, 0600u);
  EXPECT_LE(*AllocatedBytes(copy->get()), allocated + (1 << 20));
  // Same bytes where the template has data: the ext4 superblock at 1024.
  char a[1024], b[1024];
  UniqueFd t(::open(tmpl.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_EQ(::pread(t.get(), a, sizeof a, 1024), 1024);
  ASSERT_EQ(::pread(copy->get(), b, sizeof b, 1024), 1024);
  EXPECT_EQ(std::string(a, sizeof a), std::string(b, sizeof b));
  EXPECT_EQ(static_cast<unsigned char>(b[0x38]), 0x53);  // s_magic 0xEF53, little-endian
  EXPECT_EQ(static_cast<unsigned char>(b[0x39]), 0xEF);

  // Never overwrites.
  EXPECT_FALSE(CloneSparse(tmpl, dir_ + "/copy.img"));
  // A different size remakes the template.
  ASSERT_TRUE(EnsureScratchTemplate(tmpl, 1ULL << 30));
  ASSERT_EQ(::stat(tmpl.c_str(), &s), 0);
  EXPECT_EQ(s.st_size, 1LL << 30);
}

}  // namespace
}  // namespace sandboxd::isolation::microvm

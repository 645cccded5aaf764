#include "daemon/ssh/host_key.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace sandboxd::ssh {
namespace {

class HostKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbx-hostkey-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/ssh_host_ed25519_key";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST_F(HostKeyTest, GeneratesAnEd25519KeyWithMode0600) {
  auto key = LoadOrCreateHostKey(path_);
  ASSERT_TRUE(key) << key.error().message;
  EXPECT_EQ(ssh_key_type(key->get()), SSH_KEYTYPE_ED25519);
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_TRUE(Fingerprint(key->get()).starts_with("SHA256:"));
  // No temporary file is left behind.
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir_)) files += e.is_regular_file() ? 1 : 0;
  EXPECT_EQ(files, 1u);
}

TEST_F(HostKeyTest, TheSameKeyIsLoadedOnTheNextStart) {
  auto first = LoadOrCreateHostKey(path_);
  ASSERT_TRUE(first);
  auto second = LoadOrCreateHostKey(path_);
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(ssh_key_cmp(first->get(), second->get(), SSH_KEY_CMP_PRIVATE), 0);
  EXPECT_EQ(Fingerprint(first->get()), Fingerprint(second->get()));
}

TEST_F(HostKeyTest, AKeyReadableByOthersIsTightened) {
  ASSERT_TRUE(LoadOrCreateHostKey(path_));
  ASSERT_EQ(::chmod(path_.c_str(), 0644), 0);
  ASSERT_TRUE(LoadOrCreateHostKey(path_));
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(HostKeyTest, AnUnreadableKeyIsAnErrorNotReplaced) {
  { std::ofstream(path_) << "not a key\n"; }
  ::chmod(path_.c_str(), 0600);
  auto key = LoadOrCreateHostKey(path_);
  ASSERT_FALSE(key);
  EXPECT_NE(key.error().message.find("cannot read"), std::string::npos);
  std::ifstream in(path_);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(content, "not a key\n");
}

TEST_F(HostKeyTest, ASymlinkIsRefused) {
  ASSERT_EQ(::symlink("/etc/hostname", path_.c_str()), 0);
  EXPECT_FALSE(LoadOrCreateHostKey(path_));
}

}  // namespace
}  // namespace sandboxd::ssh

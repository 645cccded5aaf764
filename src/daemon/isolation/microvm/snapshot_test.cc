// The snapshot store and cache without VMs: fingerprints, the on-disk
// layout, and one preparation shared by concurrent creates (a fake PrepareFn
// stands in for booting and migrating a VM).
#include "daemon/isolation/microvm/snapshot.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

namespace sandboxd::isolation::microvm {
namespace {

namespace fs = std::filesystem;

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sbx-snapshot-test-XXXXXX";
    root_ = mkdtemp(tmpl);
    dir_ = root_ + "/snapshots";
    Write(root_ + "/kernel", "kernel");
    Write(root_ + "/initrd", "initrd");
  }
  void TearDown() override { fs::remove_all(root_); }
  static void Write(const std::string& path, const std::string& data) {
    std::ofstream(path) << data;
  }
  static std::string Read(int fd) {
    std::string out;
    char buf[256];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }
  SnapshotInputs Inputs() const {
    return {{root_ + "/kernel", root_ + "/initrd"}, {"qemu", "-m", "1280"}, ""};
  }
  std::string root_, dir_;
};

TEST_F(SnapshotTest, FingerprintFollowsEveryInput) {
  auto a = SnapshotFingerprint(Inputs());
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->size(), 64u);
  EXPECT_EQ(*SnapshotFingerprint(Inputs()), *a);  // stable

  auto argv = Inputs();
  argv.qemu_argv[2] = "2048";
  EXPECT_NE(*SnapshotFingerprint(argv), *a);
  auto extra = Inputs();
  extra.extra = "flags : avx2";
  EXPECT_NE(*SnapshotFingerprint(extra), *a);

  // A rebuilt file is renamed into place: a new inode.
  Write(root_ + "/initrd.new", "initrd");
  fs::rename(root_ + "/initrd.new", root_ + "/initrd");
  auto b = SnapshotFingerprint(Inputs());
  EXPECT_NE(*b, *a);
  // Rewritten in place: the mtime (and here the size) changes.
  Write(root_ + "/kernel", "kernel 2");
  EXPECT_NE(*SnapshotFingerprint(Inputs()), *b);

  auto missing = Inputs();
  missing.files.push_back(root_ + "/nope");
  EXPECT_FALSE(SnapshotFingerprint(missing));
}

TEST_F(SnapshotTest, StoreLayoutCommitAndCleanup) {
  SnapshotStore store(dir_);
  const std::string fp(64, 'a'), old_fp(64, 'b');
  EXPECT_EQ(store.Open(fp).error().code, ENOENT);

  auto old_p = store.Begin(old_fp);
  ASSERT_TRUE(old_p) << old_p.error().message;
  ASSERT_EQ(::write(old_p->fd.get(), "old", 3), 3);
  ASSERT_TRUE(store.Commit(std::move(*old_p), "{}"));
  fs::create_directory(dir_ + "/.tmp-crashed-1-0");  // a preparation that died
  fs::create_directory(dir_ + "/unrelated");         // not a snapshot: left alone

  auto p = store.Begin(fp);
  ASSERT_TRUE(p) << p.error().message;
  const std::string tmp = p->tmp_dir;
  ASSERT_EQ(::write(p->fd.get(), "state", 5), 5);
  EXPECT_FALSE(store.Open(fp));  // not visible before Commit
  ASSERT_TRUE(store.Commit(std::move(*p), R"({"x":1})"));
  EXPECT_FALSE(fs::exists(tmp));

  auto fd = store.Open(fp);
  ASSERT_TRUE(fd) << fd.error().message;
  EXPECT_EQ(Read(fd->get()), "state");
  EXPECT_EQ(::fcntl(fd->get(), F_GETFL) & O_ACCMODE, O_RDONLY);  // QEMU gets a read-only fd
  // Private to the daemon: the dir 0700, the files 0600.
  struct stat st {};
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir_ + "/" + fp + "/state").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir_ + "/" + fp + "/meta.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // The older snapshot and the crashed preparation are gone.
  EXPECT_FALSE(fs::exists(dir_ + "/" + old_fp));
  EXPECT_FALSE(fs::exists(dir_ + "/.tmp-crashed-1-0"));
  EXPECT_TRUE(fs::exists(dir_ + "/unrelated"));

  auto d = store.Begin(fp);
  ASSERT_TRUE(d);
  const std::string dtmp = d->tmp_dir;
  store.Discard(std::move(*d));
  EXPECT_FALSE(fs::exists(dtmp));
  store.Remove(fp);
  EXPECT_FALSE(store.Open(fp));
}

TEST_F(SnapshotTest, StableTscKhz) {
  SnapshotStore store(dir_);
  EXPECT_EQ(store.StableTscKhz(2'596'150), 2'596'150u);        // first: stored
  EXPECT_EQ(store.StableTscKhz(2'596'157), 2'596'150u);        // a few ppm off: the stored rate
  EXPECT_EQ(store.StableTscKhz(2'596'150 + 300), 2'596'450u);  // > 100 ppm: the new one
  EXPECT_EQ(store.StableTscKhz(2'596'451), 2'596'450u);
}

TEST_F(SnapshotTest, CachePreparesOnceForConcurrentCreates) {
  std::atomic<int> calls{0};
  SnapshotCache cache(SnapshotStore(dir_), std::string(64, 'c'), [&](int fd) -> Status {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (::write(fd, "vm", 2) != 2) return FailErrno("write");
    return {};
  });
  std::vector<std::thread> creates;
  std::atomic<int> got{0};
  for (int i = 0; i < 4; ++i) {
    creates.emplace_back([&] {
      auto fd = cache.Acquire(std::chrono::seconds(10));
      if (fd && Read(fd->get()) == "vm") ++got;
    });
  }
  for (auto& t : creates) t.join();
  EXPECT_EQ(got, 4);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(cache.prepared_count(), 1);
  cache.AwaitIdle(std::chrono::seconds(10));  // nothing running: returns at once
  // Later creates reuse it; Invalidate makes the next one prepare again.
  EXPECT_TRUE(cache.Acquire(std::chrono::seconds(10)));
  EXPECT_EQ(calls, 1);
  cache.Invalidate();
  EXPECT_TRUE(cache.Acquire(std::chrono::seconds(10)));
  EXPECT_EQ(calls, 2);
}

TEST_F(SnapshotTest, FailedPreparationMeansColdBootsUntilRetry) {
  using Clock = SnapshotCache::Clock;
  std::atomic<Clock::time_point> now{Clock::time_point{} + std::chrono::hours(1)};
  std::atomic<int> calls{0};
  std::atomic<bool> fail{true};
  SnapshotCache cache(
      SnapshotStore(dir_), std::string(64, 'd'),
      [&](int fd) -> Status {
        ++calls;
        if (fail) return FailMsg("QEMU exited during boot");
        return ::write(fd, "vm", 2) == 2 ? Status() : FailErrno("write");
      },
      [&] { return now.load(); });
  EXPECT_FALSE(cache.Acquire(std::chrono::seconds(10)));
  EXPECT_EQ(calls, 1);
  // No pending files of the failed attempt.
  for (const auto& e : fs::directory_iterator(dir_)) ADD_FAILURE() << "left: " << e.path();
  EXPECT_FALSE(cache.Acquire(std::chrono::seconds(10)));  // within kRetryAfter: no new attempt
  EXPECT_EQ(calls, 1);
  fail = false;
  now = now.load() + SnapshotCache::kRetryAfter + std::chrono::seconds(1);
  EXPECT_TRUE(cache.Acquire(std::chrono::seconds(10)));
  EXPECT_EQ(calls, 2);
}

TEST_F(SnapshotTest, AcquireGivesUpAfterItsWaitAndDestructionJoins) {
  std::atomic<bool> cancel{false};
  auto cache = std::make_unique<SnapshotCache>(
      SnapshotStore(dir_), std::string(64, 'e'), [&](int) -> Status {
        while (!cancel) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return FailMsg("cancelled");
      });
  auto t0 = std::chrono::steady_clock::now();
  // Boot cold rather than wait longer; another size waits a bounded time too.
  EXPECT_FALSE(cache->Acquire(std::chrono::milliseconds(100)));
  cache->AwaitIdle(std::chrono::milliseconds(100));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  cancel = true;  // what the backend does by killing the VM being prepared
  cache.reset();
  for (const auto& e : fs::directory_iterator(dir_)) ADD_FAILURE() << "left: " << e.path();
}

}  // namespace
}  // namespace sandboxd::isolation::microvm

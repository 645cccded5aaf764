// Starts real sandboxes: needs root, overlayfs, cgroups and the base image
// (SANDBOXD_TEST_ROOTFS, or built once with scripts/build-image). The agent is
// not used: PID 1 is `bash -c SCRIPT` from the image, which reports on fd 3 (its
// end of the link) and the test reads the daemon's end.
#include "daemon/isolation/namespaces/namespaces_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "daemon/isolation/cgroup.h"

namespace sandboxd::isolation {
namespace {

using Clock = std::chrono::steady_clock;
// Per test process, so that ReapStale in one test (ctest -j runs each test in
// its own process) cannot kill another test's sandboxes.
const std::string kCgroupParent = "sandboxd-test-" + std::to_string(::getpid());
constexpr const char* kEnd = "__END__\n";

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

// Reads from `fd` until `kEnd` arrives, EOF, or the deadline; returns what came
// before kEnd.
std::string ReadReport(int fd, std::chrono::seconds timeout = std::chrono::seconds(30)) {
  std::string out;
  const auto deadline = Clock::now() + timeout;
  while (out.find(kEnd) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      ADD_FAILURE() << "timed out; got so far: " << out;
      break;
    }
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  auto pos = out.find(kEnd);
  if (pos != std::string::npos) out.resize(pos);
  return out;
}

std::string TestRootfs() {
  if (const char* env = std::getenv("SANDBOXD_TEST_ROOTFS"); env && *env) return env;
  const std::string out = std::string(SANDBOXD_BINARY_DIR) + "/test-image/rootfs";
  const std::string cmd = std::string(SANDBOXD_SOURCE_DIR) + "/scripts/build-image " + out +
                          " >/dev/null";
  if (std::system(cmd.c_str()) != 0) return "";
  return out;
}

class NamespacesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    rootfs_ = new std::string(TestRootfs());
  }
  static void TearDownTestSuite() {
    delete rootfs_;
    rootfs_ = nullptr;
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    ASSERT_TRUE(rootfs_ && !rootfs_->empty()) << "no base image";
    char tmpl[] = "/tmp/sbx-nstest-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    state_dir_ = tmpl;
  }
  void TearDown() override {
    if (!state_dir_.empty()) {
      EXPECT_EQ(::rmdir(state_dir_.c_str()), 0) << "state dir not empty: " << state_dir_;
    }
    for (const char* h : {"", "/memory", "/cpu", "/pids"}) {
      ::rmdir((std::string("/sys/fs/cgroup") + h + "/" + kCgroupParent).c_str());
    }
  }

  std::unique_ptr<Backend> MakeBackend(const std::string& script,
                                       const std::string& cgroup_root = "/sys/fs/cgroup") {
    NamespacesConfig c;
    c.cgroup_root = cgroup_root;
    c.rootfs_dir = *rootfs_;
    c.state_dir = state_dir_;
    c.init_path_in_image = "/bin/bash";
    c.init_argv = {"bash", "-c", script};
    c.cgroup_parent = kCgroupParent;
    auto b = MakeNamespacesBackend(c);
    EXPECT_TRUE(b) << b.error().message;
    return b ? std::move(*b) : nullptr;
  }

  SandboxSpec Spec(const std::string& id) {
    SandboxSpec s;
    s.id = id + "_" + std::to_string(::getpid());
    s.hostname = "testbox";
    return s;
  }

  // Starts `script` as PID 1 and returns the instance and its fd-3 report.
  std::pair<std::unique_ptr<Instance>, std::string> Run(const std::string& script,
                                                        const SandboxSpec& spec) {
    auto backend = MakeBackend(script);
    if (!backend) return {};
    auto inst = backend->Start(spec);
    EXPECT_TRUE(inst) << inst.error().message;
    if (!inst) return {};
    UniqueFd link = (*inst)->TakeLinkFd();
    EXPECT_TRUE(link.valid());
    std::string report = ReadReport(link.get());
    return {std::move(*inst), report};
  }

  static std::string* rootfs_;
  std::string state_dir_;
};
std::string* NamespacesTest::rootfs_ = nullptr;

TEST_F(NamespacesTest, InitIsPid1AndSeesOnlyItsProcesses) {
  auto [inst, out] = Run(
      "echo $$ >&3; ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' ' >&3; echo >&3;"
      "ps -e -o pid= | wc -l >&3; cat /proc/self/cgroup >&3; echo __END__ >&3",
      Spec("pid1"));
  ASSERT_TRUE(inst);
  auto lines = Lines(out);
  ASSERT_GE(lines.size(), 3u) << out;
  EXPECT_EQ(lines[0], "1");
  std::istringstream pids(lines[1]);
  int pid, count = 0;
  while (pids >> pid) {
    EXPECT_LT(pid, 20) << "host pid visible: " << lines[1];
    ++count;
  }
  EXPECT_LE(count, 5) << lines[1];
  EXPECT_LE(std::stoi(lines[2]), 4);  // bash, ps, wc (+ subshell)
  // cgroup namespace: the sandbox's cgroup is its root.
  for (size_t i = 3; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].substr(lines[i].rfind(':')), ":/") << out;
  }
  EXPECT_TRUE(inst->Destroy());
}

TEST_F(NamespacesTest, RootInsideIsHostUidBase) {
  auto [inst, out] = Run(
      "id -u >&3; id -g >&3; cat /proc/self/uid_map >&3; echo __END__ >&3; exec sleep 60",
      Spec("uid"));
  ASSERT_TRUE(inst);
  auto lines = Lines(out);
  ASSERT_GE(lines.size(), 3u) << out;
  EXPECT_EQ(lines[0], "0");
  EXPECT_EQ(lines[1], "0");
  std::istringstream map(lines[2]);
  uint64_t inside, outside, count;
  map >> inside >> outside >> count;
  EXPECT_EQ(inside, 0u);
  EXPECT_EQ(outside, 100000u);
  EXPECT_EQ(count, 65536u);
  const std::string status = Slurp("/proc/" + std::to_string(inst->InitPid()) + "/status");
  EXPECT_NE(status.find("Uid:\t100000\t100000\t100000\t100000"), std::string::npos) << status;
  EXPECT_NE(status.find("Gid:\t100000\t100000\t100000\t100000"), std::string::npos) << status;
  EXPECT_NE(status.find("NoNewPrivs:\t1"), std::string::npos);
  EXPECT_NE(status.find("Seccomp:\t2"), std::string::npos);
  EXPECT_TRUE(inst->Destroy());
}

TEST_F(NamespacesTest, NoHostFilesVisible) {
  const std::string marker = "/root/sbx-host-marker-" + std::to_string(::getpid());
  { std::ofstream(marker) << "secret"; }
  ASSERT_TRUE(Exists(marker));
  auto [inst, out] = Run(
      "for p in " + marker + " /etc/shadow /work /root/.ssh /etc/ssh " + state_dir_ +
          "; do if [ -e $p ]; then echo present $p >&3; fi; done;"
          "grep -c . /proc/self/mounts >&3; echo __END__ >&3",
      Spec("hostfiles"));
  ::unlink(marker.c_str());
  ASSERT_TRUE(inst);
  auto lines = Lines(out);
  ASSERT_EQ(lines.size(), 1u) << out;  // only the mount count, no "present"
  EXPECT_TRUE(inst->Destroy());
}

TEST_F(NamespacesTest, WritesDoNotReachTheImageOrOtherSandboxes) {
  auto [a, out] = Run(
      "echo x > /usr/bin/sbx-written && echo wrote >&3; rm -f /usr/bin/ls && echo removed >&3;"
      "echo __END__ >&3",
      Spec("writer"));
  ASSERT_TRUE(a);
  EXPECT_EQ(out, "wrote\nremoved\n");
  EXPECT_FALSE(Exists(*rootfs_ + "/usr/bin/sbx-written"));
  EXPECT_TRUE(Exists(*rootfs_ + "/usr/bin/ls"));
  auto [b, out2] = Run(
      "if [ -e /usr/bin/sbx-written ]; then echo present >&3; else echo absent >&3; fi;"
      "test -x /usr/bin/ls && echo ls >&3; echo __END__ >&3",
      Spec("reader"));
  ASSERT_TRUE(b);
  EXPECT_EQ(out2, "absent\nls\n");
  EXPECT_TRUE(a->Destroy());
  EXPECT_TRUE(b->Destroy());
}

TEST_F(NamespacesTest, PrivilegedOperationsFail) {
  // ctypes gives the raw errno of each syscall.
  const std::string py = R"PY(
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def err(rc):
    return ctypes.get_errno() if rc != 0 else 0
out = []
out.append(("mount_tmpfs", err(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None))))
out.append(("mount_vda", err(libc.mount(b"/dev/vda", b"/mnt", b"ext4", 0, None))))
out.append(("umount_proc", err(libc.umount2(b"/proc", 2))))
fd = os.open("/bin/true", os.O_RDONLY)
out.append(("finit_module", err(libc.syscall(313, fd, b"", 0))))
out.append(("init_module", err(libc.syscall(175, None, 0, b""))))
out.append(("unshare_user", err(libc.unshare(0x10000000))))
out.append(("unshare_mnt", err(libc.unshare(0x00020000))))
out.append(("sethostname", err(libc.sethostname(b"evil", 4))))
out.append(("mknod", err(libc.mknod(b"/tmp/sda", 0o60600, os.makedev(8, 0)))))
def write(path):
    try:
        with open(path, "w") as f:
            f.write("1")
        return 0
    except OSError as e:
        return e.errno
out.append(("proc_sys", write("/proc/sys/kernel/ns_last_pid")))
out.append(("sysrq", write("/proc/sysrq-trigger")))
out.append(("dev_tty", write("/dev/tty")))
os.write(3, "".join("%s %d\n" % kv for kv in out).encode())
)PY";
  auto [inst, out] = Run("python3 -c '" + py +
                             "'; unshare -U true 2>/dev/null; echo unshare_cmd $? >&3;"
                             "echo __END__ >&3",
                         Spec("priv"));
  ASSERT_TRUE(inst);
  std::map<std::string, int> got;
  for (const auto& l : Lines(out)) {
    std::istringstream in(l);
    std::string k;
    int v;
    in >> k >> v;
    got[k] = v;
  }
  EXPECT_EQ(got.size(), 13u) << out;
  EXPECT_EQ(got["proc_sys"], EROFS) << out;
  // Masked (writes go to /dev/null), or absent on kernels without SYSRQ.
  EXPECT_TRUE(got["sysrq"] == 0 || got["sysrq"] == ENOENT) << out;
  EXPECT_EQ(got["dev_tty"], ENXIO) << out;  // no controlling terminal
  for (const char* k : {"mount_tmpfs", "mount_vda", "umount_proc", "finit_module",
                        "init_module", "unshare_user", "unshare_mnt", "sethostname", "mknod"}) {
    EXPECT_EQ(got[k], EPERM) << k << "\n" << out;
  }
  EXPECT_NE(got["unshare_cmd"], 0);
  EXPECT_TRUE(inst->Destroy());
}

TEST_F(NamespacesTest, HostnameAndLoopbackOnly) {
  auto [inst, out] = Run(
      "hostname >&3; ls /sys/class/net | tr '\\n' ' ' >&3; echo >&3;"
      "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ' >&3; echo >&3;"
      "cat /sys/class/net/lo/operstate >&3; echo __END__ >&3",
      Spec("net"));
  ASSERT_TRUE(inst);
  auto lines = Lines(out);
  ASSERT_EQ(lines.size(), 4u) << out;
  EXPECT_EQ(lines[0], "testbox");
  EXPECT_EQ(lines[1], "lo ");
  EXPECT_EQ(lines[2], "lo ");
  EXPECT_EQ(lines[3], "unknown");  // lo is up (it reports "unknown", down reports "down")
  EXPECT_TRUE(inst->Destroy());
}

TEST_F(NamespacesTest, MemoryHogIsOomKilled) {
  SandboxSpec spec = Spec("oom");
  spec.memory_mb = 800;
  auto [inst, out] = Run(
      "python3 -c 'x = b\"a\" * (1200 << 20); print(len(x))' >/dev/null; echo $? >&3;"
      "echo __END__ >&3",
      spec);
  ASSERT_TRUE(inst);
  EXPECT_EQ(out, "137\n");  // SIGKILL
  EXPECT_GE(inst->OomKillCount(), 1u);
  EXPECT_TRUE(inst->Destroy());
}

TEST_F(NamespacesTest, ForkBombIsContained) {
  SandboxSpec spec = Spec("pids");
  spec.pids_max = 64;
  const std::string py = R"PY(
import os, time
ok = fail = other = 0
for i in range(1000):
    try:
        pid = os.fork()
    except BlockingIOError:
        fail += 1
        continue
    except OSError:
        other += 1
        continue
    if pid == 0:
        os.close(3)
        time.sleep(60)
        os._exit(0)
    ok += 1
os.write(3, b"%d %d %d\n" % (ok, fail, other))
)PY";
  auto [inst, out] = Run("python3 -c '" + py + "'; echo __END__ >&3", spec);
  ASSERT_TRUE(inst);
  std::istringstream in(out);
  int ok = -1, fail = -1, other = -1;
  in >> ok >> fail >> other;
  EXPECT_LT(ok, 64) << out;
  EXPECT_GT(fail, 900) << out;
  EXPECT_EQ(other, 0) << out;
  EXPECT_TRUE(inst->Destroy());
}

std::vector<std::string> MountsMentioning(const std::string& needle) {
  std::vector<std::string> out;
  for (const auto& l : Lines(Slurp("/proc/self/mounts"))) {
    if (l.find(needle) != std::string::npos) out.push_back(l);
  }
  return out;
}

std::string NsOf(pid_t pid, const char* ns) {
  char buf[128];
  const std::string link = "/proc/" + std::to_string(pid) + "/ns/" + ns;
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// Host pids whose pid namespace is `ns`.
std::vector<pid_t> PidsInNs(const std::string& ns) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    pid_t pid = std::atoi(e->d_name);
    if (pid > 0 && NsOf(pid, "pid") == ns) out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

std::vector<std::string> CgroupDirsOf(const std::string& id) {
  std::vector<std::string> out;
  for (const char* h : {"", "/memory", "/cpu", "/pids"}) {
    std::string d = std::string("/sys/fs/cgroup") + h + "/" + kCgroupParent + "/" + id;  // v2 or v1
    if (Exists(d)) out.push_back(d);
  }
  return out;
}

TEST_F(NamespacesTest, DestroyLeavesNothingAndIsFast) {
  const auto mounts_before = Lines(Slurp("/proc/self/mounts")).size();
  SandboxSpec spec = Spec("destroy");
  auto backend = MakeBackend(
      "sleep 60 & sleep 60 & (sleep 60 &) ; echo x > /tmp/file; echo __END__ >&3; wait");
  ASSERT_TRUE(backend);
  const auto t0 = Clock::now();
  auto inst = backend->Start(spec);
  const auto t1 = Clock::now();
  ASSERT_TRUE(inst) << inst.error().message;
  UniqueFd link = (*inst)->TakeLinkFd();
  EXPECT_FALSE((*inst)->TakeLinkFd().valid());  // valid once
  ReadReport(link.get());

  const std::string ns = NsOf((*inst)->InitPid(), "pid");
  ASSERT_FALSE(ns.empty());
  const auto members = PidsInNs(ns);
  EXPECT_GE(members.size(), 4u);
  EXPECT_FALSE(CgroupDirsOf(spec.id).empty());
  EXPECT_TRUE(Exists(state_dir_ + "/" + spec.id + "/upper/tmp/file"));
  EXPECT_TRUE(MountsMentioning(state_dir_).empty()) << "sandbox mount leaked to the host";

  const auto t2 = Clock::now();
  auto st = (*inst)->Destroy();
  const auto t3 = Clock::now();
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_TRUE((*inst)->Destroy());  // idempotent
  std::printf("[ latency ] Start %.2f ms, Destroy %.2f ms\n",
              std::chrono::duration<double, std::milli>(t1 - t0).count(),
              std::chrono::duration<double, std::milli>(t3 - t2).count());

  EXPECT_TRUE(PidsInNs(ns).empty());
  for (pid_t pid : members) {
    const std::string status = Slurp("/proc/" + std::to_string(pid) + "/status");
    EXPECT_EQ(status.find("Uid:\t100000"), std::string::npos) << "pid " << pid << " survived";
  }
  EXPECT_TRUE(CgroupDirsOf(spec.id).empty());
  EXPECT_FALSE(Exists(state_dir_ + "/" + spec.id));
  EXPECT_TRUE(MountsMentioning(state_dir_).empty());
  EXPECT_EQ(Lines(Slurp("/proc/self/mounts")).size(), mounts_before);
}

TEST_F(NamespacesTest, StartLatency) {
  auto backend = MakeBackend("echo __END__ >&3; exec sleep 60");
  ASSERT_TRUE(backend);
  std::vector<double> start_ms, destroy_ms;
  for (int i = 0; i < 10; ++i) {
    const auto t0 = Clock::now();
    auto inst = backend->Start(Spec("lat" + std::to_string(i)));
    const auto t1 = Clock::now();
    ASSERT_TRUE(inst) << inst.error().message;
    auto link = (*inst)->TakeLinkFd();
    ReadReport(link.get());
    const auto t2 = Clock::now();
    ASSERT_TRUE((*inst)->Destroy());
    const auto t3 = Clock::now();
    start_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    destroy_ms.push_back(std::chrono::duration<double, std::milli>(t3 - t2).count());
  }
  std::sort(start_ms.begin(), start_ms.end());
  std::sort(destroy_ms.begin(), destroy_ms.end());
  std::printf("[ latency ] Start median %.2f ms max %.2f ms; Destroy median %.2f ms max %.2f ms\n",
              start_ms[5], start_ms[9], destroy_ms[5], destroy_ms[9]);
}

TEST_F(NamespacesTest, ConcurrentStartsAndDestroys) {
  auto backend = MakeBackend("echo ok >&3; echo __END__ >&3; exec sleep 60");
  ASSERT_TRUE(backend);
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) {
        auto inst = backend->Start(Spec("conc" + std::to_string(t) + "_" + std::to_string(i)));
        if (!inst) {
          ADD_FAILURE() << inst.error().message;
          continue;
        }
        auto link = (*inst)->TakeLinkFd();
        if (ReadReport(link.get()) == "ok\n" && (*inst)->Destroy()) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), 12);
  // Duplicate ids are refused while the first one runs.
  auto a = backend->Start(Spec("dup"));
  ASSERT_TRUE(a);
  EXPECT_FALSE(backend->Start(Spec("dup")));
}

TEST_F(NamespacesTest, ReapStaleRemovesLeftovers) {
  // A previous run's leftovers: a cgroup with a task and a state dir whose
  // upper layer has a symlink to a host file and files owned by sandbox uids.
  auto driver = CgroupDriver::Detect(kCgroupParent);
  ASSERT_TRUE(driver);
  const std::string id = "stale_" + std::to_string(::getpid());
  auto cg = driver->Create(id, {});
  ASSERT_TRUE(cg);
  pid_t victim = ::fork();
  if (victim == 0) {
    ::pause();
    ::_exit(0);
  }
  ASSERT_TRUE((*cg)->AddProcess(victim));
  Cgroup* leaked = cg->release();  // as if the daemon had crashed
  (void)leaked;

  const std::string host_file = "/tmp/sbx-keep-" + std::to_string(::getpid());
  { std::ofstream(host_file) << "keep"; }
  const std::string up = state_dir_ + "/" + id + "/upper/deep/er";
  ASSERT_EQ(std::system(("mkdir -p " + up + " && ln -s " + host_file + " " + up +
                         "/link && ln -s /tmp " + up + "/dirlink && touch " + up +
                         "/f && chown -R 100000:100000 " + state_dir_ + "/" + id)
                            .c_str()),
            0);

  // A deep tree (a sandbox can nest directories far deeper than the daemon
  // could hold fds for; removal must not depend on depth).
  {
    std::string deep = state_dir_ + "/" + id + "/upper/deep";
    UniqueFd fd(::open(deep.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    for (int i = 0; i < 200; ++i) {  // > kMaxDepth (32): exercises lifting
      ASSERT_EQ(::mkdirat(fd.get(), "d", 0755), 0);
      if (i % 10 == 0) {
        int f = ::openat(fd.get(), "file", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        ::close(f);
      }
      fd = UniqueFd(::openat(fd.get(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      ASSERT_TRUE(fd.valid());
    }
  }

  auto backend = MakeBackend("true");
  ASSERT_TRUE(backend);
  backend->ReapStale();
  int status = 0;
  EXPECT_EQ(::waitpid(victim, &status, 0), victim);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_TRUE(CgroupDirsOf(id).empty());
  EXPECT_FALSE(Exists(state_dir_ + "/" + id));
  EXPECT_TRUE(Exists(host_file));  // symlink removed, not followed
  EXPECT_TRUE(Exists("/tmp"));
  ::unlink(host_file.c_str());
}

// The cgroup v2 path (clone3 with CLONE_INTO_CGROUP, cgroup.kill), exercised
// on the unified hierarchy of a hybrid host, which has no controllers: hence
// a spec without limits (0 = unlimited).
TEST_F(NamespacesTest, CgroupV2CloneIntoCgroup) {
  const std::string unified = "/sys/fs/cgroup/unified";
  if (::access((unified + "/cgroup.controllers").c_str(), F_OK) != 0) {
    GTEST_SKIP() << "no separate unified hierarchy (pure v1 or pure v2 host)";
  }
  auto backend = MakeBackend("cat /proc/self/cgroup >&3; echo __END__ >&3; exec sleep 60", unified);
  ASSERT_TRUE(backend);
  SandboxSpec spec = Spec("v2");
  spec.memory_mb = 0;
  spec.cpus = 0;
  spec.pids_max = 0;
  const auto t0 = Clock::now();
  auto inst = backend->Start(spec);
  std::printf("[ latency ] Start (v2, clone3 into cgroup) %.2f ms\n",
              std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  ASSERT_TRUE(inst) << inst.error().message;
  auto link = (*inst)->TakeLinkFd();
  ReadReport(link.get());
  const std::string host_view = Slurp("/proc/" + std::to_string((*inst)->InitPid()) + "/cgroup");
  EXPECT_NE(host_view.find("0::/" + kCgroupParent + "/" + spec.id + "\n"), std::string::npos)
      << host_view;
  const std::string dir = unified + "/" + kCgroupParent + "/" + spec.id;
  EXPECT_TRUE(Exists(dir));
  ASSERT_TRUE((*inst)->Destroy());
  EXPECT_FALSE(Exists(dir));
  ::rmdir((unified + "/" + kCgroupParent).c_str());
}

// The production path: a static host binary exec'd through its O_PATH fd, with
// the default argv; the image does not contain it.
TEST_F(NamespacesTest, ExecsHostBinaryByFd) {
  NamespacesConfig c;
  c.rootfs_dir = *rootfs_;
  c.state_dir = state_dir_;
  c.agent_path = SANDBOXD_TEST_INIT;
  c.cgroup_parent = kCgroupParent;
  auto backend = MakeNamespacesBackend(c);
  ASSERT_TRUE(backend) << backend.error().message;
  auto inst = (*backend)->Start(Spec("byfd"));
  ASSERT_TRUE(inst) << inst.error().message;
  auto link = (*inst)->TakeLinkFd();
  EXPECT_EQ(ReadReport(link.get()), "pid=1 uid=0 argc=3 argv0=sandbox-agent argv1=--link-fd argv2=3\n");
  EXPECT_TRUE((*inst)->Destroy());
}

#ifdef SANDBOXD_AGENT_PATH
// The real agent comes up and announces itself (docs/agent-link.md: the first
// frame is the CONTROL event {"event":"ready",...}).
TEST_F(NamespacesTest, RealAgentSendsReady) {
  if (::access(SANDBOXD_AGENT_PATH, X_OK) != 0) GTEST_SKIP() << "agent not built";
  NamespacesConfig c;
  c.rootfs_dir = *rootfs_;
  c.state_dir = state_dir_;
  c.agent_path = SANDBOXD_AGENT_PATH;
  c.cgroup_parent = kCgroupParent;
  auto backend = MakeNamespacesBackend(c);
  ASSERT_TRUE(backend) << backend.error().message;
  auto inst = (*backend)->Start(Spec("agent"));
  ASSERT_TRUE(inst) << inst.error().message;
  auto link = (*inst)->TakeLinkFd();
  std::string got;
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (got.find("ready") == std::string::npos && Clock::now() < deadline) {
    pollfd pfd{link.get(), POLLIN, 0};
    if (::poll(&pfd, 1, 1000) <= 0) continue;
    char buf[512];
    ssize_t n = ::read(link.get(), buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  EXPECT_NE(got.find("\"event\":\"ready\""), std::string::npos) << got;
  EXPECT_TRUE((*inst)->Destroy());
}
#endif

TEST_F(NamespacesTest, StartFailureCleansUp) {
  NamespacesConfig c;
  c.rootfs_dir = *rootfs_;
  c.state_dir = state_dir_;
  c.init_path_in_image = "/no/such/init";
  c.init_argv = {"init"};
  c.cgroup_parent = kCgroupParent;
  auto backend = MakeNamespacesBackend(c);
  ASSERT_TRUE(backend);
  SandboxSpec spec = Spec("fail");
  auto inst = (*backend)->Start(spec);
  ASSERT_FALSE(inst);
  EXPECT_EQ(inst.error().code, ENOENT) << inst.error().message;
  EXPECT_NE(inst.error().message.find("exec"), std::string::npos) << inst.error().message;
  EXPECT_FALSE(Exists(state_dir_ + "/" + spec.id));
  EXPECT_TRUE(CgroupDirsOf(spec.id).empty());
}

}  // namespace
}  // namespace sandboxd::isolation

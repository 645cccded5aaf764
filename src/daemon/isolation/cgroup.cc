#include "daemon/isolation/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/fd.h"

namespace sandboxd::isolation {
namespace {

Status WriteFile(const std::string& path, std::string_view value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return FailErrno("open " + path);
  ssize_t n = ::write(fd.get(), value.data(), value.size());
  if (n < 0) return FailErrno("write '" + std::string(value) + "' to " + path);
  if (static_cast<size_t>(n) != value.size()) return FailMsg("short write to " + path);
  return {};
}

Result<std::string> ReadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return FailErrno("open " + path);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

Status MkdirIfMissing(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return FailErrno("mkdir " + path);
  return {};
}

std::vector<pid_t> ReadPids(const std::string& dir) {
  std::vector<pid_t> pids;
  auto text = ReadFile(dir + "/cgroup.procs");
  if (!text) return pids;
  std::istringstream in(*text);
  pid_t pid;
  while (in >> pid) pids.push_back(pid);
  return pids;
}

// Value of "key N" in a flat-keyed file (memory.events, memory.oom_control).
uint64_t ReadKey(const std::string& path, std::string_view key) {
  auto text = ReadFile(path);
  if (!text) return 0;
  std::istringstream in(*text);
  std::string k;
  uint64_t v;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

// Kills every task and removes `dirs` (children first is not needed: sandbox
// groups have no children). rmdir fails with EBUSY while killed tasks are
// still exiting, so this retries until `deadline`.
Status KillAndRemove(bool v2, const std::vector<std::string>& dirs) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  for (;;) {
    bool all_gone = true;
    int last_err = 0;
    std::string last_dir;
    for (const auto& dir : dirs) {
      if (!Exists(dir)) continue;
      // cgroup.kill (v2, Linux 5.14+) kills atomically, including tasks that
      // fork while we iterate; v1 needs the racy loop below, repeated.
      if (!v2 || !WriteFile(dir + "/cgroup.kill", "1")) {
        for (pid_t pid : ReadPids(dir)) ::kill(pid, SIGKILL);
      }
      if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) {
        all_gone = false;
        last_err = errno;
        last_dir = dir;
      }
    }
    if (all_gone) return {};
    if (Clock::now() > deadline) return FailErrno("rmdir " + last_dir, last_err);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

struct V1Mounts {
  std::string memory, cpu, pids;
};

// Finds the v1 hierarchies by their super options in mountinfo, e.g.
// "... /sys/fs/cgroup/memory ... - cgroup cgroup rw,memory".
V1Mounts FindV1Mounts() {
  V1Mounts m;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    auto sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream pre(line.substr(0, sep)), post(line.substr(sep + 3));
    std::string id, parent, devno, root, mount_point, fstype, source, opts;
    pre >> id >> parent >> devno >> root >> mount_point;
    post >> fstype >> source >> opts;
    if (fstype != "cgroup") continue;
    std::istringstream o(opts);
    std::string opt;
    while (std::getline(o, opt, ',')) {
      if (opt == "memory" && m.memory.empty()) m.memory = mount_point;
      if (opt == "cpu" && m.cpu.empty()) m.cpu = mount_point;
      if (opt == "pids" && m.pids.empty()) m.pids = mount_point;
    }
  }
  return m;
}

}  // namespace

Cgroup::Cgroup(bool v2, std::vector<std::string> dirs, std::string memory_dir,
               std::string procs_dir)
    : v2_(v2), dirs_(std::move(dirs)), memory_dir_(std::move(memory_dir)),
      procs_dir_(std::move(procs_dir)) {}

Cgroup::~Cgroup() {
  if (auto st = Destroy(); !st) spdlog::warn("cgroup cleanup: {}", st.error().message);
}

Status Cgroup::AddProcess(pid_t pid) const {
  const std::string value = std::to_string(pid);
  for (const auto& dir : dirs_) {
    if (auto st = WriteFile(dir + "/cgroup.procs", value); !st) return st;
  }
  return {};
}

UniqueFd Cgroup::OpenV2Dir() const {
  if (!v2_) return UniqueFd();
  return UniqueFd(::open(dirs_[0].c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
}

Status Cgroup::Destroy() {
  if (destroyed_) return {};
  auto st = KillAndRemove(v2_, dirs_);
  if (st) destroyed_ = true;
  return st;
}

uint64_t Cgroup::OomKillCount() const {
  if (v2_) return ReadKey(memory_dir_ + "/memory.events", "oom_kill");
  return ReadKey(memory_dir_ + "/memory.oom_control", "oom_kill");
}

std::vector<pid_t> Cgroup::Pids() const { return ReadPids(procs_dir_); }

Result<CgroupDriver> CgroupDriver::Detect(std::string parent, std::string root) {
  CgroupDriver d;
  if (parent.empty() || parent.find('/') != std::string::npos || parent == "." || parent == "..") {
    return FailMsg("invalid cgroup parent name '" + parent + "'");
  }
  if (Exists(root + "/cgroup.controllers")) {
    d.v2_ = true;
    const std::string dir = root + "/" + parent;
    SBX_TRY(MkdirIfMissing(dir));
    // Controllers must be enabled on every level above the sandbox groups.
    // Each one separately, so a missing controller (e.g. cpu delegated away)
    // costs only that limit.
    for (const char* c : {"+memory", "+cpu", "+pids"}) {
      if (auto st = WriteFile(root + "/cgroup.subtree_control", c); !st) {
        spdlog::warn("cgroup v2: enabling {} at root: {}", c, st.error().message);
      }
      if (auto st = WriteFile(dir + "/cgroup.subtree_control", c); !st) {
        spdlog::warn("cgroup v2: enabling {} in {}: {}", c, dir, st.error().message);
      }
    }
    d.parent_dirs_ = {dir};
    d.memory_parent_ = dir;
    d.procs_parent_ = dir;
    return d;
  }
  V1Mounts m = FindV1Mounts();
  if (m.memory.empty()) return FailMsg("cgroup: neither v2 at " + root + " nor a v1 memory hierarchy");
  d.memory_parent_ = m.memory + "/" + parent;
  d.parent_dirs_.push_back(d.memory_parent_);
  if (!m.cpu.empty() && m.cpu != m.memory) {
    d.parent_dirs_.push_back(m.cpu + "/" + parent);
  } else if (m.cpu.empty()) {
    spdlog::warn("cgroup v1: no cpu hierarchy; CPU quotas disabled");
  }
  if (!m.pids.empty() && m.pids != m.memory && m.pids != m.cpu) {
    d.parent_dirs_.push_back(m.pids + "/" + parent);
    d.procs_parent_ = m.pids + "/" + parent;
  } else {
    if (m.pids.empty()) spdlog::warn("cgroup v1: no pids hierarchy; pids limits disabled");
    d.procs_parent_ = d.memory_parent_;
  }
  for (const auto& dir : d.parent_dirs_) SBX_TRY(MkdirIfMissing(dir));
  return d;
}

Result<std::unique_ptr<Cgroup>> CgroupDriver::Create(const std::string& name,
                                                     const CgroupLimits& limits) const {
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
    return FailMsg("invalid cgroup name '" + name + "'");
  }
  std::vector<std::string> dirs;
  for (const auto& p : parent_dirs_) dirs.push_back(p + "/" + name);
  const std::string memory_dir = memory_parent_ + "/" + name;
  const std::string procs_dir = procs_parent_ + "/" + name;
  // Owned from the first mkdir on, so a failure below removes what exists.
  std::vector<std::string> made;
  for (const auto& d : dirs) {
    if (::mkdir(d.c_str(), 0755) != 0) {
      int err = errno;
      (void)KillAndRemove(v2_, made);
      return FailErrno("mkdir " + d, err);
    }
    made.push_back(d);
  }
  auto cg = std::make_unique<Cgroup>(v2_, std::move(dirs), memory_dir, procs_dir);

  auto set = [&](const std::string& file, const std::string& value, bool required) -> Status {
    if (!required && !Exists(file)) return {};
    if (auto st = WriteFile(file, value); !st) return Fail(st.error().Wrap("cgroup limit"));
    return {};
  };
  if (v2_) {
    const std::string& d = cg->dirs()[0];
    if (limits.memory_bytes) {
      SBX_TRY(set(d + "/memory.max", std::to_string(limits.memory_bytes), true));
      SBX_TRY(set(d + "/memory.swap.max", "0", false));
    }
    if (limits.cpus) {
      SBX_TRY(set(d + "/cpu.max", std::to_string(limits.cpus * 100000ULL) + " 100000", true));
    }
    if (limits.pids_max) SBX_TRY(set(d + "/pids.max", std::to_string(limits.pids_max), true));
    return cg;
  }
  // v1: each limit lives in its own hierarchy; find the dir by its files.
  for (const auto& d : cg->dirs()) {
    if (Exists(d + "/memory.limit_in_bytes") && limits.memory_bytes) {
      const std::string bytes = std::to_string(limits.memory_bytes);
      SBX_TRY(set(d + "/memory.limit_in_bytes", bytes, true));
      // memsw (memory+swap) must be >= the memory limit, hence second. It
      // exists only with swap accounting enabled.
      SBX_TRY(set(d + "/memory.memsw.limit_in_bytes", bytes, false));
      if (auto st = set(d + "/memory.swappiness", "0", false); !st) {
        spdlog::debug("{}", st.error().message);  // refused under some hierarchies; harmless
      }
    }
    if (Exists(d + "/cpu.cfs_quota_us") && limits.cpus) {
      SBX_TRY(set(d + "/cpu.cfs_period_us", "100000", true));
      SBX_TRY(set(d + "/cpu.cfs_quota_us", std::to_string(limits.cpus * 100000ULL), true));
    }
    if (Exists(d + "/pids.max") && limits.pids_max) {
      SBX_TRY(set(d + "/pids.max", std::to_string(limits.pids_max), true));
    }
  }
  return cg;
}

void CgroupDriver::ReapStale(const std::vector<std::string>& keep) const {
  for (const auto& parent : parent_dirs_) {
    DIR* dir = ::opendir(parent.c_str());
    if (!dir) continue;
    std::vector<std::string> stale;
    while (dirent* e = ::readdir(dir)) {
      std::string name = e->d_name;
      if (e->d_type != DT_DIR || name == "." || name == "..") continue;
      bool kept = false;
      for (const auto& k : keep) kept = kept || k == name;
      if (!kept) stale.push_back(parent + "/" + name);
    }
    ::closedir(dir);
    for (const auto& s : stale) {
      if (auto st = KillAndRemove(v2_, {s}); !st) {
        spdlog::warn("reaping stale cgroup {}: {}", s, st.error().message);
      } else {
        spdlog::info("reaped stale cgroup {}", s);
      }
    }
  }
}

void CgroupDriver::RemoveParentsIfEmpty() const {
  for (const auto& parent : parent_dirs_) {
    // rmdir refuses (EBUSY/ENOTEMPTY) while a sandbox group still exists.
    if (::rmdir(parent.c_str()) != 0 && errno != ENOENT) {
      spdlog::debug("keeping cgroup parent {}: {}", parent, std::strerror(errno));
    }
  }
}

}  // namespace sandboxd::isolation

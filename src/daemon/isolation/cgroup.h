// Per-sandbox cgroups with resource limits, on cgroup v2 (unified) and on
// v1/hybrid hosts (one directory per controller hierarchy).
//
// Layout: <hierarchy>/<parent>/<sandbox id>, e.g. /sys/fs/cgroup/sandboxd/sbx_x
// (v2) or /sys/fs/cgroup/{memory,cpu,pids}/sandboxd/sbx_x (v1). On hybrid hosts
// the v1 controllers do the limiting; the (controller-less) unified tree is
// not used.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::isolation {

struct CgroupLimits {
  uint64_t memory_bytes = 0;  // 0 = unlimited; swap is always disabled
  uint32_t cpus = 0;          // whole CPUs; 0 = unlimited
  uint32_t pids_max = 0;      // 0 = unlimited
};

// One sandbox's cgroup(s). Owns the directories: the destructor calls
// Destroy(). Thread-compatible; OomKillCount() may be called concurrently.
class Cgroup {
 public:
  Cgroup(bool v2, std::vector<std::string> dirs, std::string memory_dir, std::string procs_dir);
  ~Cgroup();
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;

  // Moves `pid` into every hierarchy of this cgroup.
  Status AddProcess(pid_t pid) const;

  // v2 only: an O_PATH fd of the group for clone3(CLONE_INTO_CGROUP);
  // invalid on v1, where tasks must be moved with AddProcess().
  UniqueFd OpenV2Dir() const;

  // Kills every task left in the cgroup, waits until it is empty and removes
  // the directories. Bounded (about 2 s); idempotent.
  Status Destroy();

  uint64_t OomKillCount() const;

  // Pids currently in the cgroup (for diagnostics and tests).
  std::vector<pid_t> Pids() const;

  // Every directory this cgroup owns (one per hierarchy).
  const std::vector<std::string>& dirs() const { return dirs_; }

 private:
  bool v2_;
  std::vector<std::string> dirs_;
  std::string memory_dir_;  // where memory.* lives
  std::string procs_dir_;   // the hierarchy whose cgroup.procs lists every task
  bool destroyed_ = false;
};

// Knows where the hierarchies are. Immutable after Detect(); thread-safe.
class CgroupDriver {
 public:
  // Detects v2 (cgroup2 mounted at `root` with cgroup.controllers) or v1
  // (per-controller cgroup mounts found in /proc/self/mountinfo) and creates
  // the parent group `parent` in each hierarchy.
  static Result<CgroupDriver> Detect(std::string parent, std::string root = "/sys/fs/cgroup");

  bool v2() const { return v2_; }

  // Creates the group `name` under the parent with `limits` applied.
  Result<std::unique_ptr<Cgroup>> Create(const std::string& name, const CgroupLimits& limits) const;

  // Kills the tasks of and removes every group under the parent whose name is
  // not in `keep`. Best effort.
  void ReapStale(const std::vector<std::string>& keep) const;

  // Removes the parent groups if they are empty (at daemon shutdown, so a
  // stopped daemon leaves no cgroup behind). Best effort.
  void RemoveParentsIfEmpty() const;

  // The parent directory in each hierarchy.
  const std::vector<std::string>& parent_dirs() const { return parent_dirs_; }

 private:
  bool v2_ = false;
  std::vector<std::string> parent_dirs_;  // v2: one; v1: memory, cpu, pids
  std::string memory_parent_;
  std::string procs_parent_;
};

}  // namespace sandboxd::isolation

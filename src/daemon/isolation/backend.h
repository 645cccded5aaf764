// The isolation boundary. A backend starts a root filesystem with the agent as
// PID 1 inside an isolation boundary, enforces resource limits, hands the
// daemon the agent link and tears everything down again. Implementations:
// namespaces/ (Linux namespaces + cgroups + seccomp), microvm/ (QEMU).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::isolation {

struct SandboxSpec {
  std::string id;            // sbx_<region>_<20 chars>; unique, safe as a path component
  uint32_t memory_mb = 1280;  // hard memory limit (RAM for a VM)
  uint32_t cpus = 2;          // CPU quota in whole CPUs
  uint32_t pids_max = 1024;   // max tasks inside
  std::string hostname = "sandbox";
  // The daemon will attach a network to InitPid()'s network namespace after
  // Start (net::NetworkService::Attach). A backend whose guest has a network
  // stack of its own gives the guest a NIC for it (Instance::GuestTap);
  // without it the guest has loopback only.
  bool network = false;
};

// One running sandbox. Thread-compatible: the daemon calls it from one thread
// at a time. The destructor releases everything that Destroy() would.
class Instance {
 public:
  virtual ~Instance() = default;

  // The daemon's end of the agent link (a connected stream socket). Valid
  // once; the caller owns the returned fd.
  virtual UniqueFd TakeLinkFd() = 0;

  // Kills every process of the sandbox, waits for them, and removes every
  // mount, cgroup, namespace and directory the sandbox made. Blocking (bounded:
  // a few seconds at most); idempotent.
  virtual Status Destroy() = 0;

  // Cumulative count of processes the kernel OOM-killed in this sandbox's
  // memory limit (cgroup v2 memory.events oom_kill, v1 memory.oom_control
  // oom_kill). Cheap; callable from any thread.
  virtual uint64_t OomKillCount() const = 0;

  // Host pid of the agent (PID 1 inside), for diagnostics and tests.
  virtual pid_t InitPid() const = 0;

  // The tap device in InitPid()'s network namespace that is the guest's NIC,
  // when the guest has a network stack of its own (microVM started with
  // spec.network): the daemon joins it to the sandbox's link and tells the
  // guest its address. Empty when the sandbox's processes use that namespace
  // directly (namespaces backend), or there is no network.
  virtual std::string GuestTap() const { return {}; }

  // True when the sandbox's processes run on a kernel of their own (microVM):
  // the host's view of InitPid() (its /proc, its sockets) says nothing about
  // them, and only the agent knows their pids and ports.
  virtual bool HasGuestKernel() const { return false; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view Name() const = 0;

  // Starts a sandbox and returns once its agent has been exec'd. Blocking;
  // safe to call from several threads at once.
  virtual Result<std::unique_ptr<Instance>> Start(const SandboxSpec& spec) = 0;

  // Removes what a previous daemon run left behind (cgroups, mounts, work
  // directories of sandboxes that no longer run). Called once at startup.
  virtual void ReapStale() = 0;

  // Start-up work that may go on in the background (the microVM backend
  // prepares its snapshot). Called once, after every backend's ReapStale
  // (which would take a VM being prepared for a leftover).
  virtual void Warm() {}
};

}  // namespace sandboxd::isolation

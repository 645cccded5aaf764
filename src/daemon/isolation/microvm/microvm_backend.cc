// Start sequence (parent = a daemon thread, child = the future QEMU):
//
//   parent: mkdir STATE/<id> (0700); copy the scratch template to
//           scratch.img; open kernel, initramfs, root image, scratch (rw and
//           ro), qemu.log, /dev/null; create the cgroup; the link socketpair
//   parent: clone3(NEWNET | PIDFD [| INTO_CGROUP])              -> child blocks
//   parent: (cgroup v1) move the child into the cgroup; send kGo
//   child:  new session; the fds to 0..10; with a network, the guest's tap
//           (opened here, so it is made in the child's new netns) as fd 10;
//           every other fd CLOEXEC; drop to the sandbox's QEMU uid/gid (no
//           groups but /dev/kvm's under KVM, so no capabilities);
//           no_new_privs; exec QEMU
//   parent: EOF on the sync socket = exec happened (or an error message)
//   parent: the boot handshake (common/vm_boot.h): reads the guest's
//           awaiting-config (a restored VM sent it before its snapshot was
//           taken) and sends the per-sandbox config with fresh entropy;
//   parent: waits until the guest's agent has written to the link (its
//           ready event, left unread for the daemon) or QEMU exits, bounded
//           by boot_timeout.
//
// With snapshots (MicroVmConfig::snapshot, docs/microvm.md "Snapshot
// restore"), a sandbox of the snapshot's size is launched with -incoming from
// the snapshot's saved state instead of booting; the snapshot itself is made
// once by a VM launched like a sandbox plus a QMP monitor, stopped at the
// handshake and migrated into a file (PrepareSnapshot).
//
// QEMU never opens a path of the daemon's state directory (mode 0700, and
// the data dir above it is 0700 too): disks are fd sets, kernel and
// initramfs /proc/self/fd paths. Its uid is unique among live sandboxes, so
// one QEMU cannot signal, ptrace or open the files of another.
//
// Between clone and exec the child only makes raw syscalls on data prepared
// by the parent (no allocation, no locks, no glibc set*id wrappers, which
// broadcast to the daemon threads that this copy of its memory still lists).

#include "daemon/isolation/microvm/microvm_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/if_tun.h>
#include <linux/sched.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <sstream>

#include "common/frame.h"
#include "common/vm_boot.h"
#include "daemon/isolation/cgroup.h"
#include "daemon/isolation/microvm/qemu_command.h"
#include "daemon/isolation/microvm/qmp.h"
#include "daemon/isolation/microvm/scratch_image.h"
#include "daemon/isolation/microvm/snapshot.h"
#include "daemon/isolation/microvm/tsc.h"
#include "daemon/isolation/remove_tree.h"

namespace sandboxd::isolation {
namespace {

using Clock = std::chrono::steady_clock;
using microvm::kQemuFdCount;

// ---- parent/child sync (SOCK_SEQPACKET) ----

enum MsgType : uint32_t {
  kGo = 1,          // parent -> child: in the cgroup, go ahead
  kChildError = 2,  // child -> parent: step `step` failed with `err`
};

enum ChildStep : int32_t {
  kStepSync = 1,
  kStepSession,
  kStepFds,
  kStepTap,
  kStepIds,
  kStepNoNewPrivs,
  kStepExec,
};

const char* StepName(int32_t step) {
  switch (step) {
    case kStepSync:
      return "sync with parent";
    case kStepSession:
      return "setsid";
    case kStepFds:
      return "arrange fds";
    case kStepTap:
      return "create the tap (/dev/net/tun)";
    case kStepIds:
      return "drop to the QEMU uid";
    case kStepNoNewPrivs:
      return "PR_SET_NO_NEW_PRIVS";
    case kStepExec:
      return "exec QEMU";
    default:
      return "?";
  }
}

struct SyncMsg {
  uint32_t type;
  int32_t step;
  int32_t err;
};

// Everything the child needs, materialised before clone.
struct ChildPlan {
  int sync_fd = -1;                     // >= kQemuFdCount
  std::array<int, kQemuFdCount> fds{};  // fds[i] becomes fd i; all >= kQemuFdCount
  uint32_t uid = 0;
  uint32_t gid = 0;
  int extra_gid = -1;  // /dev/kvm's group under KVM
  bool make_tap = false;
  ifreq tap{};  // TUNSETIFF request for the guest's tap
  const char* exe = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
};

// ---- child side: async-signal-safe only ----

[[noreturn]] void ChildFail(const ChildPlan& p, int32_t step, int err) {
  SyncMsg m{kChildError, step, err};
  (void)!::write(p.sync_fd, &m, sizeof m);
  ::_exit(127);
}

[[noreturn]] void ChildMain(const ChildPlan& p) {
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    ::sigaction(sig, &sa, nullptr);
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  SyncMsg m{};
  ssize_t n;
  do {
    n = ::read(p.sync_fd, &m, sizeof m);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof m) || m.type != kGo) ::_exit(126);
  // No controlling terminal of the daemon's, no signals from its group.
  if (::setsid() < 0) ChildFail(p, kStepSession, errno);

  for (int i = 0; i < kQemuFdCount; ++i) {  // sources are all above the targets
    if (::dup2(p.fds[static_cast<size_t>(i)], i) < 0) ChildFail(p, kStepFds, errno);
  }
  if (p.make_tap) {
    // Opened here, not by the parent: a tap is made in the netns of the
    // process that opened /dev/net/tun, and this is the sandbox's. It lives
    // as long as an fd of it does (not persistent): it ends with QEMU.
    int tun = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (tun < 0) ChildFail(p, kStepTap, errno);
    ifreq req = p.tap;
    if (::ioctl(tun, TUNSETIFF, &req) != 0) ChildFail(p, kStepTap, errno);
    // Slots 0..kFdTap are taken, so tun is above kFdTap (and CLOEXEC).
    if (::dup2(tun, microvm::kFdTap) < 0) ChildFail(p, kStepTap, errno);
  }
  // CLOEXEC rather than close: the sync socket must report errors up to the
  // exec itself.
  if (::syscall(SYS_close_range, static_cast<unsigned>(kQemuFdCount), ~0U, CLOSE_RANGE_CLOEXEC) !=
      0) {
    ChildFail(p, kStepFds, errno);
  }

  if (p.extra_gid >= 0) {
    gid_t groups[1] = {static_cast<gid_t>(p.extra_gid)};
    if (::syscall(SYS_setgroups, 1, groups) != 0) ChildFail(p, kStepIds, errno);
  } else if (::syscall(SYS_setgroups, 0, nullptr) != 0) {
    ChildFail(p, kStepIds, errno);
  }
  if (::syscall(SYS_setresgid, p.gid, p.gid, p.gid) != 0) ChildFail(p, kStepIds, errno);
  // From root to a non-root uid: every capability is gone.
  if (::syscall(SYS_setresuid, p.uid, p.uid, p.uid) != 0) ChildFail(p, kStepIds, errno);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ChildFail(p, kStepNoNewPrivs, errno);
  ::execve(p.exe, p.argv, p.envp);
  ChildFail(p, kStepExec, errno);
}

// ---- parent side ----

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id[0] == '.') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

bool ValidHostname(const std::string& h) {
  if (h.empty() || h.size() > 64) return false;
  return std::all_of(h.begin(), h.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.';
  });
}

// Moves `fd` to a number >= kQemuFdCount, so the child's dup2()s onto
// 0..kQemuFdCount-1 cannot clobber a source.
Result<UniqueFd> AboveTargets(UniqueFd fd) {
  if (!fd) return FailMsg("invalid fd");
  if (fd.get() >= kQemuFdCount) return fd;
  int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, kQemuFdCount);
  if (moved < 0) return FailErrno("fcntl F_DUPFD_CLOEXEC");
  return UniqueFd(moved);
}

Result<UniqueFd> OpenAbove(const std::string& path, int flags, mode_t mode = 0) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC, mode));
  if (!fd) return FailErrno("open " + path);
  return AboveTargets(std::move(fd));
}

// The last `max` bytes of a file, trimmed to whole lines.
std::string Tail(const std::string& path, size_t max = 2048) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return "";
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return "";
  off_t from = st.st_size > static_cast<off_t>(max) ? st.st_size - static_cast<off_t>(max) : 0;
  std::string out(static_cast<size_t>(st.st_size - from), '\0');
  ssize_t n = ::pread(fd.get(), out.data(), out.size(), from);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  if (from > 0) {
    auto nl = out.find('\n');
    out = nl == std::string::npos ? out : out.substr(nl + 1);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string FindOnPath(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::istringstream in(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(in, dir, ':')) {
    if (dir.empty()) continue;
    std::string p = dir + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

// The "flags" line of /proc/cpuinfo (what -cpu host gives a guest).
std::string HostCpuFlags() {
  std::string text;
  UniqueFd fd(::open("/proc/cpuinfo", O_RDONLY | O_CLOEXEC));
  char buf[8192];
  ssize_t n;
  while (fd && text.size() < (1 << 20) && (n = ::read(fd.get(), buf, sizeof buf)) > 0) {
    text.append(buf, static_cast<size_t>(n));
  }
  auto at = text.find("\nflags");
  if (at == std::string::npos) return text.substr(0, 4096);
  return text.substr(at + 1, text.find('\n', at + 1) - at - 1);
}

// Ids and QEMU uid slots of the live sandboxes; shared with the instances,
// which may outlive the backend.
struct Registry {
  std::mutex mu;
  std::set<std::string> live;
  std::set<uint32_t> slots;
  uint32_t next_slot = 0;
};

class MicroVmInstance final : public Instance {
 public:
  MicroVmInstance(std::shared_ptr<Registry> registry, std::string id, std::string state_dir,
                  uint32_t slot)
      : registry_(std::move(registry)),
        id_(std::move(id)),
        state_dir_(std::move(state_dir)),
        slot_(slot) {}

  ~MicroVmInstance() override {
    if (auto st = Destroy(); !st) {
      spdlog::error("sandbox {}: cleanup incomplete: {}", id_, st.error().message);
    }
  }

  UniqueFd TakeLinkFd() override { return std::move(link_); }

  Status Destroy() override {
    std::lock_guard lock(mu_);
    if (destroyed_) return {};
    Status result;
    auto note = [&](Status st) {
      if (!st && result) result = std::move(st);
    };
    link_.Reset();
    if (pidfd_) note(KillQemu());
    if (cgroup_) note(cgroup_->Destroy());
    note(RemoveTree(state_dir_, id_));
    if (result) {
      destroyed_ = true;
      std::lock_guard rlock(registry_->mu);
      registry_->live.erase(id_);
      // The uid is free again only now that no process of it is left.
      registry_->slots.erase(slot_);
    }
    return result;
  }

  uint64_t OomKillCount() const override { return cgroup_ ? cgroup_->OomKillCount() : 0; }
  pid_t InitPid() const override { return pid_; }
  std::string GuestTap() const override { return guest_tap_; }
  bool HasGuestKernel() const override { return true; }

  // SIGKILLs QEMU and nothing else (no fd is touched): callable from another
  // thread while the starting one still uses the instance.
  void Kill() {
    std::lock_guard lock(mu_);
    if (pidfd_) ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  }

  // QEMU's exit status (128 + N for signal N) once it has exited; nullopt
  // while it runs. Does not reap it.
  std::optional<int> ExitStatus() const {
    siginfo_t info{};
    if (!pidfd_ ||
        ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info,
                 WEXITED | WNOHANG | WNOWAIT) != 0 ||
        info.si_pid == 0) {
      return std::nullopt;
    }
    return info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
  }

  // Set by Launch() as it acquires them; Destroy() releases whatever is set.
  UniqueFd link_;
  UniqueFd pidfd_;
  pid_t pid_ = -1;
  std::unique_ptr<Cgroup> cgroup_;
  std::string log_path_;
  Clock::time_point launched_;
  std::string guest_tap_;  // in QEMU's netns; goes with it

 private:
  Status KillQemu() {
    ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    pollfd pfd{pidfd_.get(), POLLIN, 0};
    int r;
    do {
      r = ::poll(&pfd, 1, 3000);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return FailMsg("QEMU " + std::to_string(pid_) + " did not die in 3 s");
    siginfo_t info{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info, WEXITED) !=
            0 &&
        errno != ECHILD) {
      return FailErrno("waitid");
    }
    pidfd_.Reset();
    return {};
  }

  std::shared_ptr<Registry> registry_;
  const std::string id_;
  const std::string state_dir_;
  const uint32_t slot_;
  std::mutex mu_;
  bool destroyed_ = false;
};

class MicroVmBackend final : public Backend {
 public:
  MicroVmBackend(MicroVmConfig config, std::string qemu_path, CgroupDriver cgroups, int kvm_gid)
      : config_(std::move(config)),
        qemu_path_(std::move(qemu_path)),
        cgroups_(std::move(cgroups)),
        kvm_gid_(kvm_gid),
        registry_(std::make_shared<Registry>()) {}
  ~MicroVmBackend() override {
    {
      // A snapshot being prepared: its VM dies, so the preparation returns.
      std::lock_guard lock(prep_mu_);
      closing_ = true;
      if (prep_inst_) prep_inst_->Kill();
    }
    snapshots_.reset();  // joins the preparation
    cgroups_.RemoveParentsIfEmpty();
  }

  std::string_view Name() const override { return "microvm"; }
  Result<std::unique_ptr<Instance>> Start(const SandboxSpec& spec) override;
  void ReapStale() override;
  void Warm() override {
    if (!config_.eager) return;
    if (auto st = Setup(); st && snapshots_) snapshots_->StartPreparing();
  }

  // Once: the TSC rate (TCG) and, with snapshots, their fingerprint and cache.
  Status Setup();

 private:
  // Everything up to QEMU's exec: state dir, scratch disk, cgroup, the link,
  // QEMU cloned unprivileged into its netns and cgroup. `extra` becomes
  // QEMU's fd kFdExtra (the QMP socket for kPrepare, the saved state for
  // kRestore; nothing for kBoot).
  Result<std::unique_ptr<MicroVmInstance>> Launch(const SandboxSpec& spec, microvm::LaunchMode mode,
                                                  UniqueFd extra);
  // Reads the guest's awaiting-config frame (cold boots only: a restored VM
  // sent it before the snapshot), bounded by boot_timeout.
  Status AwaitHandshake(MicroVmInstance& inst);
  // Sends the per-sandbox config with fresh host entropy and the clock.
  Status SendConfig(MicroVmInstance& inst, const SandboxSpec& spec);
  // Waits until the agent has written its first bytes (left unread) or QEMU
  // is gone, bounded by boot_timeout.
  Status AwaitAgent(MicroVmInstance& inst);
  // Boots a VM of the snapshot's size to the handshake and migrates it into
  // `state_fd` (SnapshotCache::PrepareFn).
  Status PrepareSnapshot(int state_fd);
  microvm::QemuLaunch LaunchFor(const SandboxSpec& spec, microvm::LaunchMode mode) const;
  // The error of a failed start, with QEMU's exit status and last words.
  Error WhyDead(MicroVmInstance& inst, const std::string& what) const;

  const MicroVmConfig config_;
  const std::string qemu_path_;
  const CgroupDriver cgroups_;
  const int kvm_gid_;
  std::shared_ptr<Registry> registry_;

  std::once_flag setup_once_;
  Status setup_status_;
  uint64_t tsc_khz_ = 0;  // set once by Setup()
  std::unique_ptr<microvm::SnapshotCache> snapshots_;

  std::mutex prep_mu_;
  MicroVmInstance* prep_inst_ = nullptr;  // the VM being snapshotted, if any
  bool closing_ = false;
};

Status MicroVmBackend::Setup() {
  std::call_once(setup_once_, [this] {
    tsc_khz_ = config_.tsc_khz;
    if (!config_.kvm && tsc_khz_ == 0) {
      auto khz = microvm::MeasureTscKhz();
      if (!khz) {
        setup_status_ = Fail(khz.error().Wrap("microvm backend: TSC rate"));
        return;
      }
      tsc_khz_ = *khz;
      // Snapshots are made for one rate: keep the one they were made with
      // while the measurement agrees with it.
      if (config_.snapshot)
        tsc_khz_ = microvm::SnapshotStore(config_.snapshot_dir).StableTscKhz(tsc_khz_);
      spdlog::info("microvm backend: host TSC {} kHz", tsc_khz_);
    }
    if (!config_.snapshot) return;
    SandboxSpec spec;
    spec.memory_mb = config_.snapshot_memory_mb;
    spec.cpus = config_.snapshot_cpus;
    spec.network = config_.snapshot_network;
    microvm::SnapshotInputs in;
    in.files = {qemu_path_, config_.kernel, config_.initrd, config_.rootfs_image,
                config_.scratch_template};
    in.qemu_argv = microvm::QemuArgv(LaunchFor(spec, microvm::LaunchMode::kRestore));
    if (config_.kvm)
      in.extra = HostCpuFlags();  // -cpu host: the saved CPU state fits this CPU only
    auto fp = microvm::SnapshotFingerprint(in);
    if (!fp) {
      spdlog::warn("microvm snapshots off: {}", fp.error().message);
      return;
    }
    snapshots_ = std::make_unique<microvm::SnapshotCache>(
        microvm::SnapshotStore(config_.snapshot_dir), *fp,
        [this](int state_fd) { return PrepareSnapshot(state_fd); });
    spdlog::info("microvm snapshots on for {} MB / {} vCPUs (snapshot {})",
                 config_.snapshot_memory_mb, config_.snapshot_cpus, fp->substr(0, 12));
  });
  return setup_status_;
}

microvm::QemuLaunch MicroVmBackend::LaunchFor(const SandboxSpec& spec,
                                              microvm::LaunchMode mode) const {
  microvm::QemuLaunch launch;
  launch.qemu_binary = qemu_path_;
  launch.kvm = config_.kvm;
  launch.tsc_khz = tsc_khz_;
  launch.memory_mb = spec.memory_mb;
  launch.cpus = spec.cpus;
  launch.tcg_tb_mb = config_.tcg_tb_mb;
  launch.root_fstype = config_.rootfs_format;
  launch.debug_console = config_.debug_console;
  launch.network = spec.network;
  launch.mode = mode;
  return launch;
}

Result<std::unique_ptr<Instance>> MicroVmBackend::Start(const SandboxSpec& spec) {
  const auto t0 = Clock::now();
  if (!ValidId(spec.id)) return FailMsg("invalid sandbox id '" + spec.id + "'");
  if (!ValidHostname(spec.hostname)) return FailMsg("invalid hostname '" + spec.hostname + "'");
  if (spec.memory_mb < 256 || spec.cpus == 0) return FailMsg("a microVM needs >= 256 MB and a CPU");
  if (spec.pids_max < 16) return FailMsg("a microVM needs a pids limit of at least 16");
  SBX_TRY(Setup());
  auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
  };

  if (snapshots_ && spec.memory_mb == config_.snapshot_memory_mb &&
      spec.cpus == config_.snapshot_cpus && spec.network == config_.snapshot_network) {
    // Waits while the snapshot is being prepared (a boot and a save), rather
    // than booting beside it on the same CPUs.
    if (auto state = snapshots_->Acquire(config_.boot_timeout)) {
      auto inst = Launch(spec, microvm::LaunchMode::kRestore, std::move(*state));
      Status st = inst ? SendConfig(**inst, spec) : Status(Fail(inst.error()));
      if (st) st = AwaitAgent(**inst);
      if (st) {
        spdlog::info("sandbox {}: microVM restored from snapshot in {} ms (QEMU pid {})", spec.id,
                     ms_since((*inst)->launched_), (*inst)->pid_);
        return std::unique_ptr<Instance>(std::move(*inst));
      }
      // QEMU refusing the saved state blames the snapshot; a timeout, or a
      // failure before QEMU ran, does not.
      bool blame = inst && (*inst)->ExitStatus().value_or(0) != 0;
      spdlog::warn("sandbox {}: restoring from the snapshot failed ({}){}; booting cold", spec.id,
                   st.error().message, blame ? ", snapshot dropped" : "");
      if (inst) (void)(*inst)->Destroy();  // frees its id for the cold boot
      if (blame) snapshots_->Invalidate();
    }
  } else if (snapshots_) {
    // Another size boots, but not beside the snapshot's VM while that boots.
    snapshots_->AwaitIdle(config_.boot_timeout);
  }

  auto inst = Launch(spec, microvm::LaunchMode::kBoot, UniqueFd());
  if (!inst) return Fail(inst.error());
  SBX_TRY(AwaitHandshake(**inst));
  SBX_TRY(SendConfig(**inst, spec));
  SBX_TRY(AwaitAgent(**inst));
  spdlog::info("sandbox {}: microVM booted in {} ms ({} ms since the request; QEMU pid {})",
               spec.id, ms_since((*inst)->launched_), ms_since(t0), (*inst)->pid_);
  return std::unique_ptr<Instance>(std::move(*inst));
}

Result<std::unique_ptr<MicroVmInstance>> MicroVmBackend::Launch(const SandboxSpec& spec,
                                                                microvm::LaunchMode mode,
                                                                UniqueFd extra_in) {
  const auto t0 = Clock::now();
  uint32_t slot = 0;
  {
    std::lock_guard lock(registry_->mu);
    if (registry_->slots.size() >= config_.uid_count) return FailMsg("no free QEMU uid");
    if (!registry_->live.insert(spec.id).second) {
      return FailMsg("sandbox " + spec.id + " already exists");
    }
    // Round robin, so a uid is not reused right after its sandbox ended.
    while (registry_->slots.contains(registry_->next_slot % config_.uid_count)) {
      ++registry_->next_slot;
    }
    slot = registry_->next_slot++ % config_.uid_count;
    registry_->slots.insert(slot);
  }
  // From here on the instance owns everything; dropping it on an error path
  // undoes whatever part of the start happened.
  auto inst = std::make_unique<MicroVmInstance>(registry_, spec.id, config_.state_dir, slot);
  inst->launched_ = t0;
  const std::string dir = config_.state_dir + "/" + spec.id;
  auto fail = [&](Error e) { return Fail(e.Wrap("starting microVM " + spec.id)); };

  if (::mkdir(dir.c_str(), 0700) != 0) return fail(Error::Errno("mkdir " + dir));
  const std::string scratch_path = dir + "/scratch.img";
  auto scratch_rw = microvm::CloneSparse(config_.scratch_template, scratch_path);
  if (!scratch_rw) return fail(scratch_rw.error());
  auto scratch = AboveTargets(std::move(*scratch_rw));
  if (!scratch) return fail(scratch.error());
  auto scratch_ro = OpenAbove(scratch_path, O_RDONLY);
  if (!scratch_ro) return fail(scratch_ro.error());
  auto kernel = OpenAbove(config_.kernel, O_RDONLY);
  if (!kernel) return fail(kernel.error());
  auto initrd = OpenAbove(config_.initrd, O_RDONLY);
  if (!initrd) return fail(initrd.error());
  auto root = OpenAbove(config_.rootfs_image, O_RDONLY);
  if (!root) return fail(root.error());
  inst->log_path_ = dir + "/qemu.log";
  auto log = OpenAbove(inst->log_path_, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (!log) return fail(log.error());
  auto devnull = OpenAbove("/dev/null", O_RDWR);
  if (!devnull) return fail(devnull.error());
  Result<UniqueFd> extra = mode == microvm::LaunchMode::kBoot ? OpenAbove("/dev/null", O_RDWR)
                                                              : AboveTargets(std::move(extra_in));
  if (!extra) return fail(extra.error());

  CgroupLimits limits;
  limits.memory_bytes = (uint64_t{spec.memory_mb} + config_.qemu_overhead_mb) << 20;
  limits.cpus = spec.cpus;
  limits.pids_max = config_.pids_max;
  auto cg = cgroups_.Create(spec.id, limits);
  if (!cg) return fail(cg.error());
  inst->cgroup_ = std::move(*cg);

  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
    return fail(Error::Errno("socketpair (link)"));
  }
  inst->link_ = UniqueFd(sp[0]);
  auto qemu_link = AboveTargets(UniqueFd(sp[1]));
  if (!qemu_link) return fail(qemu_link.error());
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) {
    return fail(Error::Errno("socketpair (sync)"));
  }
  UniqueFd sync(sp[0]);
  auto child_sync = AboveTargets(UniqueFd(sp[1]));
  if (!child_sync) return fail(child_sync.error());

  std::vector<std::string> args = microvm::QemuArgv(LaunchFor(spec, mode));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string env_path = "PATH=/usr/bin:/bin";
  std::array<char*, 2> envp = {env_path.data(), nullptr};

  ChildPlan plan;
  plan.sync_fd = child_sync->get();
  plan.fds = {devnull->get(), log->get(),  log->get(),     qemu_link->get(),  kernel->get(),
              initrd->get(),  root->get(), scratch->get(), scratch_ro->get(), extra->get(),
              devnull->get()};
  if (spec.network) {
    plan.make_tap = true;
    std::memcpy(plan.tap.ifr_name, microvm::kGuestTap, std::strlen(microvm::kGuestTap) + 1);
    // vnet headers: checksum and segmentation offloads between guest and host.
    plan.tap.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    inst->guest_tap_ = microvm::kGuestTap;
  }
  plan.uid = config_.uid_base + slot;
  plan.gid = config_.uid_base + slot;
  plan.extra_gid = config_.kvm ? kvm_gid_ : -1;
  plan.exe = qemu_path_.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();

  int pidfd = -1;
  pid_t pid = -1;
  bool born_in_cgroup = false;
  {
    UniqueFd cgroup_fd = inst->cgroup_->OpenV2Dir();
    clone_args args3{};
    args3.flags = CLONE_NEWNET | CLONE_PIDFD | (cgroup_fd ? CLONE_INTO_CGROUP : 0);
    args3.pidfd = reinterpret_cast<uint64_t>(&pidfd);
    args3.exit_signal = SIGCHLD;
    args3.cgroup = cgroup_fd ? static_cast<uint64_t>(cgroup_fd.get()) : 0;
    // Fork semantics (no new stack): the child continues on its copy of this
    // stack and never returns.
    long r = ::syscall(SYS_clone3, &args3, sizeof args3);
    if (r == 0) ChildMain(plan);
    if (r < 0) return fail(Error::Errno("clone3"));
    pid = static_cast<pid_t>(r);
    born_in_cgroup = static_cast<bool>(cgroup_fd);
  }
  inst->pid_ = pid;
  inst->pidfd_ = UniqueFd(pidfd);
  child_sync->Reset();
  qemu_link->Reset();  // QEMU holds the only other end: its death closes the link

  if (!born_in_cgroup) {
    if (auto st = inst->cgroup_->AddProcess(pid); !st) return fail(st.error());
  }
  {
    SyncMsg go{kGo, 0, 0};
    if (::send(sync.get(), &go, sizeof go, MSG_NOSIGNAL) != sizeof go) {
      return fail(Error::Errno("send sync"));
    }
  }
  // EOF = exec'd (the sync socket is CLOEXEC), or a message naming the step.
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        t0 + std::chrono::seconds(10) - Clock::now());
    pollfd pfd{sync.get(), POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return fail(Error::Msg("timed out waiting for QEMU's exec"));
    SyncMsg m{};
    ssize_t n = ::recv(sync.get(), &m, sizeof m, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) break;
    if (n == sizeof m && m.type == kChildError) {
      return fail(Error::Errno(std::string("QEMU child: ") + StepName(m.step), m.err));
    }
    return fail(Error::Msg("unexpected message from the QEMU child"));
  }

  return inst;
}

Error MicroVmBackend::WhyDead(MicroVmInstance& inst, const std::string& what) const {
  // QEMU may close the link a moment before it exits; its last words are in
  // the log once it has.
  pollfd exited{inst.pidfd_.get(), POLLIN, 0};
  (void)::poll(&exited, 1, 2000);
  std::string status;
  if (auto code = inst.ExitStatus()) {
    status = *code < 128 ? " (exit status " + std::to_string(*code) + ")"
                         : " (signal " + std::to_string(*code - 128) + ")";
  }
  std::string tail = Tail(inst.log_path_);
  return Error::Msg(what + status + (tail.empty() ? "" : ": " + tail));
}

Status MicroVmBackend::AwaitHandshake(MicroVmInstance& inst) {
  const auto deadline = inst.launched_ + config_.boot_timeout;
  // Exactly one frame, read to its last byte and no further.
  constexpr size_t kMaxHandshake = 4096;
  std::string frame;
  size_t want = link::kHeaderSize;
  for (;;) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      return Fail(WhyDead(inst, "the guest did not reach its boot handshake within " +
                                    std::to_string(config_.boot_timeout.count()) + " ms"));
    }
    pollfd pfds[2] = {{inst.link_.get(), POLLIN, 0}, {inst.pidfd_.get(), POLLIN, 0}};
    int r = ::poll(pfds, 2, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return FailErrno("poll");
    if (pfds[0].revents & (POLLIN | POLLHUP)) {
      char buf[kMaxHandshake];
      ssize_t n = ::recv(inst.link_.get(), buf, want - frame.size(), MSG_DONTWAIT);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n < 0) return FailErrno("reading the boot handshake");
      if (n == 0) return Fail(WhyDead(inst, "QEMU closed the agent link during boot"));
      frame.append(buf, static_cast<size_t>(n));
      if (frame.size() == link::kHeaderSize && want == link::kHeaderSize) {
        uint32_t len = 0;  // u32 LE
        for (int i = 3; i >= 0; --i) {
          len = len << 8 | static_cast<unsigned char>(frame[static_cast<size_t>(i)]);
        }
        if (len == 0 || len > kMaxHandshake - link::kHeaderSize) {
          return FailMsg("boot handshake: bad frame length " + std::to_string(len));
        }
        want += len;
      }
      if (frame.size() == want && want > link::kHeaderSize) break;
      continue;
    }
    if (pfds[1].revents & POLLIN) return Fail(WhyDead(inst, "QEMU exited during boot"));
  }
  link::FrameDecoder decoder;
  auto used = decoder.Feed(frame);
  auto f = used ? decoder.Next() : std::nullopt;
  if (!f || f->type != link::FrameType::kControl || f->channel != 0 ||
      !vmboot::IsAwaitingConfig(f->payload)) {
    return FailMsg("boot handshake: the guest did not send awaiting-config");
  }
  return {};
}

Status MicroVmBackend::SendConfig(MicroVmInstance& inst, const SandboxSpec& spec) {
  vmboot::BootConfig c;
  c.hostname = spec.hostname;
  c.pids_max = spec.pids_max;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  c.realtime_ns = int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
  c.entropy.resize(vmboot::kEntropyBytes);
  if (::getrandom(c.entropy.data(), c.entropy.size(), 0) !=
      static_cast<ssize_t>(c.entropy.size())) {
    return FailErrno("getrandom");
  }
  const std::string frame = vmboot::ConfigFrame(c);
  // A few hundred bytes into an empty socket buffer: does not block; a dead
  // QEMU makes it fail (EPIPE).
  for (size_t off = 0; off < frame.size();) {
    ssize_t n = ::send(inst.link_.get(), frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return Fail(WhyDead(inst, std::string("sending the boot config: ") + std::strerror(errno)));
    off += static_cast<size_t>(n);
  }
  return {};
}

Status MicroVmBackend::PrepareSnapshot(int state_fd) {
  static std::atomic<uint32_t> counter{0};
  SandboxSpec spec;
  spec.id = "vm-snapshot-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  spec.memory_mb = config_.snapshot_memory_mb;
  spec.cpus = config_.snapshot_cpus;
  spec.network = config_.snapshot_network;
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0)
    return FailErrno("socketpair (QMP)");
  UniqueFd qmp_ours(sp[0]), qmp_qemu(sp[1]);
  auto inst = Launch(spec, microvm::LaunchMode::kPrepare, std::move(qmp_qemu));
  if (!inst) return Fail(inst.error());
  {
    std::lock_guard lock(prep_mu_);
    if (closing_) return FailMsg("the backend is shutting down");
    prep_inst_ = inst->get();
  }
  Status st = AwaitHandshake(**inst);
  if (st) {
    // The guest now blocks reading its config: stop it there and save it.
    const auto deadline = Clock::now() + config_.boot_timeout;
    auto qmp = microvm::QmpClient::Connect(std::move(qmp_ours), deadline);
    st = qmp ? microvm::SaveVmState(*qmp, state_fd, deadline) : Status(Fail(qmp.error()));
    if (!st) st = Fail(WhyDead(**inst, st.error().message));
  }
  {
    std::lock_guard lock(prep_mu_);
    prep_inst_ = nullptr;
  }
  Status destroyed = (*inst)->Destroy();
  if (!st) return st;
  return destroyed;
}

Status MicroVmBackend::AwaitAgent(MicroVmInstance& inst) {
  const auto deadline = inst.launched_ + config_.boot_timeout;
  for (;;) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      return Fail(WhyDead(inst, "the guest's agent did not start within " +
                                    std::to_string(config_.boot_timeout.count()) + " ms"));
    }
    pollfd pfds[2] = {{inst.link_.get(), POLLIN, 0}, {inst.pidfd_.get(), POLLIN, 0}};
    int r = ::poll(pfds, 2, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return FailErrno("poll");
    if (pfds[0].revents & (POLLIN | POLLHUP)) {
      char c;
      ssize_t n = ::recv(inst.link_.get(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 1) return {};  // the ready event is there, for the daemon to read
      if (n == 0) return Fail(WhyDead(inst, "QEMU closed the agent link during boot"));
    }
    if (pfds[1].revents & POLLIN) return Fail(WhyDead(inst, "QEMU exited during boot"));
  }
}

void MicroVmBackend::ReapStale() {
  std::vector<std::string> keep;
  {
    std::lock_guard lock(registry_->mu);
    keep.assign(registry_->live.begin(), registry_->live.end());
  }
  // QEMUs of a previous run first: they hold their scratch images.
  cgroups_.ReapStale(keep);
  DIR* dir = ::opendir(config_.state_dir.c_str());
  if (!dir) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;  // never a sandbox id
    if (std::find(keep.begin(), keep.end(), name) == keep.end()) stale.push_back(name);
  }
  ::closedir(dir);
  for (const auto& name : stale) {
    if (auto st = RemoveTree(config_.state_dir, name); !st) {
      spdlog::warn("reaping stale sandbox dir {}: {}", name, st.error().message);
    } else {
      spdlog::info("reaped stale sandbox dir {}", name);
    }
  }
}

// A file QEMU reads as its own unprivileged uid.
Status CheckWorldReadable(const std::string& what, const std::string& path) {
  struct stat st {};
  if (path.empty()) return FailMsg("microvm backend: no " + what + " given");
  if (::stat(path.c_str(), &st) != 0) return FailErrno("microvm backend: " + what + " " + path);
  if (!S_ISREG(st.st_mode))
    return FailMsg("microvm backend: " + what + " " + path + " is not a file");
  if (!(st.st_mode & S_IROTH)) {
    return FailMsg("microvm backend: " + what + " " + path +
                   " must be readable by every user (QEMU runs unprivileged)");
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Backend>> MakeMicroVmBackend(const MicroVmConfig& in) {
  MicroVmConfig config = in;
  if (::geteuid() != 0) return FailMsg("microvm backend: must run as root");
  if (config.state_dir.empty() || config.state_dir[0] != '/') {
    return FailMsg("microvm backend: the state dir must be an absolute path");
  }
  if (config.scratch_template.empty()) return FailMsg("microvm backend: no scratch template path");
  if (config.rootfs_format != "erofs" && config.rootfs_format != "ext4") {
    return FailMsg("microvm backend: the root image format must be erofs or ext4");
  }
  if (config.uid_count == 0 || config.uid_base == 0) {
    return FailMsg("microvm backend: the QEMU uid range must be non-empty and not contain root");
  }
  SBX_TRY(CheckWorldReadable("kernel", config.kernel));
  SBX_TRY(CheckWorldReadable("initramfs", config.initrd));
  SBX_TRY(CheckWorldReadable("root image", config.rootfs_image));
  const std::string qemu = FindOnPath(config.qemu);
  if (qemu.empty() || ::access(qemu.c_str(), X_OK) != 0) {
    return FailMsg("microvm backend: " + config.qemu + " not found (install qemu-system-x86)");
  }
  if (::mkdir(config.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return FailErrno("microvm backend: mkdir " + config.state_dir);
  }
  int kvm_gid = -1;
  if (config.kvm) {
    struct stat st {};
    if (::stat("/dev/kvm", &st) != 0) return FailErrno("microvm backend: /dev/kvm");
    // QEMU runs unprivileged: it reaches /dev/kvm through the device's group.
    if ((st.st_mode & (S_IRGRP | S_IWGRP)) != (S_IRGRP | S_IWGRP)) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
      return FailMsg(
          std::string("microvm backend: /dev/kvm is not read-write for its group (mode ") + mode +
          "), so an unprivileged QEMU cannot use it");
    }
    if (st.st_gid == 0) {
      // Group root would open every root-group file on the host to QEMU.
      return FailMsg(
          "microvm backend: /dev/kvm belongs to group root; give it a group of its own "
          "(Debian: kvm, mode 0660) for an unprivileged QEMU");
    }
    kvm_gid = static_cast<int>(st.st_gid);
  }
  if (config.snapshot && (config.snapshot_dir.empty() || config.snapshot_dir[0] != '/')) {
    return FailMsg("microvm backend: the snapshot dir must be an absolute path");
  }
  if (auto st = microvm::EnsureScratchTemplate(config.scratch_template, config.scratch_bytes);
      !st) {
    return Fail(st.error().Wrap("microvm backend: scratch template"));
  }
  auto cgroups = CgroupDriver::Detect(config.cgroup_parent, config.cgroup_root);
  if (!cgroups) return Fail(cgroups.error().Wrap("microvm backend"));
  spdlog::info("microvm backend: {}, kernel {}, root {} ({}), cgroup {}, snapshots {}",
               config.kvm ? "KVM" : "TCG", config.kernel, config.rootfs_image, config.rootfs_format,
               cgroups->v2() ? "v2" : "v1", config.snapshot ? "on" : "off");
  const bool eager = config.eager;
  auto backend =
      std::make_unique<MicroVmBackend>(std::move(config), qemu, std::move(*cgroups), kvm_gid);
  if (eager) SBX_TRY(backend->Setup());
  return std::unique_ptr<Backend>(std::move(backend));
}

Status ProbeKvm(MicroVmConfig config, std::chrono::milliseconds timeout) {
  if (::access("/dev/kvm", F_OK) != 0) return FailMsg("no /dev/kvm");
  config.kvm = true;
  config.boot_timeout = timeout;
  config.snapshot = false;  // one boot, and KVM is not known to work yet
  auto backend = MakeMicroVmBackend(config);
  if (!backend) return Fail(backend.error());
  SandboxSpec spec;
  spec.id = "kvm-probe-" + std::to_string(::getpid());
  spec.memory_mb = 512;
  spec.cpus = 1;
  auto inst = (*backend)->Start(spec);
  if (!inst) return Fail(inst.error());
  return (*inst)->Destroy();
}

}  // namespace sandboxd::isolation

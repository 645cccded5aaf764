// Start sequence (parent = daemon thread, child = the future PID 1):
//
//   parent: mkdir STATE/<id>/{upper,work,merged}; create the cgroup
//   parent: clone(NEWPID|NEWNS|NEWUTS|NEWIPC|NEWNET)           -> child blocks
//   parent: put the child into the cgroup; send kGo
//   child:  (still root of the initial user namespace, so it may mount)
//           make / rprivate; overlay on merged; /proc (+ masks), /dev, /sys;
//           sethostname; bring lo up; pivot_root into merged, detach old root
//   child:  unshare(NEWUSER); send kUsernsReady
//   parent: write uid_map/gid_map "0 <base> <count>"; send kMapsWritten
//   child:  become uid/gid 0 of the new user namespace (host uid <base>);
//           unshare(NEWCGROUP); drop bounding caps; no_new_privs; stdio =
//           /dev/null, link = fd 3, every other fd CLOEXEC; seccomp; exec
//   parent: sees EOF on the sync socket (it is CLOEXEC) = exec happened.
//
// Why the user namespace comes last: the mount, net, uts and ipc namespaces
// are created while the child is still in the initial user namespace, so they
// are *owned* by it. Root inside the sandbox (host uid <base>) has
// capabilities only in its own user namespace, which owns nothing but the
// cgroup namespace: it cannot mount or unmount (the masks over /proc stay), nor
// reconfigure the network, nor set the hostname. Creating the user namespace
// first (as rootless runtimes must) would make it own all of them.
//
// Between clone and exec the child only makes raw syscalls on data prepared
// by the parent: no allocation, no locks, no glibc wrappers that consult the
// (copied, stale) thread list such as setresuid().

#include "daemon/isolation/namespaces/namespaces_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>

#include <spdlog/spdlog.h>

#include "daemon/isolation/cgroup.h"
#include "daemon/isolation/remove_tree.h"
#include "daemon/isolation/seccomp_policy.h"

namespace sandboxd::isolation {
namespace {

using Clock = std::chrono::steady_clock;

// ---- messages on the parent/child sync socket (SOCK_SEQPACKET) ----

enum MsgType : uint32_t {
  kGo = 1,            // parent -> child: in the cgroup, start setting up
  kUsernsReady = 2,   // child -> parent: unshared the user namespace
  kMapsWritten = 3,   // parent -> child: uid/gid maps are in place
  kChildError = 4,    // child -> parent: step `step` failed with `err`
};

struct SyncMsg {
  uint32_t type;
  int32_t step;  // index into ChildPlan::ops, or a negative kStep* value
  int32_t err;
};

// Steps of the child that are not in the op list.
enum ChildStep : int32_t {
  kStepSync = -1,
  kStepHostname = -2,
  kStepLoopback = -3,
  kStepPivot = -4,
  kStepUserns = -5,
  kStepSetId = -6,
  kStepCgroupns = -7,
  kStepCaps = -8,
  kStepNoNewPrivs = -9,
  kStepStdio = -10,
  kStepFds = -11,
  kStepSeccomp = -12,
  kStepExec = -13,
  kStepSession = -14,
};

const char* StepName(int32_t step) {
  switch (step) {
    case kStepSync: return "sync with parent";
    case kStepHostname: return "sethostname";
    case kStepLoopback: return "bring up lo";
    case kStepPivot: return "pivot_root";
    case kStepUserns: return "unshare(CLONE_NEWUSER)";
    case kStepSetId: return "setresuid/setresgid/setgroups";
    case kStepCgroupns: return "unshare(CLONE_NEWCGROUP)";
    case kStepCaps: return "drop bounding capabilities";
    case kStepNoNewPrivs: return "PR_SET_NO_NEW_PRIVS";
    case kStepStdio: return "stdio to /dev/null";
    case kStepFds: return "close_range";
    case kStepSeccomp: return "seccomp";
    case kStepExec: return "exec init";
    case kStepSession: return "setsid";
    default: return "?";
  }
}

// ---- the child's plan, prepared by the parent ----

struct FsOp {
  enum Kind { kMount, kMkdir, kTouch, kSymlink, kRemountRo, kChdir };
  Kind kind;
  std::string source, target, fstype, data;
  unsigned long flags = 0;
  bool optional = false;  // ENOENT is fine (e.g. /proc/sched_debug absent)
  std::string Describe() const {
    switch (kind) {
      case kMount: return "mount " + fstype + " " + source + " on " + target;
      case kMkdir: return "mkdir " + target;
      case kTouch: return "create " + target;
      case kSymlink: return "symlink " + target + " -> " + source;
      case kRemountRo: return "remount read-only " + target;
      case kChdir: return "chdir " + target;
    }
    return "?";
  }
};

// Raw-pointer view of FsOp for the child (no std::string access after clone,
// although the copied memory would be valid: keeps the child code plain C).
struct RawOp {
  FsOp::Kind kind;
  const char* source;
  const char* target;
  const char* fstype;
  const char* data;
  unsigned long flags;
  bool optional;
};

struct ChildPlan {
  int sync_fd = -1;
  int link_fd = -1;   // child's end, >= 4
  int agent_fd = -1;  // O_PATH fd of the agent, or -1 to exec exec_path
  const char* exec_path = nullptr;
  const char* merged = nullptr;
  const char* hostname = nullptr;
  size_t hostname_len = 0;
  const RawOp* ops = nullptr;
  size_t n_ops = 0;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  sock_fprog seccomp{};
  uint64_t keep_caps = 0;
};

// Capabilities root inside keeps (in its own user namespace): Docker's
// default set. Everything else leaves the bounding set before exec.
constexpr uint64_t Cap(int c) { return 1ULL << c; }
constexpr uint64_t kKeepCaps = Cap(CAP_CHOWN) | Cap(CAP_DAC_OVERRIDE) | Cap(CAP_FOWNER) |
                               Cap(CAP_FSETID) | Cap(CAP_KILL) | Cap(CAP_SETGID) |
                               Cap(CAP_SETUID) | Cap(CAP_SETPCAP) |
                               Cap(CAP_NET_BIND_SERVICE) | Cap(CAP_NET_RAW) |
                               Cap(CAP_SYS_CHROOT) | Cap(CAP_MKNOD) | Cap(CAP_AUDIT_WRITE) |
                               Cap(CAP_SETFCAP);

// ---- child side: async-signal-safe only ----

[[noreturn]] void ChildFail(const ChildPlan& p, int32_t step, int err) {
  SyncMsg m{kChildError, step, err};
  (void)!::write(p.sync_fd, &m, sizeof m);
  ::_exit(127);
}

bool ChildRecv(const ChildPlan& p, uint32_t want) {
  SyncMsg m{};
  ssize_t n;
  do {
    n = ::read(p.sync_fd, &m, sizeof m);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(sizeof m) && m.type == want;
}

int RunOp(const RawOp& op) {
  switch (op.kind) {
    case FsOp::kMount:
      return ::mount(op.source, op.target, op.fstype, op.flags, op.data);
    case FsOp::kMkdir:
      return (::mkdir(op.target, 0755) == 0 || errno == EEXIST) ? 0 : -1;
    case FsOp::kTouch: {
      int fd = ::open(op.target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (fd < 0) return -1;
      ::close(fd);
      return 0;
    }
    case FsOp::kSymlink:
      return (::symlink(op.source, op.target) == 0 || errno == EEXIST) ? 0 : -1;
    case FsOp::kRemountRo:
      return ::mount(nullptr, op.target, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | op.flags,
                     nullptr);
    case FsOp::kChdir:
      return ::chdir(op.target);
  }
  errno = EINVAL;
  return -1;
}

int ChildMain(void* arg) {
  const ChildPlan& p = *static_cast<const ChildPlan*>(arg);

  // Dispositions and the mask are inherited from the daemon (which may ignore
  // SIGPIPE or block signals for its threads): reset them for the agent.
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    ::sigaction(sig, &sa, nullptr);
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  // Nothing runs before the parent has put us into the cgroup.
  if (!ChildRecv(p, kGo)) ::_exit(126);
  // A new session without a controlling terminal: otherwise the sandbox would
  // share the daemon's terminal (if it has one) through /dev/tty, where
  // TIOCSTI could type commands into it.
  if (::setsid() < 0) ChildFail(p, kStepSession, errno);

  for (size_t i = 0; i < p.n_ops; ++i) {
    if (RunOp(p.ops[i]) != 0 && !(p.ops[i].optional && errno == ENOENT)) {
      ChildFail(p, static_cast<int32_t>(i), errno);
    }
  }
  if (::sethostname(p.hostname, p.hostname_len) != 0) ChildFail(p, kStepHostname, errno);

  {  // lo: the only interface in the new network namespace, down by default.
    int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) ChildFail(p, kStepLoopback, errno);
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, "lo", 3);
    if (::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) ChildFail(p, kStepLoopback, errno);
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
    if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) ChildFail(p, kStepLoopback, errno);
    ::close(s);
  }

  // pivot_root(".", ".") stacks the old root under the new one; detaching it
  // leaves no path to any host file. (chroot would leave the old root
  // reachable and would make unshare(CLONE_NEWUSER) fail.)
  if (::chdir(p.merged) != 0) ChildFail(p, kStepPivot, errno);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) ChildFail(p, kStepPivot, errno);
  if (::umount2(".", MNT_DETACH) != 0) ChildFail(p, kStepPivot, errno);
  if (::chdir("/") != 0) ChildFail(p, kStepPivot, errno);

  if (::unshare(CLONE_NEWUSER) != 0) ChildFail(p, kStepUserns, errno);
  {
    SyncMsg m{kUsernsReady, 0, 0};
    if (::write(p.sync_fd, &m, sizeof m) != static_cast<ssize_t>(sizeof m)) ::_exit(126);
  }
  if (!ChildRecv(p, kMapsWritten)) ::_exit(126);
  // Raw syscalls: glibc's set*id wrappers broadcast to the threads of the
  // daemon that this copy of its memory still lists.
  if (::syscall(SYS_setresgid, 0, 0, 0) != 0) ChildFail(p, kStepSetId, errno);
  if (::syscall(SYS_setgroups, 0, nullptr) != 0) ChildFail(p, kStepSetId, errno);
  if (::syscall(SYS_setresuid, 0, 0, 0) != 0) ChildFail(p, kStepSetId, errno);
  // Now that we are in the sandbox's cgroup: /proc/self/cgroup shows "/".
  if (::unshare(CLONE_NEWCGROUP) != 0) ChildFail(p, kStepCgroupns, errno);

  for (int cap = 0; cap < 64; ++cap) {
    if (p.keep_caps & (1ULL << cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      ChildFail(p, kStepCaps, errno);
    }
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ChildFail(p, kStepNoNewPrivs, errno);

  {
    int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) ChildFail(p, kStepStdio, errno);
    for (int fd = 0; fd < 3; ++fd) {
      if (::dup2(null_fd, fd) < 0) ChildFail(p, kStepStdio, errno);
    }
    if (null_fd > 2) ::close(null_fd);
  }
  if (::dup2(p.link_fd, 3) < 0) ChildFail(p, kStepFds, errno);  // clears CLOEXEC on 3
  // CLOEXEC rather than close: the sync socket (error reports) and the agent
  // fd must survive until the exec itself.
  if (::syscall(SYS_close_range, 4U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) ChildFail(p, kStepFds, errno);

  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p.seccomp, 0, 0) != 0) {
    ChildFail(p, kStepSeccomp, errno);
  }
  if (p.agent_fd >= 0) {
    ::syscall(SYS_execveat, p.agent_fd, "", p.argv, p.envp, AT_EMPTY_PATH);
  } else {
    ::execve(p.exec_path, p.argv, p.envp);
  }
  ChildFail(p, kStepExec, errno);
}

// ---- parent side ----

Status WriteFileAt(const std::string& path, std::string_view value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return FailErrno("open " + path);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return FailErrno("write " + path);
  }
  return {};
}

// Moves `fd` to a number >= 4, so that the child's dup2(link, 3) and stdio
// setup cannot clobber it.
Result<UniqueFd> AboveStdio(UniqueFd fd) {
  if (fd.get() >= 4) return fd;
  int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 4);
  if (moved < 0) return FailErrno("fcntl F_DUPFD_CLOEXEC");
  return UniqueFd(moved);
}

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id[0] == '.') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-' || c == '.';
  });
}

// Ids of the sandboxes this backend runs; shared with the instances, which
// may outlive the backend.
struct Registry {
  std::mutex mu;
  std::set<std::string> live;
};

class NamespacesInstance final : public Instance {
 public:
  NamespacesInstance(std::shared_ptr<Registry> registry, std::string id, std::string state_dir)
      : registry_(std::move(registry)), id_(std::move(id)), state_dir_(std::move(state_dir)) {}

  ~NamespacesInstance() override {
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
    if (pidfd_) note(KillInit());
    if (cgroup_) note(cgroup_->Destroy());
    // The overlay and every other mount were made inside the sandbox's mount
    // namespace, which died with its last process: nothing to unmount here.
    note(RemoveTree(state_dir_, id_));
    if (result) {
      destroyed_ = true;
      std::lock_guard rlock(registry_->mu);
      registry_->live.erase(id_);
    }
    return result;
  }

  uint64_t OomKillCount() const override { return cgroup_ ? cgroup_->OomKillCount() : 0; }
  pid_t InitPid() const override { return pid_; }

  // Set by Start() as it acquires them; Destroy() releases whatever is set.
  UniqueFd link_;
  UniqueFd pidfd_;
  pid_t pid_ = -1;
  std::unique_ptr<Cgroup> cgroup_;

 private:
  // SIGKILL to a pid namespace's init kills the whole namespace; the init is
  // reported exited only after all its members are gone.
  Status KillInit() {
    ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    pollfd pfd{pidfd_.get(), POLLIN, 0};
    int r;
    do {
      r = ::poll(&pfd, 1, 3000);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return FailMsg("sandbox init " + std::to_string(pid_) + " did not die in 3 s");
    siginfo_t info{};
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info,
                 WEXITED) != 0 &&
        errno != ECHILD) {
      return FailErrno("waitid");
    }
    pidfd_.Reset();
    return {};
  }

  std::shared_ptr<Registry> registry_;
  const std::string id_;
  const std::string state_dir_;  // parent of <id>
  std::mutex mu_;
  bool destroyed_ = false;
};

class NamespacesBackend final : public Backend {
 public:
  NamespacesBackend(NamespacesConfig config, CgroupDriver cgroups, SeccompProgram seccomp,
                    UniqueFd agent_fd)
      : config_(std::move(config)), cgroups_(std::move(cgroups)), seccomp_(std::move(seccomp)),
        agent_fd_(std::move(agent_fd)), registry_(std::make_shared<Registry>()) {
    for (const auto& a : config_.init_argv) argv_storage_.push_back(a);
    for (const auto& e : config_.init_env) env_storage_.push_back(e);
    for (auto& a : argv_storage_) argv_.push_back(a.data());
    argv_.push_back(nullptr);
    for (auto& e : env_storage_) envp_.push_back(e.data());
    envp_.push_back(nullptr);
  }
  ~NamespacesBackend() override { cgroups_.RemoveParentsIfEmpty(); }

  std::string_view Name() const override { return "namespaces"; }

  Result<std::unique_ptr<Instance>> Start(const SandboxSpec& spec) override;
  void ReapStale() override;

 private:
  std::vector<FsOp> BuildOps(const std::string& dir) const;

  const NamespacesConfig config_;
  const CgroupDriver cgroups_;
  const SeccompProgram seccomp_;
  const UniqueFd agent_fd_;
  std::shared_ptr<Registry> registry_;
  std::vector<std::string> argv_storage_, env_storage_;
  std::vector<char*> argv_, envp_;
};

std::vector<FsOp> NamespacesBackend::BuildOps(const std::string& dir) const {
  const std::string m = dir + "/merged";
  const std::string ids = "uid=" + std::to_string(config_.uid_base) +
                          ",gid=" + std::to_string(config_.uid_base);
  std::vector<FsOp> ops;
  auto add = [&](FsOp op) { ops.push_back(std::move(op)); };
  // Our mounts must not propagate back to the host (shared is systemd's
  // default for /).
  add({FsOp::kMount, "", "/", "", "", MS_REC | MS_PRIVATE});
  // The overlay's options are visible inside (/proc/self/mountinfo): give it
  // paths relative to the sandbox's own directory, with the image bind-mounted
  // there, so no host path (image location, data dir) shows.
  add({FsOp::kMount, config_.rootfs_dir, dir + "/lower", "", "", MS_BIND});
  add({FsOp::kChdir, "", dir, "", "", 0});
  add({FsOp::kMount, "overlay", m, "overlay", "lowerdir=lower,upperdir=upper,workdir=work",
       MS_NOSUID | MS_NODEV});

  // /proc of the new pid namespace, with runc's masks: files that reveal or
  // poke the host kernel are covered by /dev/null or an empty read-only tmpfs,
  // kernel tunables are read-only.
  add({FsOp::kMount, "proc", m + "/proc", "proc", "", MS_NOSUID | MS_NODEV | MS_NOEXEC});
  for (const char* f : {"kcore", "keys", "timer_list", "sched_debug", "latency_stats",
                        "timer_stats", "sysrq-trigger", "kallsyms", "kpagecount", "kpageflags",
                        "kpagecgroup", "config.gz"}) {
    FsOp op{FsOp::kMount, "/dev/null", m + "/proc/" + f, "", "", MS_BIND};
    op.optional = true;
    add(op);
  }
  for (const char* d : {"acpi", "scsi"}) {
    FsOp op{FsOp::kMount, "tmpfs", m + "/proc/" + d, "tmpfs", "size=0,mode=555",
            MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC};
    op.optional = true;
    add(op);
  }
  for (const char* d : {"sys", "bus", "fs", "irq"}) {
    const std::string t = m + "/proc/" + d;
    FsOp bind{FsOp::kMount, t, t, "", "", MS_BIND | MS_REC};
    bind.optional = true;
    add(bind);
    FsOp ro{FsOp::kRemountRo, "", t, "", "", MS_NOSUID | MS_NODEV | MS_NOEXEC};
    ro.optional = true;
    add(ro);
  }

  // A minimal /dev: host device nodes bind-mounted (the sandbox cannot mknod
  // real ones), a private devpts, a tmpfs /dev/shm.
  add({FsOp::kMount, "tmpfs", m + "/dev", "tmpfs", "mode=755,size=64k," + ids,
       MS_NOSUID | MS_NOEXEC});
  for (const char* d : {"null", "zero", "full", "random", "urandom", "tty"}) {
    add({FsOp::kTouch, "", m + "/dev/" + d, "", "", 0});
    add({FsOp::kMount, std::string("/dev/") + d, m + "/dev/" + d, "", "", MS_BIND});
  }
  add({FsOp::kMkdir, "", m + "/dev/pts", "", "", 0});
  add({FsOp::kMount, "devpts", m + "/dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=0620",
       MS_NOSUID | MS_NOEXEC});
  add({FsOp::kSymlink, "pts/ptmx", m + "/dev/ptmx", "", "", 0});
  add({FsOp::kMkdir, "", m + "/dev/shm", "", "", 0});
  add({FsOp::kMount, "tmpfs", m + "/dev/shm", "tmpfs", "mode=1777," + ids,
       MS_NOSUID | MS_NODEV | MS_NOEXEC});
  add({FsOp::kSymlink, "/proc/self/fd", m + "/dev/fd", "", "", 0});
  add({FsOp::kSymlink, "/proc/self/fd/0", m + "/dev/stdin", "", "", 0});
  add({FsOp::kSymlink, "/proc/self/fd/1", m + "/dev/stdout", "", "", 0});
  add({FsOp::kSymlink, "/proc/self/fd/2", m + "/dev/stderr", "", "", 0});

  // sysfs of the new network namespace (only lo under /sys/class/net),
  // read-only.
  add({FsOp::kMount, "sysfs", m + "/sys", "sysfs", "",
       MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC});
  return ops;
}

Result<std::unique_ptr<Instance>> NamespacesBackend::Start(const SandboxSpec& spec) {
  const auto t0 = Clock::now();
  if (!ValidId(spec.id)) return FailMsg("invalid sandbox id '" + spec.id + "'");
  if (spec.hostname.empty() || spec.hostname.size() > 64) {
    return FailMsg("invalid hostname '" + spec.hostname + "'");
  }
  {
    std::lock_guard lock(registry_->mu);
    if (!registry_->live.insert(spec.id).second) {
      return FailMsg("sandbox " + spec.id + " already exists");
    }
  }
  // From here on the instance owns everything; dropping it on an error path
  // undoes whatever part of the start happened.
  auto inst = std::make_unique<NamespacesInstance>(registry_, spec.id, config_.state_dir);
  const std::string dir = config_.state_dir + "/" + spec.id;
  auto fail = [&](Error e) { return Fail(e.Wrap("starting sandbox " + spec.id)); };

  if (::mkdir(dir.c_str(), 0700) != 0) return fail(Error::Errno("mkdir " + dir));
  for (const char* sub : {"/upper", "/work", "/merged", "/lower"}) {
    if (::mkdir((dir + sub).c_str(), 0755) != 0) return fail(Error::Errno("mkdir " + dir + sub));
  }
  // The upper layer's root becomes the sandbox's "/": owned by its root.
  if (::chown((dir + "/upper").c_str(), config_.uid_base, config_.uid_base) != 0) {
    return fail(Error::Errno("chown upper"));
  }

  CgroupLimits limits;
  limits.memory_bytes = uint64_t{spec.memory_mb} << 20;
  limits.cpus = spec.cpus;
  limits.pids_max = spec.pids_max;
  auto cg = cgroups_.Create(spec.id, limits);
  if (!cg) return fail(cg.error());
  inst->cgroup_ = std::move(*cg);

  // Plan for the child, fully materialised before clone.
  const std::vector<FsOp> ops = BuildOps(dir);
  std::vector<RawOp> raw;
  raw.reserve(ops.size());
  for (const auto& op : ops) {
    raw.push_back({op.kind, op.source.empty() ? nullptr : op.source.c_str(), op.target.c_str(),
                   op.fstype.empty() ? nullptr : op.fstype.c_str(),
                   op.data.empty() ? nullptr : op.data.c_str(), op.flags, op.optional});
  }
  const std::string merged = dir + "/merged";

  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) {
    return fail(Error::Errno("socketpair (link)"));
  }
  inst->link_ = UniqueFd(sp[0]);
  auto child_link = AboveStdio(UniqueFd(sp[1]));
  if (!child_link) return fail(child_link.error());
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) {
    return fail(Error::Errno("socketpair (sync)"));
  }
  UniqueFd sync(sp[0]);
  auto child_sync = AboveStdio(UniqueFd(sp[1]));
  if (!child_sync) return fail(child_sync.error());

  ChildPlan plan;
  plan.sync_fd = child_sync->get();
  plan.link_fd = child_link->get();
  plan.agent_fd = config_.init_path_in_image.empty() ? agent_fd_.get() : -1;
  plan.exec_path = config_.init_path_in_image.c_str();
  plan.merged = merged.c_str();
  plan.hostname = spec.hostname.c_str();
  plan.hostname_len = spec.hostname.size();
  plan.ops = raw.data();
  plan.n_ops = raw.size();
  plan.argv = argv_.data();
  plan.envp = envp_.data();
  plan.seccomp = seccomp_.fprog();
  plan.keep_caps = kKeepCaps;

  const uint64_t ns_flags =
      CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_PIDFD;
  int pidfd = -1;
  pid_t pid = -1;
  bool born_in_cgroup = false;
  // cgroup v2: clone3(CLONE_INTO_CGROUP) creates the child inside its cgroup.
  // Besides closing the window before the move, it skips the move itself,
  // which costs an RCU grace period (several ms) per write to cgroup.procs.
  if (UniqueFd cgroup_fd = inst->cgroup_->OpenV2Dir(); cgroup_fd) {
    clone_args args{};
    args.flags = ns_flags | CLONE_INTO_CGROUP;
    args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
    args.exit_signal = SIGCHLD;
    args.cgroup = static_cast<uint64_t>(cgroup_fd.get());
    // Fork semantics (no new stack): the child continues here on its copy of
    // this stack and never returns from ChildMain.
    long r = ::syscall(SYS_clone3, &args, sizeof args);
    if (r == 0) ::_exit(ChildMain(&plan));
    if (r > 0) {
      pid = static_cast<pid_t>(r);
      born_in_cgroup = true;
    } else if (errno != ENOSYS && errno != E2BIG && errno != EINVAL) {
      return fail(Error::Errno("clone3"));
    }  // else: kernel < 5.7, use clone + an explicit move below
  }
  if (pid < 0) {
    // The child runs on a copy of our memory (no CLONE_VM), so this stack can
    // be freed as soon as clone returns.
    constexpr size_t kStackSize = 256 * 1024;
    auto stack = std::make_unique<char[]>(kStackSize);
    pid = ::clone(ChildMain, stack.get() + kStackSize, static_cast<int>(ns_flags) | SIGCHLD,
                  &plan, &pidfd);
    if (pid < 0) return fail(Error::Errno("clone"));
  }
  inst->pid_ = pid;
  inst->pidfd_ = UniqueFd(pidfd);
  child_link->Reset();
  child_sync->Reset();

  const auto deadline = t0 + config_.start_timeout;
  // Receives one message; nullopt on EOF (= the child exec'd, or died).
  auto recv = [&]() -> Result<std::optional<SyncMsg>> {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd pfd{sync.get(), POLLIN, 0};
      int r = ::poll(&pfd, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return FailErrno("poll");
      if (r == 0) return FailMsg("timed out waiting for the sandbox init");
      SyncMsg m{};
      ssize_t n = ::recv(sync.get(), &m, sizeof m, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return FailErrno("recv sync");
      if (n == 0) return std::optional<SyncMsg>();
      if (n != sizeof m) return FailMsg("short sync message");
      if (m.type == kChildError) {
        std::string what = m.step >= 0 && static_cast<size_t>(m.step) < ops.size()
                               ? ops[static_cast<size_t>(m.step)].Describe()
                               : StepName(m.step);
        return FailErrno("sandbox init: " + what, m.err);
      }
      return std::optional<SyncMsg>(m);
    }
  };
  auto send = [&](MsgType type) -> Status {
    SyncMsg m{type, 0, 0};
    if (::send(sync.get(), &m, sizeof m, MSG_NOSIGNAL) != sizeof m) return FailErrno("send sync");
    return {};
  };

  if (!born_in_cgroup) {
    if (auto st = inst->cgroup_->AddProcess(pid); !st) return fail(st.error());
  }
  if (auto st = send(kGo); !st) return fail(st.error());

  auto msg = recv();
  if (!msg) return fail(msg.error());
  if (!*msg || (*msg)->type != kUsernsReady) return fail(Error::Msg("sandbox init died during setup"));
  const std::string map = "0 " + std::to_string(config_.uid_base) + " " +
                          std::to_string(config_.uid_count) + "\n";
  const std::string proc = "/proc/" + std::to_string(pid);
  if (auto st = WriteFileAt(proc + "/uid_map", map); !st) return fail(st.error());
  if (auto st = WriteFileAt(proc + "/gid_map", map); !st) return fail(st.error());
  if (auto st = send(kMapsWritten); !st) return fail(st.error());

  msg = recv();
  if (!msg) return fail(msg.error());
  if (*msg) return fail(Error::Msg("unexpected sync message"));

  spdlog::debug("sandbox {} started in {} us (init pid {})", spec.id,
                std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count(),
                pid);
  return std::unique_ptr<Instance>(std::move(inst));
}

void NamespacesBackend::ReapStale() {
  std::vector<std::string> keep;
  {
    std::lock_guard lock(registry_->mu);
    keep.assign(registry_->live.begin(), registry_->live.end());
  }
  // Tasks first: a live sandbox pins its overlay's upper/work directories.
  cgroups_.ReapStale(keep);
  DIR* dir = ::opendir(config_.state_dir.c_str());
  if (!dir) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
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

// Overlayfs takes its options comma-separated, and colons separate lower
// layers: such paths would be misparsed.
bool SafeForOverlay(const std::string& p) {
  return !p.empty() && p[0] == '/' && p.find_first_of(",:\\") == std::string::npos;
}

}  // namespace

Result<std::unique_ptr<Backend>> MakeNamespacesBackend(const NamespacesConfig& config) {
  if (::geteuid() != 0) return FailMsg("namespaces backend: must run as root");
  if (!SafeForOverlay(config.rootfs_dir) || !SafeForOverlay(config.state_dir)) {
    return FailMsg("namespaces backend: rootfs and state dirs must be absolute paths without "
                   "',', ':' or '\\'");
  }
  if (config.init_argv.empty()) return FailMsg("namespaces backend: empty init argv");
  if (config.uid_count == 0) return FailMsg("namespaces backend: uid_count is 0");
  struct stat st {};
  if (::stat(config.rootfs_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return FailErrno("namespaces backend: rootfs " + config.rootfs_dir);
  }
  if (::mkdir(config.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return FailErrno("namespaces backend: mkdir " + config.state_dir);
  }

  UniqueFd agent;
  if (config.init_path_in_image.empty()) {
    // O_PATH pins the binary we validated; exec'ing through the fd means the
    // image never contains (and the sandbox cannot replace) the agent.
    agent = UniqueFd(::open(config.agent_path.c_str(), O_PATH | O_CLOEXEC));
    if (!agent) return FailErrno("namespaces backend: open agent " + config.agent_path);
    if (::fstat(agent.get(), &st) != 0 || !S_ISREG(st.st_mode) || !(st.st_mode & S_IXUSR)) {
      return FailMsg("namespaces backend: agent " + config.agent_path +
                     " is not an executable file");
    }
    auto moved = AboveStdio(std::move(agent));
    if (!moved) return Fail(moved.error());
    agent = std::move(*moved);
  }

  auto cgroups = CgroupDriver::Detect(config.cgroup_parent, config.cgroup_root);
  if (!cgroups) return Fail(cgroups.error().Wrap("namespaces backend"));
  auto seccomp = BuildSandboxSeccompProgram();
  if (!seccomp) return Fail(seccomp.error().Wrap("namespaces backend"));
  spdlog::info("namespaces backend: cgroup {}, rootfs {}", cgroups->v2() ? "v2" : "v1",
               config.rootfs_dir);
  return std::unique_ptr<Backend>(std::make_unique<NamespacesBackend>(
      config, std::move(*cgroups), std::move(*seccomp), std::move(agent)));
}

}  // namespace sandboxd::isolation

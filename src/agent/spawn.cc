#include "agent/spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <string_view>
#include <vector>

#include "agent/pty.h"

namespace sandboxd::agent {
namespace {

constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin";

// Setup steps of the child, sent to the parent together with errno.
enum Step : int { kSetsid = 1, kDup, kSetgroups, kSetgid, kSetuid, kChdir, kExec, kCtty };

struct StatusMsg {
  int step;
  int err;
};
static_assert(sizeof(StatusMsg) <= PIPE_BUF, "status must be written atomically");

// Everything the child needs, prepared before fork(): after fork the child
// may only make async-signal-safe calls, so no allocation happens there.
struct ChildPlan {
  std::array<int, 3> stdio{-1, -1, -1};
  bool ctty = false;  // stdio[0] is a pty slave: make it the controlling terminal
  int status_w = -1;
  const char* const* argv = nullptr;
  const char* const* envp = nullptr;
  const char* const* candidates = nullptr;  // paths to try with execve, in order
  const char* cwd = nullptr;
  bool set_ids = false;  // agent is root: always clear groups and set ids
  uid_t uid = 0;
  gid_t gid = 0;
  uid_t cur_uid = 0;
  gid_t cur_gid = 0;
  bool set_nofile = false;
  struct rlimit nofile {};
};

// RLIMIT_NOFILE for children (see SetChildFileLimit); written once at
// startup, before any spawn.
bool g_child_nofile_set = false;
struct rlimit g_child_nofile {};

[[noreturn]] void ChildFail(const ChildPlan& p, Step step) {
  StatusMsg msg{step, errno};
  // A short write cannot happen (≤ PIPE_BUF into an empty pipe); if the
  // parent is gone there is nobody to tell anyway.
  ssize_t ignored = ::write(p.status_w, &msg, sizeof msg);
  (void)ignored;
  _exit(127);
}

// Runs in the forked child. Async-signal-safe calls only.
[[noreturn]] void RunChild(const ChildPlan& p) {
  if (setsid() < 0) ChildFail(p, kSetsid);
  // Now a session leader without a terminal, as TIOCSCTTY (arg 0) requires;
  // the terminal's foreground group becomes ours.
  if (p.ctty && ioctl(p.stdio[0], TIOCSCTTY, 0) < 0) ChildFail(p, kCtty);

  // The agent ignores SIGPIPE, and ignored dispositions survive exec;
  // blocked signals (SIGCHLD, SIGTERM...) would survive too.
  // The raw syscall, because glibc's sigaction() refuses its two internal
  // real-time signals (32, 33) — and an ignored disposition of those,
  // inherited from whoever started the daemon, would survive exec too.
  struct KernelSigaction {
    void* handler;
    unsigned long flags;
    void* restorer;
    unsigned long mask;
  } dfl = {};  // handler = SIG_DFL (0)
  for (int sig = 1; sig < NSIG; ++sig) {
    syscall(SYS_rt_sigaction, sig, &dfl, nullptr, sizeof(dfl.mask));  // EINVAL for KILL/STOP: fine
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  // The plan's fds are all ≥ 3 (see AboveStdio), so dup2 never aliases and
  // always clears CLOEXEC on the target.
  for (int i = 0; i < 3; ++i) {
    if (dup2(p.stdio[i], i) < 0) ChildFail(p, kDup);
  }

  // Raw syscalls: glibc's set*id wrappers coordinate all threads of the
  // process (setxid broadcast), machinery that is not meant for a forked
  // child; the syscalls act on this single thread, which is all there is.
  if (p.set_ids) {
    if (syscall(SYS_setgroups, 0, nullptr) < 0) ChildFail(p, kSetgroups);
    if (syscall(SYS_setresgid, p.gid, p.gid, p.gid) < 0) ChildFail(p, kSetgid);
    if (syscall(SYS_setresuid, p.uid, p.uid, p.uid) < 0) ChildFail(p, kSetuid);
  } else {
    // Not root: only a no-op change can succeed; try the others so the
    // daemon gets the kernel's EPERM rather than a silent wrong identity.
    if (p.gid != p.cur_gid && syscall(SYS_setresgid, p.gid, p.gid, p.gid) < 0) {
      ChildFail(p, kSetgid);
    }
    if (p.uid != p.cur_uid && syscall(SYS_setresuid, p.uid, p.uid, p.uid) < 0) {
      ChildFail(p, kSetuid);
    }
  }

  // Lowering a limit always succeeds; failure would only leave it higher.
  if (p.set_nofile) setrlimit(RLIMIT_NOFILE, &p.nofile);

  // After the id switch, so the target user's permissions apply.
  if (chdir(p.cwd) < 0) ChildFail(p, kChdir);

  // Every fd of the agent is CLOEXEC already; this also covers anything the
  // agent inherited from whoever started it. CLOEXEC rather than close keeps
  // the status pipe usable until exec. Failure (old kernel) is harmless.
  syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);

  // execvpe() semantics: skip PATH entries where the file is missing, keep
  // EACCES as the answer if nothing else works, stop at any other error.
  bool eacces = false;
  for (const char* const* c = p.candidates; *c != nullptr; ++c) {
    execve(*c, const_cast<char* const*>(p.argv), const_cast<char* const*>(p.envp));
    switch (errno) {
      case EACCES:
        eacces = true;
        break;
      case ENOENT:
      case ENOTDIR:
      case ESTALE:
      case ENODEV:
      case ETIMEDOUT:
        break;
      default:
        ChildFail(p, kExec);
    }
  }
  errno = eacces ? EACCES : ENOENT;
  ChildFail(p, kExec);
}

Result<std::pair<UniqueFd, UniqueFd>> Pipe(int flags) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | flags) < 0) return FailErrno("pipe2");
  return std::pair{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

Status SetNonBlocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return FailErrno("fcntl O_NONBLOCK");
  return {};
}

// If the agent was started with some of fds 0-2 closed, a new fd can land
// there, and dup2 onto the child's stdio would then clobber one stream with
// another. Moving such fds above 2 keeps the child's dup2 sequence correct.
Result<UniqueFd> AboveStdio(UniqueFd fd) {
  if (fd.get() > 2) return fd;
  int moved = fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return FailErrno("fcntl F_DUPFD_CLOEXEC");
  return UniqueFd(moved);
}

std::string_view PathOf(const std::vector<std::string>& env) {
  for (const std::string& e : env) {
    if (e.starts_with("PATH=")) return std::string_view(e).substr(5);
  }
  return kDefaultPath;
}

// The files execvpe() would try for `cmd`, in order.
std::vector<std::string> Candidates(const std::string& cmd, std::string_view path) {
  if (cmd.find('/') != std::string::npos) return {cmd};
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t end = path.find(':', start);
    std::string_view dir = path.substr(start, end == std::string_view::npos ? end : end - start);
    // An empty PATH element means the current directory.
    out.push_back(dir.empty() ? cmd : std::string(dir) + "/" + cmd);
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

bool HasVar(const std::vector<std::string>& env, std::string_view name) {
  for (const std::string& e : env) {
    if (e.size() > name.size() && e.starts_with(name) && e[name.size()] == '=') return true;
  }
  return false;
}

std::vector<const char*> CStrings(const std::vector<std::string>& v) {
  std::vector<const char*> out;
  out.reserve(v.size() + 1);
  for (const std::string& s : v) out.push_back(s.c_str());
  out.push_back(nullptr);
  return out;
}

// Child stdio on pipes (or /dev/null for channel 0); parent ends go to
// `started`.
Status SetUpPipes(const SpawnRequest& req, StartedChild& started,
                  std::array<UniqueFd, 3>& child_ends) {
  std::array<UniqueFd*, 3> parent_ends = {&started.stdin_w, &started.stdout_r, &started.stderr_r};
  std::array<uint32_t, 3> channels = {req.stdin_channel, req.stdout_channel, req.stderr_channel};
  for (int i = 0; i < 3; ++i) {
    if (channels[i] == 0) {
      int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
      if (fd < 0) return FailErrno("open /dev/null");
      child_ends[i].Reset(fd);
      continue;
    }
    auto p = Pipe(0);
    if (!p) return std::unexpected(p.error());
    // stdin: the child reads; stdout/stderr: the child writes.
    UniqueFd& parent = i == 0 ? p->second : p->first;
    UniqueFd& child = i == 0 ? p->first : p->second;
    // Only the agent's end is non-blocking: the two ends of a pipe are
    // separate open file descriptions, so the child gets a normal pipe.
    SBX_TRY(SetNonBlocking(parent.get()));
    *parent_ends[i] = std::move(parent);
    child_ends[i] = std::move(child);
  }
  return {};
}

Result<UniqueFd> Dup(int fd) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return FailErrno("pty: fcntl F_DUPFD_CLOEXEC");
  return UniqueFd(copy);
}

// Child stdio on the slave of a new pty; the master (and its dups for the
// channels) go to `started`.
Status SetUpPty(const SpawnRequest& req, StartedChild& started,
                std::array<UniqueFd, 3>& child_ends) {
  auto pty = OpenPty(req.pty->rows, req.pty->cols);
  if (!pty) return std::unexpected(pty.error());
  // The terminal belongs to the user who runs on it (login(1) does the
  // same), so the child may fchmod it, and `mesg`/`write` behave. Not root:
  // the agent's own id is the only one the child can have anyway.
  if (geteuid() == 0 && fchown(pty->slave.get(), req.uid, req.gid) != 0) {
    return FailErrno("pty: chown slave");
  }
  if (req.stdin_channel != 0) {
    auto in = Dup(pty->master.get());
    if (!in) return std::unexpected(in.error());
    started.stdin_w = std::move(*in);
  } else {
    // No input ever: type EOF, as /dev/null would give it. The new
    // terminal is canonical with an empty line, so this one byte is EOF.
    char eof = EofChar(pty->master.get());
    if (::write(pty->master.get(), &eof, 1) != 1) return FailErrno("pty: write EOF");
  }
  auto out = Dup(pty->master.get());
  if (!out) return std::unexpected(out.error());
  started.stdout_r = std::move(*out);
  child_ends[0] = std::move(pty->slave);
  for (int i = 1; i < 3; ++i) {
    auto slave = Dup(child_ends[0].get());
    if (!slave) return std::unexpected(slave.error());
    child_ends[i] = std::move(*slave);
  }
  started.pty_master = std::move(pty->master);
  return {};
}

}  // namespace

Result<StartedChild> StartChild(const SpawnRequest& req) {
  StartedChild started;
  std::array<UniqueFd, 3> child_ends;  // closed in the parent when we return
  if (req.pty) {
    SBX_TRY(SetUpPty(req, started, child_ends));
  } else {
    SBX_TRY(SetUpPipes(req, started, child_ends));
  }
  for (UniqueFd& end : child_ends) {
    auto moved = AboveStdio(std::move(end));
    if (!moved) return std::unexpected(moved.error());
    end = std::move(*moved);
  }

  auto status = Pipe(O_NONBLOCK);
  if (!status) return std::unexpected(status.error());
  auto status_w = AboveStdio(std::move(status->second));
  if (!status_w) return std::unexpected(status_w.error());

  std::vector<const char*> argv = CStrings(req.argv);
  std::vector<std::string> env_with_term;
  const std::vector<std::string>* env = &req.env;
  if (req.pty && !HasVar(req.env, "TERM")) {
    env_with_term = req.env;
    env_with_term.push_back("TERM=" + req.pty->term);
    env = &env_with_term;
  }
  std::vector<const char*> envp = CStrings(*env);
  std::vector<std::string> candidates = Candidates(req.argv[0], PathOf(req.env));
  std::vector<const char*> candidate_ptrs = CStrings(candidates);

  ChildPlan plan;
  for (int i = 0; i < 3; ++i) plan.stdio[i] = child_ends[i].get();
  plan.ctty = req.pty.has_value();
  plan.status_w = status_w->get();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.candidates = candidate_ptrs.data();
  plan.cwd = req.cwd.c_str();
  plan.set_ids = geteuid() == 0;
  plan.uid = req.uid;
  plan.gid = req.gid;
  plan.cur_uid = getuid();
  plan.cur_gid = getgid();
  plan.set_nofile = g_child_nofile_set;
  plan.nofile = g_child_nofile;

  pid_t pid = fork();
  if (pid < 0) return FailErrno("fork");
  if (pid == 0) RunChild(plan);

  started.pid = pid;
  started.exec.status = std::move(status->first);
  started.exec.argv0 = req.argv[0];
  started.exec.cwd = req.cwd;
  started.exec.uid = req.uid;
  started.exec.gid = req.gid;
  return started;
}

std::optional<Status> PollExec(const PendingExec& exec) {
  StatusMsg msg;
  ssize_t n = ::read(exec.status.get(), &msg, sizeof msg);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return std::nullopt;
  if (n == 0) return Status{};  // write end closed by a successful exec
  if (n < 0) return Status(FailErrno("spawn: reading child status"));
  if (n != sizeof msg) return Status(FailMsg("spawn: truncated child status"));
  std::string what;
  switch (msg.step) {
    case kSetsid: what = "setsid"; break;
    case kDup: what = "dup2 stdio"; break;
    case kSetgroups: what = "setgroups"; break;
    case kSetgid: what = "setgid " + std::to_string(exec.gid); break;
    case kSetuid: what = "setuid " + std::to_string(exec.uid); break;
    case kChdir: what = "cwd '" + exec.cwd + "'"; break;
    case kExec: what = "spawn '" + exec.argv0 + "'"; break;
    case kCtty: what = "pty: TIOCSCTTY"; break;
    default: what = "spawn"; break;
  }
  return Status(FailErrno(std::move(what), msg.err));
}

void SetChildFileLimit(const struct rlimit& limit) {
  g_child_nofile = limit;
  g_child_nofile_set = true;
}

}  // namespace sandboxd::agent

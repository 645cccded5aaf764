// Starting one child process for a `spawn` request.
//
// StartChild() forks and returns at once; it never waits for the child. The
// child reports a failed setup step (chdir, setuid, exec, ...) as errno plus
// step over a CLOEXEC status pipe, so the parent learns the outcome without
// blocking: EOF on the pipe means exec succeeded, 8 bytes mean it failed (and
// the child then _exits 127). PollExec() reads that verdict.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <optional>
#include <string>

#include "agent/request.h"
#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::agent {

// What the parent keeps until the child's exec outcome is known.
struct PendingExec {
  UniqueFd status;  // read end of the status pipe, non-blocking
  std::string argv0;
  std::string cwd;
  uid_t uid = 0;
  gid_t gid = 0;
};

struct StartedChild {
  pid_t pid = -1;  // also the child's pgid and sid
  PendingExec exec;
  // Parent ends of the stdio pipes, non-blocking and CLOEXEC; invalid for a
  // stream that was given channel 0 (/dev/null).
  UniqueFd stdin_w;
  UniqueFd stdout_r;
  UniqueFd stderr_r;
};

// Forks a child that sets itself up as described in docs/agent-link.md
// (own session, default signals, uid/gid with no supplementary groups, cwd,
// PATH lookup on req.env) and execs argv. Errors here are the parent's own
// (pipe, fork, /dev/null); the child's are reported through PollExec().
Result<StartedChild> StartChild(const SpawnRequest& req);

// The RLIMIT_NOFILE that children get. The agent raises its own soft limit
// (1024 open file handles must fit besides its other fds) but gives
// children the limit it was started with, as select()-based programs
// expect. Call once at startup, before the first StartChild.
void SetChildFileLimit(const struct rlimit& limit);

// nullopt while the child has neither exec'd nor failed; otherwise success,
// or the child's error (errno in code, message like
// "spawn 'foo': No such file or directory" or "cwd '/nope': ...").
std::optional<Status> PollExec(const PendingExec& exec);

}  // namespace sandboxd::agent

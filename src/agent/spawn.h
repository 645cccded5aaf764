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
  // stream that was given channel 0 (/dev/null). With a pty, stdin_w and
  // stdout_r are each a dup of the master (one open file, so one epoll
  // registration per use), and stderr_r is invalid.
  UniqueFd stdin_w;
  UniqueFd stdout_r;
  UniqueFd stderr_r;
  // With a pty: the master itself. The terminal hangs up only once this and
  // both dups are closed.
  UniqueFd pty_master;
};

// Forks a child that sets itself up as described in docs/agent-link.md
// (own session, default signals, uid/gid with no supplementary groups, cwd,
// PATH lookup on req.env) and execs argv. With req.pty the child's stdio is
// the slave of a new pty, which is also its controlling terminal and owned
// by req.uid/req.gid; TERM is added to its env unless req.env has one; with
// no stdin channel, the terminal's EOF character is typed at once (the
// analogue of /dev/null). Errors here are the parent's own (pipe, fork,
// /dev/null, the pty); the child's are reported through PollExec().
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

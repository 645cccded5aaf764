// exposeHttp({pid}): which TCP port a process inside a sandbox listens on.
//
// Read from the host, never through the agent: the process tree and socket
// inodes from the sandbox's own procfs (/proc/<init>/root/proc, opened with
// RESOLVE_IN_ROOT and checked to be a procfs, so a hostile sandbox cannot
// point us elsewhere), and the listening sockets from the host's view of the
// sandbox's network namespace (/proc/<init>/net/tcp{,6}). Blocking (a few
// hundred µs for a small sandbox); thread-safe.
#pragma once

#include <cstdint>

#include "common/error.h"

namespace sandboxd::ingress {

// `proc_fd`: /proc/<init pid> of the sandbox (SandboxHandles::proc). `pid`
// as the sandbox sees it. The lowest port on which `pid`, or one of its
// descendants (a shell that started the server), has a listening TCP
// socket. Error code ESRCH: no such process; ENOENT: it listens on nothing.
Result<uint16_t> ListeningPort(int proc_fd, int64_t pid);

// Whether `pid` names a process of the sandbox.
bool ProcessExists(int proc_fd, int64_t pid);

}  // namespace sandboxd::ingress

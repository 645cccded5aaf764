// Doing things inside a sandbox's network namespace from the daemon.
//
// setns(CLONE_NEWNET) changes only the calling thread's namespace, and a
// thread of the daemon must never stay in a sandbox's namespace by accident,
// so the work runs on a short-lived thread that enters the namespace and then
// exits. Sockets keep the namespace they were created in for their whole life,
// which is what SocketInNetns relies on.
#pragma once

#include <functional>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::net {

// Runs `fn` on a new thread that has entered the network namespace `netns_fd`
// (an fd of /proc/<pid>/ns/net or similar; borrowed) and returns what `fn`
// returned. Blocks until the thread has finished. `fn` must not create
// threads that outlive it (they would inherit the namespace) or rely on
// thread-locals of the caller. Costs one thread creation (tens of µs).
Status RunInNetns(int netns_fd, const std::function<Status()>& fn);

// A socket (SOCK_CLOEXEC added) created inside `netns_fd`; usable from any
// thread afterwards. Connections made with it come "from the sandbox"; the
// daemon also uses it to reach services listening inside the sandbox.
Result<UniqueFd> SocketInNetns(int netns_fd, int domain, int type, int protocol = 0);

// An fd of the calling thread's own network namespace (O_CLOEXEC).
Result<UniqueFd> OpenCurrentNetns();

}  // namespace sandboxd::net

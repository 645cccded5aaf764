#include "daemon/net/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>

#include <thread>

namespace sandboxd::net {

Status RunInNetns(int netns_fd, const std::function<Status()>& fn) {
  Status result;
  // A fresh thread rather than setns() on the caller and back: if switching
  // back failed, the caller's thread would be stuck in the sandbox's
  // namespace. The thread's namespace dies with the thread.
  std::thread worker([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      result = FailErrno("setns(CLONE_NEWNET)");
      return;
    }
    result = fn();
  });
  worker.join();
  return result;
}

Result<UniqueFd> SocketInNetns(int netns_fd, int domain, int type, int protocol) {
  UniqueFd fd;
  SBX_TRY(RunInNetns(netns_fd, [&]() -> Status {
    fd.Reset(::socket(domain, type | SOCK_CLOEXEC, protocol));
    if (!fd) return FailErrno("socket in sandbox netns");
    return {};
  }));
  return fd;
}

Result<UniqueFd> OpenCurrentNetns() {
  // thread-self, not self: /proc/self is the thread-group leader, whose
  // namespace may differ from the calling thread's.
  UniqueFd fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!fd) return FailErrno("open /proc/thread-self/ns/net");
  return fd;
}

}  // namespace sandboxd::net

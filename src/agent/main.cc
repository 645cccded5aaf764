// sandbox-agent entry point: parses the link location and runs the Agent.
//
//   sandbox-agent --link-fd N        (namespaces backend: a socketpair end)
//   sandbox-agent --link-path PATH   (a character device, e.g. a virtio-serial port)
//   sandbox-agent --vm [...]         (the microVM's /init: boots the guest, then
//                                     serves the link on its virtio-serial port;
//                                     implied as PID 1 without a link; vm_init.h)

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>

#include "agent/agent.h"
#include "agent/log.h"
#include "agent/vm_init.h"

namespace {

using sandboxd::UniqueFd;
using sandboxd::agent::Log;

// PID 1 may start with fds 0-2 closed. Keep those slots occupied so that no
// later fd (a pipe, the epoll fd) lands there and receives our log lines.
void EnsureStdio() {
  for (int fd = 0; fd < 3; ++fd) {
    if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    int got = open("/dev/null", O_RDWR);
    // No /dev yet: a directory fd holds the slot; writes to it just fail.
    if (got < 0) got = open("/", O_RDONLY | O_DIRECTORY);
    if (got >= 0 && got != fd) close(got);  // lower slots were open; cannot happen
  }
}

int Usage() {
  Log("usage: sandbox-agent (--link-fd N | --link-path PATH)");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (sandboxd::agent::vm::WantsVmMode(argc, argv, getpid())) sandboxd::agent::vm::Main(argc, argv);
  int link_fd = -1;
  const char* link_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    auto take = [&](std::string_view flag) {
      if (arg == flag && i + 1 < argc) {
        value = argv[++i];
        return true;
      }
      if (arg.starts_with(flag) && arg.size() > flag.size() && arg[flag.size()] == '=') {
        value = arg.substr(flag.size() + 1);
        return true;
      }
      return false;
    };
    if (take("--link-fd")) {
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), link_fd);
      if (ec != std::errc() || end != value.data() + value.size() || link_fd < 0) return Usage();
    } else if (take("--link-path")) {
      link_path = value.data();  // argv strings are NUL-terminated
    } else {
      return Usage();
    }
  }
  if ((link_fd >= 0) == (link_path != nullptr)) return Usage();

  EnsureStdio();

  UniqueFd link;
  if (link_path != nullptr) {
    link.Reset(open(link_path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
    if (!link) {
      Log("open %s: %s", link_path, strerror(errno));
      return 1;
    }
  } else {
    if (fcntl(link_fd, F_GETFD) < 0) {
      Log("--link-fd %d: %s", link_fd, strerror(errno));
      return 1;
    }
    link.Reset(link_fd);
  }

  auto agent = sandboxd::agent::Agent::Create(std::move(link));
  if (!agent) {
    Log("%s", agent.error().message.c_str());
    return 1;
  }
  return (*agent)->Run();
}

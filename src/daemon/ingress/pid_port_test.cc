#include "daemon/ingress/pid_port.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fd.h"

namespace sandboxd::ingress {
namespace {

// A listening socket on loopback, port chosen by the kernel.
UniqueFd Listen(int family, uint16_t& port) {
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::listen(fd.get(), 4);
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  } else {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::listen(fd.get(), 4);
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin6_port);
  }
  return fd;
}

// This process plays the sandbox's init: its root's /proc is the host's.
UniqueFd SelfProc() {
  return UniqueFd(::open(("/proc/" + std::to_string(::getpid())).c_str(), O_PATH | O_CLOEXEC));
}

TEST(PidPort, FindsTheListeningPortOfAProcessAndItsChildren) {
  auto proc = SelfProc();
  // A child that listens (the shell-started-a-server case: pid is the parent).
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t child = ::fork();
  if (child == 0) {
    uint16_t port = 0;
    auto l = Listen(AF_INET, port);
    (void)!::write(ready[1], &port, sizeof port);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  uint16_t child_port = 0;
  ASSERT_EQ(::read(ready[0], &child_port, sizeof child_port),
            static_cast<ssize_t>(sizeof child_port));
  ::close(ready[0]);

  auto r = ListeningPort(proc.get(), ::getpid());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, child_port);

  // Our own listener on a lower port would win; an IPv6 one is seen too.
  uint16_t v6 = 0;
  auto l6 = Listen(AF_INET6, v6);
  r = ListeningPort(proc.get(), ::getpid());
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, std::min(v6, child_port));

  r = ListeningPort(proc.get(), child);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, child_port);

  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  r = ListeningPort(proc.get(), child);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ESRCH);
  EXPECT_FALSE(ProcessExists(proc.get(), child));
  EXPECT_TRUE(ProcessExists(proc.get(), ::getpid()));
}

TEST(PidPort, NothingListening) {
  auto proc = SelfProc();
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  auto r = ListeningPort(proc.get(), child);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
}

}  // namespace
}  // namespace sandboxd::ingress

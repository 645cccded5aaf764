#include "daemon/isolation/seccomp_policy.h"

#include <sched.h>
#include <signal.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <functional>

#include <gtest/gtest.h>

namespace sandboxd::isolation {
namespace {

// Runs `body` in a forked child under the filter; returns the wait status.
// The child reports through its exit code.
int RunFiltered(const std::function<int()>& body) {
  auto prog = BuildSandboxSeccompProgram();
  EXPECT_TRUE(prog) << prog.error().message;
  if (!prog) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    sock_fprog f = prog->fprog();
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(100);
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &f, 0, 0) != 0) ::_exit(101);
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

int ErrnoOf(long rc) { return rc == -1 ? errno : 0; }

TEST(SeccompPolicy, DeniedSyscallsReturnEperm) {
  int st = RunFiltered([] {
    if (ErrnoOf(::syscall(SYS_finit_module, -1, "", 0)) != EPERM) return 1;
    if (ErrnoOf(::syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, nullptr)) != EPERM) return 2;
    if (ErrnoOf(::syscall(SYS_unshare, CLONE_NEWUSER)) != EPERM) return 3;
    if (ErrnoOf(::syscall(SYS_keyctl, 0, 0, 0, 0, 0)) != EPERM) return 4;
    if (ErrnoOf(::syscall(SYS_clone3, nullptr, 0)) != ENOSYS) return 5;
    if (ErrnoOf(::syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0)) != EPERM) return 6;
    if (ErrnoOf(::syscall(SYS_personality, 0x0040000 /*READ_IMPLIES_EXEC*/)) != EPERM) return 7;
    if (::syscall(SYS_personality, 0) < 0) return 8;  // the default persona stays allowed
    if (ErrnoOf(::syscall(SYS_io_uring_setup, 1, nullptr)) != EPERM) return 9;
    if (ErrnoOf(::syscall(SYS_bpf, 0, nullptr, 0)) != EPERM) return 10;
    pid_t child = ::fork();  // plain clone still works
    if (child < 0) return 11;
    if (child == 0) ::_exit(0);
    ::waitpid(child, nullptr, 0);
    return 0;
  });
  ASSERT_TRUE(WIFEXITED(st)) << st;
  EXPECT_EQ(WEXITSTATUS(st), 0);
}

TEST(SeccompPolicy, X32AbiKillsProcess) {
  int st = RunFiltered([] {
    ::syscall(0x40000000 | SYS_getpid);
    return 0;
  });
  ASSERT_TRUE(WIFSIGNALED(st)) << "x32 getpid was not killed, status " << st;
  EXPECT_EQ(WTERMSIG(st), SIGSYS);
}

TEST(SeccompPolicy, I386EntryKillsProcess) {
  int st = RunFiltered([] {
    long ret;
    // getpid (20) through the 32-bit int 0x80 entry: AUDIT_ARCH_I386.
    asm volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    return ret > 0 ? 0 : 1;
  });
  ASSERT_TRUE(WIFSIGNALED(st)) << "i386 getpid was not killed, status " << st;
  EXPECT_EQ(WTERMSIG(st), SIGSYS);
}

}  // namespace
}  // namespace sandboxd::isolation

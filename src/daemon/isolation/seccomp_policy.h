// The seccomp filter every sandbox runs under: default allow, EPERM for the
// syscalls a container root must not use (kernel modules, kexec, bpf, mounts,
// namespace creation, keyrings, clock setting, io_uring, ...), ENOSYS for
// clone3 (its flags live in memory seccomp cannot inspect, so libc falls back
// to clone, whose flags it can), and the process is killed for non-native
// architectures and the x32 ABI.
#pragma once

#include <linux/filter.h>

#include <vector>

#include "common/error.h"

namespace sandboxd::isolation {

// A compiled classic-BPF program, ready for prctl(PR_SET_SECCOMP). Built once
// in the daemon (libseccomp allocates) so that the child between clone and
// exec only makes the async-signal-safe prctl call.
struct SeccompProgram {
  std::vector<sock_filter> instructions;

  sock_fprog fprog() const {
    return sock_fprog{static_cast<unsigned short>(instructions.size()),
                      const_cast<sock_filter*>(instructions.data())};
  }
};

Result<SeccompProgram> BuildSandboxSeccompProgram();

}  // namespace sandboxd::isolation

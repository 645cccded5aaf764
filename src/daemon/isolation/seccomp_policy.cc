#include "daemon/isolation/seccomp_policy.h"

#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <unistd.h>

#include <memory>

#include "common/fd.h"

namespace sandboxd::isolation {
namespace {

constexpr const char* kDenied[] = {
    // Kernel code and the running kernel.
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "bpf", "perf_event_open", "lookup_dcookie", "iopl", "ioperm", "vm86", "vm86old",
    "nfsservctl", "acct", "quotactl", "syslog", "swapon", "swapoff", "reboot",
    // Keyrings are not namespaced.
    "keyctl", "add_key", "request_key",
    // Kernel-exploitation staples.
    "userfaultfd", "open_by_handle_at", "name_to_handle_at",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    // Clocks are global.
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    // Mounts and namespaces (both old and new mount APIs).
    "mount", "umount2", "pivot_root", "setns", "unshare",
    "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr",
};

constexpr uint64_t kNamespaceCloneFlags[] = {CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWPID,
                                             CLONE_NEWNET,  CLONE_NEWUTS, CLONE_NEWIPC,
                                             CLONE_NEWCGROUP};

struct CtxDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};

Status Check(int rc, const std::string& what) {
  if (rc < 0) return FailErrno("seccomp: " + what, -rc);
  return {};
}

}  // namespace

Result<SeccompProgram> BuildSandboxSeccompProgram() {
  std::unique_ptr<void, CtxDeleter> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return FailMsg("seccomp_init failed");
  // Foreign-architecture syscalls (e.g. int 0x80 i386 entry) kill the whole
  // process; libseccomp also routes x32 syscall numbers on x86_64 here.
  SBX_TRY(Check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
                "bad-arch action"));

  for (const char* name : kDenied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // unknown to this libseccomp
    int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), nr, 0);
    // Syscalls that do not exist on this architecture (vm86 on x86_64) are
    // rejected with EDOM/EINVAL: nothing to filter.
    if (rc < 0 && rc != -EDOM && rc != -EINVAL) SBX_TRY(Check(rc, name));
  }
  // clone: refuse any namespace flag. One rule per flag: rules are ORed.
  for (uint64_t flag : kNamespaceCloneFlags) {
    SBX_TRY(Check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                   SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)),
                  "clone rule"));
  }
  SBX_TRY(Check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0),
                "clone3 rule"));
  // personality: only PER_LINUX (0). Other personas (READ_IMPLIES_EXEC,
  // ADDR_NO_RANDOMIZE, ...) weaken ASLR/NX. This also refuses the query value
  // 0xffffffff: libseccomp 2.5 cannot express "neither 0 nor 0xffffffff" in
  // one rule, and a persona query is rare and harmless to refuse.
  SBX_TRY(Check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1,
                                 SCMP_A0(SCMP_CMP_GT, PER_LINUX)),
                "personality rule"));

  // libseccomp 2.5 can only export to an fd.
  UniqueFd mem(::memfd_create("seccomp-bpf", MFD_CLOEXEC));
  if (!mem) return FailErrno("memfd_create");
  SBX_TRY(Check(seccomp_export_bpf(ctx.get(), mem.get()), "export"));
  off_t size = ::lseek(mem.get(), 0, SEEK_END);
  if (size <= 0 || size % sizeof(sock_filter) != 0) return FailMsg("seccomp: bad BPF size");
  SeccompProgram prog;
  prog.instructions.resize(static_cast<size_t>(size) / sizeof(sock_filter));
  if (::pread(mem.get(), prog.instructions.data(), static_cast<size_t>(size), 0) != size) {
    return FailErrno("seccomp: reading BPF");
  }
  if (prog.instructions.size() > BPF_MAXINSNS) return FailMsg("seccomp: program too long");
  return prog;
}

}  // namespace sandboxd::isolation

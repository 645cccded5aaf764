// The microVM backend: every sandbox is one QEMU `-M microvm` with the
// sandbox-agent as the guest's init (docs/microvm.md). See
// microvm_backend.cc for the start sequence.
//
// Per sandbox, on the host:
//   - a state directory <state_dir>/<id>/ (mode 0700) with the scratch disk
//     (scratch.img: a sparse 10 GB ext4, a copy of a template) and qemu.log
//     (QEMU's stderr; with debug_console also the guest's console);
//   - one QEMU process in a fresh network namespace (InitPid() is QEMU's pid,
//     so the daemon attaches the sandbox's veth there exactly as for the
//     namespaces backend); with spec.network the namespace also holds the
//     guest's NIC, the tap GuestTap() (made by QEMU's child before exec and
//     handed to QEMU as an fd, so it ends with QEMU), which the daemon joins to
//     the veth (net::VethConfig::guest_tap); running as a uid of its own
//     (uid_base + slot, no capabilities, no_new_privs) under QEMU's own
//     seccomp filter (-sandbox on), with every file it needs passed as an
//     open fd;
//   - a cgroup with the guest's RAM plus qemu_overhead_mb as memory limit,
//     the CPU quota and a pids limit;
//   - the agent link: one end of a socketpair is QEMU's virtio-serial
//     chardev, the other is TakeLinkFd().
// Destroy() SIGKILLs QEMU (the guest's disk is ephemeral, nothing to flush),
// removes the cgroup and the state directory. A QEMU that dies on its own
// closes the link, which the daemon treats as the sandbox failing.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/error.h"
#include "daemon/isolation/backend.h"

namespace sandboxd::isolation {

struct MicroVmConfig {
  // QEMU: an absolute path, or a name looked up on PATH.
  std::string qemu = "qemu-system-x86_64";
  // scripts/vm/build-all output: the guest kernel (PVH vmlinux or bzImage),
  // the initramfs with the agent as /init, and the read-only root image.
  // Must be readable by every user (QEMU opens the kernel and initramfs
  // itself, through /proc/self/fd, as its unprivileged uid).
  std::string kernel;
  std::string initrd;
  std::string rootfs_image;
  std::string rootfs_format = "erofs";  // erofs | ext4
  // Per-sandbox directories: <state_dir>/<id>/.
  std::string state_dir;
  // The scratch disk template (made at start when missing) and its size.
  std::string scratch_template;
  uint64_t scratch_bytes = 10ULL << 30;
  // false: TCG (software emulation). true: KVM; use only after ProbeKvm().
  bool kvm = false;
  // TCG: the host's TSC rate in kHz for the guest; 0 = measure at start.
  uint64_t tsc_khz = 0;
  // Memory limit of a sandbox's cgroup = guest RAM + this (QEMU itself, its
  // TCG translation cache of tcg_tb_mb, page tables, I/O buffers).
  uint32_t qemu_overhead_mb = 384;
  uint32_t tcg_tb_mb = 128;
  // QEMU's threads (vCPUs, RCU, block I/O workers) count as tasks.
  uint32_t pids_max = 512;
  // QEMU runs as uid/gid uid_base + slot, a slot per live sandbox.
  uint32_t uid_base = 1000000000;
  uint32_t uid_count = 65536;
  std::string cgroup_parent = "sandboxd";
  std::string cgroup_root = "/sys/fs/cgroup";
  // How long Start() waits for the guest's agent to announce itself.
  std::chrono::milliseconds boot_timeout{60000};
  // The guest's kernel console (and the agent's boot log) to qemu.log.
  bool debug_console = false;
  // Snapshot restore (docs/microvm.md, "Snapshot restore"): sandboxes of
  // snapshot_memory_mb and snapshot_cpus start from a snapshot of a VM
  // stopped at the boot handshake (made once per set of inputs, kept in
  // snapshot_dir) instead of booting; other sizes boot.
  bool snapshot = false;
  std::string snapshot_dir;
  uint32_t snapshot_memory_mb = 1280;
  uint32_t snapshot_cpus = 2;
  // Whether the snapshot's VM has a NIC (SandboxSpec::network: the daemon
  // runs with --net on); only sandboxes that match restore from it.
  bool snapshot_network = true;
  // Start-up work (the TSC rate, preparing the snapshot) in MakeMicroVmBackend
  // and Warm(); false: on the first Start() (a backend held for the odd
  // create that asks for it, not the default).
  bool eager = true;
};

// Checks the configuration and the files, detects cgroups, measures the TSC
// (TCG; when eager) and makes the scratch template. Requires root.
Result<std::unique_ptr<Backend>> MakeMicroVmBackend(const MicroVmConfig& config);

// Boots one probe VM of `config` with KVM and waits for its agent's ready
// event (bounded by `timeout`), then tears it down. Success means KVM really
// works here: a /dev/kvm that exists is not proof (docs/microvm.md has a host
// where QEMU aborts, or the guest never reaches init). The error says why not.
Status ProbeKvm(MicroVmConfig config, std::chrono::milliseconds timeout);

}  // namespace sandboxd::isolation

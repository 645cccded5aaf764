// The QEMU and kernel command lines of one microVM sandbox (docs/microvm.md,
// "QEMU command line" and "Kernel command line"). Pure functions of a plain
// struct, so the exact lines are unit-tested.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sandboxd::isolation::microvm {

// The fd numbers QEMU inherits. The backend arranges them before exec; QEMU
// never opens a path of the daemon's state directory (which its uid could
// not reach): files come in as fds, named as /proc/self/fd/N (kernel,
// initramfs: QEMU opens those by name) or as fd sets (/dev/fdset/N, disks).
inline constexpr int kFdLink = 3;     // connected AF_UNIX stream socket, the agent link
inline constexpr int kFdKernel = 4;   // O_RDONLY
inline constexpr int kFdInitrd = 5;   // O_RDONLY
inline constexpr int kFdRoot = 6;     // O_RDONLY, the shared root image
inline constexpr int kFdScratch = 7;  // O_RDWR, this sandbox's scratch image
// The same file O_RDONLY: QEMU opens the drive read-only first and reopens it
// read-write, and an fd set only hands out fds of the requested access mode.
inline constexpr int kFdScratchRo = 8;
// Only with snapshots (QemuLaunch::mode): the QMP socket of a VM being
// snapshotted (kPrepare), or the snapshot's saved state, O_RDONLY (kRestore).
inline constexpr int kFdExtra = 9;
// The guest's NIC: a tap in QEMU's network namespace (kGuestTap), attached by
// the child before exec; /dev/null when the sandbox has no network.
inline constexpr int kFdTap = 10;
inline constexpr int kQemuFdCount = 11;

// What the guest's init is told (vm_init.h); the serials name the disks.
inline constexpr const char* kPortName = "sandbox.agent";
inline constexpr const char* kRootSerial = "root";
inline constexpr const char* kScratchSerial = "scratch";
// The tap in QEMU's netns (each netns has its own names) and the guest NIC's
// MAC: the same for every sandbox, since each guest is alone on its link
// (locally administered, so it is nobody's real address).
inline constexpr const char* kGuestTap = "tap0";
inline constexpr const char* kGuestMac = "02:5b:00:00:00:02";

// kBoot: a cold boot. kPrepare: a cold boot with a QMP monitor on kFdExtra,
// to be snapshotted (migrated to a file) at the boot handshake. kRestore:
// `-incoming fd:kFdExtra`, the VM continues from such a snapshot. The three
// are otherwise the same machine, device for device, as migration requires.
enum class LaunchMode { kBoot, kPrepare, kRestore };

struct QemuLaunch {
  std::string qemu_binary;  // absolute path
  bool kvm = false;         // -accel kvm -cpu host; else TCG
  uint64_t tsc_khz = 0;     // TCG: the host's TSC rate, passed to the guest
  uint32_t memory_mb = 1280;
  uint32_t cpus = 2;
  uint32_t tcg_tb_mb = 128;           // TCG translation cache (bounds QEMU's own memory)
  std::string root_fstype = "erofs";  // erofs | ext4
  bool debug_console = false;         // guest console on ttyS0 -> QEMU's stderr
  LaunchMode mode = LaunchMode::kBoot;
  bool network = false;                // a virtio-net NIC on the tap at kFdTap
};

// The guest kernel's command line: quiet, no console, no UART (every byte
// through the emulated UART costs under TCG), reboot/panic end QEMU, the TSC
// rate under TCG (the guest cannot calibrate it on a loaded host), no boot
// self-tests, and after "--" the arguments of /init. Nothing per sandbox
// (hostname, pids limit): those come in the boot handshake
// (common/vm_boot.h), so one snapshot serves every sandbox.
std::string KernelCmdline(const QemuLaunch& l);

// argv of QEMU (argv[0] = qemu_binary), with the fds above.
std::vector<std::string> QemuArgv(const QemuLaunch& l);

}  // namespace sandboxd::isolation::microvm

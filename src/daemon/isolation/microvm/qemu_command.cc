#include "daemon/isolation/microvm/qemu_command.h"

namespace sandboxd::isolation::microvm {
namespace {

std::string FdPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

}  // namespace

std::string KernelCmdline(const QemuLaunch& l) {
  std::string c = "reboot=t panic=-1";
  if (l.debug_console) {
    c += " console=ttyS0";
  } else {
    c += " quiet 8250.nr_uarts=0";
  }
  if (!l.kvm && l.tsc_khz > 0) {
    // Under KVM, kvmclock does this job: leave both out.
    c += " tsc=reliable tsc_early_khz=" + std::to_string(l.tsc_khz);
  }
  c += " cryptomgr.notests pci=off i8042.noaux i8042.nokbd i8042.nopnp";
  c += " -- --vm --port=";
  c += kPortName;
  c += " --root-serial=";
  c += kRootSerial;
  c += " --root-fs=" + l.root_fstype;
  c += " --scratch-serial=";
  c += kScratchSerial;
  return c;
}

std::vector<std::string> QemuArgv(const QemuLaunch& l) {
  std::string machine = "microvm,x-option-roms=off,auto-kernel-cmdline=off";
  if (!l.debug_console) machine += ",isa-serial=off";
  std::vector<std::string> a = {
      l.qemu_binary,
      "-M",
      machine,
      "-accel",
      l.kvm ? "kvm" : "tcg,tb-size=" + std::to_string(l.tcg_tb_mb),
      "-cpu",
      l.kvm ? "host" : "qemu64",
      "-m",
      std::to_string(l.memory_mb),
      "-smp",
      std::to_string(l.cpus),
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-no-reboot",
      // QEMU's own seccomp filter: no exec, no privilege changes, no
      // obsolete syscalls, no scheduler/affinity changes.
      "-sandbox",
      "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
      "-kernel",
      FdPath(kFdKernel),
      "-initrd",
      FdPath(kFdInitrd),
      "-append",
      KernelCmdline(l),
      "-add-fd",
      "fd=" + std::to_string(kFdRoot) + ",set=1",
      "-drive",
      "id=root,file=/dev/fdset/1,format=raw,if=none,readonly=on",
      "-device",
      std::string("virtio-blk-device,drive=root,serial=") + kRootSerial,
      "-add-fd",
      "fd=" + std::to_string(kFdScratch) + ",set=2",
      "-add-fd",
      "fd=" + std::to_string(kFdScratchRo) + ",set=2",
      // The scratch disk dies with the sandbox: flushes are pointless, and
      // the guest's discards punch holes in the sparse file.
      "-drive",
      "id=scratch,file=/dev/fdset/2,format=raw,if=none,cache=unsafe,discard=unmap",
      "-device",
      std::string("virtio-blk-device,drive=scratch,serial=") + kScratchSerial,
      // Port 0 is reserved for a console; one more for the agent.
      "-device",
      "virtio-serial-device,max_ports=2",
      "-chardev",
      "socket,id=agent,fd=" + std::to_string(kFdLink),
      "-device",
      std::string("virtserialport,chardev=agent,name=") + kPortName,
      // Entropy for the guest's CRNG at boot (docs/microvm.md), rate-limited.
      "-object",
      "rng-builtin,id=rng",
      "-device",
      "virtio-rng-device,rng=rng,max-bytes=4096,period=1000",
  };
  if (l.network) {
    // The tap comes as an fd: QEMU has no privilege to make or open one.
    // No vhost (an unprivileged QEMU cannot open /dev/vhost-net).
    a.insert(a.end(), {"-netdev", "tap,id=net0,fd=" + std::to_string(kFdTap), "-device",
                       std::string("virtio-net-device,netdev=net0,mac=") + kGuestMac});
  }
  if (l.debug_console) {
    // To QEMU's stdout, which is the sandbox's qemu.log (QEMU could not
    // open that file by name: it belongs to root).
    a.insert(a.end(), {"-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"});
  }
  switch (l.mode) {
    case LaunchMode::kBoot:
      break;
    case LaunchMode::kPrepare:
      // A monitor only the backend talks to, for stop + migrate. The VM is
      // stopped when saved; without the run state in the stream, every
      // restored VM starts running once loaded (else it would stay paused).
      a.insert(a.end(),
               {"-chardev", "socket,id=qmp,fd=" + std::to_string(kFdExtra), "-mon",
                "chardev=qmp,mode=control", "-global", "migration.store-global-state=off"});
      break;
    case LaunchMode::kRestore:
      // A number here is an inherited fd (no monitor exists yet to name one).
      a.insert(a.end(), {"-incoming", "fd:" + std::to_string(kFdExtra)});
      break;
  }
  return a;
}

}  // namespace sandboxd::isolation::microvm

// The QEMU and kernel command lines: what docs/microvm.md specifies, and the
// fd contract with the backend.
#include "daemon/isolation/microvm/qemu_command.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace sandboxd::isolation::microvm {
namespace {

// The value after `flag` (the first occurrence from `from`), or "".
std::string After(const std::vector<std::string>& a, const std::string& flag, size_t nth = 0) {
  for (size_t i = 0; i + 1 < a.size(); ++i) {
    if (a[i] == flag && nth-- == 0) return a[i + 1];
  }
  return "";
}

bool Has(const std::vector<std::string>& a, const std::string& flag, const std::string& value) {
  for (size_t i = 0; i + 1 < a.size(); ++i) {
    if (a[i] == flag && a[i + 1] == value) return true;
  }
  return false;
}

QemuLaunch Tcg() {
  QemuLaunch l;
  l.qemu_binary = "/usr/bin/qemu-system-x86_64";
  l.tsc_khz = 2400000;
  l.memory_mb = 1280;
  l.cpus = 2;
  return l;
}

TEST(QemuCommand, TcgCommandLine) {
  auto a = QemuArgv(Tcg());
  EXPECT_EQ(a[0], "/usr/bin/qemu-system-x86_64");
  EXPECT_EQ(After(a, "-M"), "microvm,x-option-roms=off,auto-kernel-cmdline=off,isa-serial=off");
  EXPECT_EQ(After(a, "-accel"), "tcg,tb-size=128");
  EXPECT_EQ(After(a, "-cpu"), "qemu64");
  EXPECT_EQ(After(a, "-m"), "1280");
  EXPECT_EQ(After(a, "-smp"), "2");
  EXPECT_EQ(After(a, "-sandbox"),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
  for (const char* f : {"-nodefaults", "-no-user-config", "-no-reboot"}) {
    EXPECT_NE(std::find(a.begin(), a.end(), f), a.end()) << f;
  }
  // Files come in as fds.
  EXPECT_EQ(After(a, "-kernel"), "/proc/self/fd/4");
  EXPECT_EQ(After(a, "-initrd"), "/proc/self/fd/5");
  EXPECT_TRUE(Has(a, "-add-fd", "fd=6,set=1"));
  EXPECT_TRUE(Has(a, "-add-fd", "fd=7,set=2"));
  EXPECT_TRUE(Has(a, "-add-fd", "fd=8,set=2"));
  EXPECT_TRUE(Has(a, "-drive", "id=root,file=/dev/fdset/1,format=raw,if=none,readonly=on"));
  EXPECT_TRUE(Has(a, "-drive",
                  "id=scratch,file=/dev/fdset/2,format=raw,if=none,cache=unsafe,discard=unmap"));
  EXPECT_TRUE(Has(a, "-device", "virtio-blk-device,drive=root,serial=root"));
  EXPECT_TRUE(Has(a, "-device", "virtio-blk-device,drive=scratch,serial=scratch"));
  EXPECT_TRUE(Has(a, "-chardev", "socket,id=agent,fd=3"));
  EXPECT_TRUE(Has(a, "-device", "virtserialport,chardev=agent,name=sandbox.agent"));
  EXPECT_TRUE(Has(a, "-device", "virtio-rng-device,rng=rng,max-bytes=4096,period=1000"));
  EXPECT_EQ(After(a, "-serial"), "");  // no console at all
  EXPECT_EQ(After(a, "-netdev"), "");  // no NIC unless the sandbox has a network
}

TEST(QemuCommand, Network) {
  auto l = Tcg();
  l.network = true;
  auto a = QemuArgv(l);
  EXPECT_EQ(After(a, "-netdev"), "tap,id=net0,fd=10");
  EXPECT_TRUE(Has(a, "-device", "virtio-net-device,netdev=net0,mac=02:5b:00:00:00:02"));
  // The guest learns its address over the agent link, not the command line.
  EXPECT_EQ(KernelCmdline(l), KernelCmdline(Tcg()));
  EXPECT_EQ(kFdTap, kQemuFdCount - 1);
}

TEST(QemuCommand, KernelCmdline) {
  auto c = KernelCmdline(Tcg());
  EXPECT_EQ(c,
            "reboot=t panic=-1 quiet 8250.nr_uarts=0 tsc=reliable tsc_early_khz=2400000 "
            "cryptomgr.notests pci=off i8042.noaux i8042.nokbd i8042.nopnp -- --vm "
            "--port=sandbox.agent --root-serial=root --root-fs=erofs --scratch-serial=scratch");
  EXPECT_EQ(After(QemuArgv(Tcg()), "-append"), c);
  EXPECT_LT(c.size(), 1024u);  // the kernel allows 2048 bytes
}

// A snapshot is taken of a kPrepare VM and restored into kRestore VMs: the
// machine must be the same apart from the monitor and -incoming.
TEST(QemuCommand, SnapshotModes) {
  auto boot = QemuArgv(Tcg());
  EXPECT_EQ(std::find(boot.begin(), boot.end(), "-incoming"), boot.end());
  EXPECT_EQ(std::find(boot.begin(), boot.end(), "-mon"), boot.end());

  auto l = Tcg();
  l.mode = LaunchMode::kPrepare;
  auto prepare = QemuArgv(l);
  EXPECT_TRUE(Has(prepare, "-chardev", "socket,id=qmp,fd=9"));
  EXPECT_TRUE(Has(prepare, "-mon", "chardev=qmp,mode=control"));
  // Saved while stopped, restored running: no run state in the stream.
  EXPECT_TRUE(Has(prepare, "-global", "migration.store-global-state=off"));
  EXPECT_EQ(
      std::vector<std::string>(prepare.begin(), prepare.begin() + static_cast<long>(boot.size())),
      boot);
  EXPECT_EQ(prepare.size(), boot.size() + 6);

  l.mode = LaunchMode::kRestore;
  auto restore = QemuArgv(l);
  EXPECT_EQ(After(restore, "-incoming"), "fd:9");
  EXPECT_EQ(
      std::vector<std::string>(restore.begin(), restore.begin() + static_cast<long>(boot.size())),
      boot);
  EXPECT_EQ(restore.size(), boot.size() + 2);
}

TEST(QemuCommand, Kvm) {
  auto l = Tcg();
  l.kvm = true;
  auto a = QemuArgv(l);
  EXPECT_EQ(After(a, "-accel"), "kvm");
  EXPECT_EQ(After(a, "-cpu"), "host");
  // kvmclock replaces the TSC hints.
  EXPECT_EQ(KernelCmdline(l).find("tsc"), std::string::npos);
}

TEST(QemuCommand, DebugConsole) {
  auto l = Tcg();
  l.debug_console = true;
  auto a = QemuArgv(l);
  EXPECT_EQ(After(a, "-M"), "microvm,x-option-roms=off,auto-kernel-cmdline=off");
  EXPECT_TRUE(Has(a, "-chardev", "stdio,id=con,signal=off"));
  EXPECT_EQ(After(a, "-serial"), "chardev:con");
  auto c = KernelCmdline(l);
  EXPECT_NE(c.find(" console=ttyS0 "), std::string::npos);
  EXPECT_EQ(c.find("quiet"), std::string::npos);
}

}  // namespace
}  // namespace sandboxd::isolation::microvm

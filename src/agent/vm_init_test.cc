// Unit tests of the VM-init pieces that run on any host: argument parsing,
// the module manifest, the sysfs lookups (on fake trees) and the initramfs
// removal (on a temporary directory). The boot itself is tested in a real VM
// (src/daemon/isolation/microvm/microvm_backend_test.cc, tests/vm/).
#include "agent/vm_init.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace sandboxd::agent::vm {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/vm-init-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void Write(const std::string& path, const std::string& content) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << content;
}

std::vector<char*> Argv(std::vector<std::string>& words) {
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  return argv;
}

TEST(VmInit, WantsVmMode) {
  std::vector<std::string> vm = {"init", "--vm"}, plain = {"init"},
                           linked = {"sandbox-agent", "--link-fd", "3"},
                           linked_eq = {"sandbox-agent", "--link-path=/dev/vport0p1"};
  EXPECT_TRUE(WantsVmMode(2, Argv(vm).data(), 42));
  EXPECT_TRUE(WantsVmMode(1, Argv(plain).data(), 1));
  EXPECT_FALSE(WantsVmMode(1, Argv(plain).data(), 42));
  // PID 1 of the namespaces backend names its link.
  EXPECT_FALSE(WantsVmMode(3, Argv(linked).data(), 1));
  EXPECT_FALSE(WantsVmMode(2, Argv(linked_eq).data(), 1));
}

TEST(VmInit, ParseArgs) {
  std::vector<std::string> words = {"/init",
                                    "--vm",
                                    "--port=p.x",
                                    "--root-serial=r",
                                    "--root-fs=ext4",
                                    "--scratch-serial=s",
                                    "--hostname=sbx-1",
                                    "--pids-max=2048",
                                    "stray"};
  auto o = ParseArgs(static_cast<int>(words.size()), Argv(words).data());
  ASSERT_TRUE(o) << o.error().message;
  EXPECT_EQ(o->port_name, "p.x");
  EXPECT_EQ(o->root_serial, "r");
  EXPECT_EQ(o->root_fstype, "ext4");
  EXPECT_EQ(o->scratch_serial, "s");
  EXPECT_EQ(o->hostname, "sbx-1");
  EXPECT_EQ(o->pids_max, 2048u);

  std::vector<std::string> none = {"/init"};
  auto d = ParseArgs(1, Argv(none).data());
  ASSERT_TRUE(d);
  EXPECT_EQ(d->port_name, "sandbox.agent");
  EXPECT_EQ(d->root_fstype, "erofs");
  EXPECT_EQ(d->hostname, "sandbox");
  EXPECT_EQ(d->port_fd, -1);  // stage 1

  for (std::string bad : {"--root-fs=btrfs", "--hostname=a b", "--hostname=a/b",
                          "--port=", "--bogus=1", "--bogus", "--pids-max=0", "--pids-max=12x",
                          "--pids-max=99999999", "--port-fd=2", "--port-fd=x", "--port-fd=-3"}) {
    std::vector<std::string> w = {"/init", bad};
    EXPECT_FALSE(ParseArgs(2, Argv(w).data())) << bad;
  }
}

// Stage 1 re-executes /init with these; they must parse back to the same
// settings, plus the port fd and the per-sandbox values of the handshake.
TEST(VmInit, Stage2ArgsParseBack) {
  Options o;
  o.port_name = "p.x";
  o.root_serial = "r";
  o.root_fstype = "ext4";
  o.scratch_serial = "s";
  vmboot::BootConfig c;
  c.hostname = "sbx-7";
  c.pids_max = 333;
  auto words = Stage2Args(o, c, 3);
  EXPECT_EQ(words[0], "/init");
  EXPECT_EQ(words[1], "--vm");  // /proc/1/cmdline still starts with "/init --vm"
  EXPECT_TRUE(WantsVmMode(static_cast<int>(words.size()), Argv(words).data(), 1));
  auto back = ParseArgs(static_cast<int>(words.size()), Argv(words).data());
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->port_fd, 3);
  EXPECT_EQ(back->port_name, "p.x");
  EXPECT_EQ(back->root_serial, "r");
  EXPECT_EQ(back->root_fstype, "ext4");
  EXPECT_EQ(back->scratch_serial, "s");
  EXPECT_EQ(back->hostname, "sbx-7");
  EXPECT_EQ(back->pids_max, 333u);
}

TEST(VmInit, ParseModulesLoad) {
  auto m = ParseModulesLoad("# generated\nvirtio_ring.ko\n\n  virtio.ko  \nerofs.ko");
  ASSERT_TRUE(m);
  EXPECT_EQ(*m, (std::vector<std::string>{"virtio_ring.ko", "virtio.ko", "erofs.ko"}));
  EXPECT_TRUE(ParseModulesLoad("")->empty());
  EXPECT_FALSE(ParseModulesLoad("../../evil.ko\n"));
  EXPECT_FALSE(ParseModulesLoad("kernel/fs/x.ko\n"));
  EXPECT_FALSE(ParseModulesLoad("..\n"));
}

TEST(VmInit, FindPortByName) {
  TempDir t;
  const std::string dir = t.path() + "/virtio-ports";
  EXPECT_EQ(FindPortByName(dir, "sandbox.agent").error().code, ENOENT);  // class not there yet
  Write(dir + "/vport2p0/name", "");  // the console port has no name
  Write(dir + "/vport2p1/name", "sandbox.agent\n");
  Write(dir + "/vport3p1/name", "other\n");
  auto p = FindPortByName(dir, "sandbox.agent");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(*p, "vport2p1");
  EXPECT_EQ(FindPortByName(dir, "sandbox").error().code, ENOENT);  // no prefix match
}

TEST(VmInit, FindDiskBySerial) {
  TempDir t;
  const std::string dir = t.path() + "/block";
  Write(dir + "/vda/serial", "scratch\n");
  Write(dir + "/vdb/serial", "root\n");
  Write(dir + "/loop0/serial", "root\n");  // not a virtio disk
  EXPECT_EQ(*FindDiskBySerial(dir, "root"), "vdb");
  EXPECT_EQ(*FindDiskBySerial(dir, "scratch"), "vda");
  EXPECT_EQ(FindDiskBySerial(dir, "data").error().code, ENOENT);
}

TEST(VmInit, ValidHostname) {
  EXPECT_TRUE(ValidHostname("sandbox"));
  EXPECT_TRUE(ValidHostname("sbx-loc.a1"));
  EXPECT_FALSE(ValidHostname(""));
  EXPECT_FALSE(ValidHostname(std::string(65, 'a')));
  EXPECT_FALSE(ValidHostname("a_b"));
  EXPECT_FALSE(ValidHostname("a\nb"));
}

TEST(VmInit, RemoveTreeOnSameDevice) {
  TempDir t;
  const std::string root = t.path() + "/initramfs";
  Write(root + "/init", "binary");
  Write(root + "/lib/modules/6.1/modules.load", "x.ko\n");
  Write(root + "/lib/modules/6.1/x.ko", "module");
  fs::create_directories(root + "/dev");
  fs::create_directories(root + "/mnt/root");
  // A symlink out of the tree must be removed, not followed.
  Write(t.path() + "/outside/keep", "keep");
  fs::create_directory_symlink(t.path() + "/outside", root + "/link");
  UniqueFd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  EXPECT_EQ(RemoveTreeOnSameDevice(fd.get()), 0u);
  EXPECT_TRUE(fs::is_empty(root));
  EXPECT_TRUE(fs::exists(t.path() + "/outside/keep"));
}

}  // namespace
}  // namespace sandboxd::agent::vm

#include "agent/vm_init.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/random.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <span>

#include "agent/agent.h"
#include "agent/loopback_relay.h"
#include "agent/log.h"
#include "common/frame.h"

namespace sandboxd::agent::vm {
namespace {

// Where the pieces of the new root are mounted before the switch. The
// initramfs (build-initramfs) has /mnt; the rest is made here.
constexpr const char* kLower = "/mnt/lower";
constexpr const char* kScratch = "/mnt/scratch";
constexpr const char* kNewRoot = "/mnt/root";

// Devices appear asynchronously (virtio-console ports only once the host has
// announced them on the control queue): poll for them, in small steps, up to
// these deadlines. Generous because a TCG guest on a loaded host is slow.
constexpr int kPollStepMs = 2;
constexpr int kPortTimeoutMs = 20000;
constexpr int kDiskTimeoutMs = 20000;

double NowS() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

void SleepMs(int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000L * 1000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// /dev/kmsg, opened while the boot /dev is there; kept (CLOEXEC) for Kmsg.
int g_kmsg = -1;

// A line for the kernel log (seen on a debug console, `dmesg` in the guest)
// and for stderr. Without a console, stderr is /dev/null.
void Kmsg(int level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void Kmsg(int level, const char* fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  Log("%s", msg);
  if (g_kmsg < 0) return;
  char line[1000];
  int n = snprintf(line, sizeof line, "<%d>sandbox-agent: %s\n", level, msg);
  if (n > 0) {
    ssize_t ignored =
        write(g_kmsg, line, std::min<size_t>(static_cast<size_t>(n), sizeof line - 1));
    (void)ignored;
  }
}

// PID 1 may start with fds 0-2 closed (no console device). Fill them first,
// so nothing opened later lands there. The initramfs ships /dev/null.
void EnsureStdio() {
  for (int fd = 0; fd < 3; ++fd) {
    if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    int got = open("/dev/null", O_RDWR);
    if (got < 0) got = open("/", O_RDONLY | O_DIRECTORY);  // any fd holds the slot
    if (got >= 0 && got != fd) close(got);                 // lower slots were open; cannot happen
  }
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// Reads a small file (sysfs attributes, the module manifest).
Result<std::string> ReadFile(const std::string& path, size_t limit = 64 * 1024) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return FailErrno("open " + path);
  std::string out;
  char buf[4096];
  while (out.size() < limit) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno("read " + path);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// Entry names of a directory (no "." and ".."); ENOENT if it does not exist.
Result<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) return FailErrno("opendir " + dir);
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    names.emplace_back(e->d_name);
  }
  closedir(d);
  return names;
}

// Calls `find` until it succeeds or fails with something other than ENOENT,
// or `timeout_ms` passes.
Result<std::string> PollFor(const std::function<Result<std::string>()>& find, int timeout_ms) {
  const double deadline = NowS() + timeout_ms / 1000.0;
  for (;;) {
    auto r = find();
    if (r || r.error().code != ENOENT || NowS() > deadline) return r;
    SleepMs(kPollStepMs);
  }
}

Status Mkdir(const char* path, mode_t mode = 0755) {
  if (mkdir(path, mode) != 0 && errno != EEXIST) return FailErrno(std::string("mkdir ") + path);
  return {};
}

Status MountAt(const std::string& source, const char* target, const char* fstype,
               unsigned long flags, const char* data) {
  SBX_TRY(Mkdir(target));
  if (mount(source.c_str(), target, fstype, flags, data) != 0) {
    return FailErrno("mount " + source + " on " + target +
                     (fstype ? std::string(" (") + fstype + ")" : ""));
  }
  return {};
}

Status WriteFile(const char* path, std::string_view value) {
  UniqueFd fd(open(path, O_WRONLY | O_CLOEXEC));
  if (!fd) return FailErrno(std::string("open ") + path);
  if (write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return FailErrno(std::string("write ") + path);
  }
  return {};
}

Status Symlink(const char* target, const char* path) {
  if (symlink(target, path) != 0 && errno != EEXIST)
    return FailErrno(std::string("symlink ") + path);
  return {};
}

// Step 3: finit_module() every module of modules.load, in its order.
Result<int> LoadModules() {
  utsname u{};
  if (uname(&u) != 0) return FailErrno("uname");
  const std::string dir = std::string("/lib/modules/") + u.release;
  auto text = ReadFile(dir + "/modules.load");
  if (!text) return Fail(text.error());
  auto names = ParseModulesLoad(*text);
  if (!names) return Fail(names.error().Wrap(dir + "/modules.load"));
  for (const auto& name : *names) {
    const std::string path = dir + "/" + name;
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return FailErrno("open " + path);
    if (syscall(SYS_finit_module, fd.get(), "", 0) != 0 && errno != EEXIST) {
      return FailErrno("finit_module " + name);
    }
  }
  return static_cast<int>(names->size());
}

// Step 4: the agent port, opened once the host end is connected.
Result<UniqueFd> OpenPort(const std::string& name) {
  const double deadline = NowS() + kPortTimeoutMs / 1000.0;
  auto dev =
      PollFor([&] { return FindPortByName("/sys/class/virtio-ports", name); }, kPortTimeoutMs);
  if (!dev) return Fail(dev.error().Wrap("virtio-serial port " + name));
  const std::string path = "/dev/" + *dev;
  UniqueFd fd;
  for (;;) {  // devtmpfs may lag the sysfs entry
    fd.Reset(open(path.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (fd || errno != ENOENT || NowS() > deadline) break;
    SleepMs(kPollStepMs);
  }
  if (!fd) return FailErrno("open " + path);
  // The port reports POLLHUP (and reads return 0) until the host side is
  // known to be connected, which the host announces asynchronously after the
  // port appeared. The agent takes POLLHUP for "link gone", so wait for the
  // connection first; POLLOUT is reported only once it is there.
  for (;;) {
    pollfd p{fd.get(), POLLOUT, 0};
    int r = poll(&p, 1, 0);
    if (r > 0 && (p.revents & POLLOUT)) break;
    if (r < 0 && errno != EINTR) return FailErrno("poll " + path);
    if (NowS() > deadline) return FailMsg(path + ": the host end never connected");
    SleepMs(kPollStepMs);
  }
  return fd;
}

Result<std::string> DiskBySerial(const std::string& serial) {
  auto dev = PollFor([&] { return FindDiskBySerial("/sys/block", serial); }, kDiskTimeoutMs);
  if (!dev) return Fail(dev.error().Wrap("virtio-blk disk with serial " + serial));
  return "/dev/" + *dev;
}

// Step 5: read-only root image below, scratch disk above, overlay of both.
Status MountRoot(const Options& o) {
  auto root_dev = DiskBySerial(o.root_serial);
  if (!root_dev) return Fail(root_dev.error());
  // ext4 images are built without a journal; "noload" keeps the kernel from
  // ever replaying one on a read-only device.
  SBX_TRY(MountAt(*root_dev, kLower, o.root_fstype.c_str(), MS_RDONLY | MS_NODEV,
                  o.root_fstype == "ext4" ? "noload" : nullptr));
  auto scratch_dev = DiskBySerial(o.scratch_serial);
  if (!scratch_dev) return Fail(scratch_dev.error());
  // The host formats the scratch image with zeroed inode tables (a sparse
  // file reads as zeros): nothing for the lazy-init thread to do.
  SBX_TRY(MountAt(*scratch_dev, kScratch, "ext4", MS_NODEV, "noinit_itable"));
  SBX_TRY(Mkdir("/mnt/scratch/upper"));
  SBX_TRY(Mkdir("/mnt/scratch/work"));
  return MountAt("overlay", kNewRoot, "overlay", 0,
                 "lowerdir=/mnt/lower,upperdir=/mnt/scratch/upper,workdir=/mnt/scratch/work");
}

// Step 6. The initramfs is the kernel's rootfs and cannot be pivot_root'ed
// away: move the new root over "/" and chroot into it, after emptying the
// initramfs so its pages (this binary's included, once it exits) go back.
Status SwitchRoot() {
  // The devtmpfs (every device of the VM, the disks included) stays behind:
  // the sandbox gets the namespaces backend's minimal /dev (step 7). Open
  // fds (the port, fds 0-2) outlive the detach.
  if (umount2("/dev", MNT_DETACH) != 0) return FailErrno("unmount the boot /dev");
  for (const char* m : {"/proc", "/sys"}) {
    const std::string target = std::string(kNewRoot) + m;
    SBX_TRY(Mkdir(target.c_str()));
    if (mount(m, target.c_str(), nullptr, MS_MOVE, nullptr) != 0) {
      return FailErrno(std::string("move ") + m + " to " + target);
    }
  }
  if (chdir(kNewRoot) != 0) return FailErrno(std::string("chdir ") + kNewRoot);
  {
    UniqueFd old_root(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (old_root) {
      size_t left = RemoveTreeOnSameDevice(old_root.get());
      if (left > 0) Kmsg(6, "initramfs: %zu entries left (mount points)", left);
    }
  }
  if (mount(".", "/", nullptr, MS_MOVE, nullptr) != 0) return FailErrno("move the new root to /");
  if (chroot(".") != 0) return FailErrno("chroot");
  if (chdir("/") != 0) return FailErrno("chdir /");
  return {};
}

Status LoopbackUp() {
  UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return FailErrno("socket");
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, "lo", 3);
  if (ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return FailErrno("SIOCGIFFLAGS lo");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) return FailErrno("SIOCSIFFLAGS lo");
  return {};
}

// Step 7: what the namespaces backend sets up in its mount namespace.
Status FinishEnvironment(const Options& o) {
  // The namespaces backend's /dev: these nodes, a private devpts, a tmpfs
  // /dev/shm and the fd links; no disks, no consoles, no /dev/mem.
  SBX_TRY(MountAt("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k"));
  struct Node {
    const char* path;
    unsigned major, minor;
  };
  for (const Node& n :
       {Node{"/dev/null", 1, 3}, Node{"/dev/zero", 1, 5}, Node{"/dev/full", 1, 7},
        Node{"/dev/random", 1, 8}, Node{"/dev/urandom", 1, 9}, Node{"/dev/tty", 5, 0}}) {
    if (mknod(n.path, S_IFCHR | 0666, makedev(n.major, n.minor)) != 0 || chmod(n.path, 0666) != 0) {
      return FailErrno(std::string("mknod ") + n.path);
    }
  }
  // fds 0-2 still point at the initramfs's /dev/null: use the new one.
  if (int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC); null_fd >= 0) {
    for (int fd = 0; fd < 3; ++fd) dup2(null_fd, fd);
    close(null_fd);
  }
  SBX_TRY(MountAt("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                  "newinstance,ptmxmode=0666,mode=0620"));
  SBX_TRY(Symlink("pts/ptmx", "/dev/ptmx"));
  SBX_TRY(MountAt("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"));
  SBX_TRY(Symlink("/proc/self/fd", "/dev/fd"));
  SBX_TRY(Symlink("/proc/self/fd/0", "/dev/stdin"));
  SBX_TRY(Symlink("/proc/self/fd/1", "/dev/stdout"));
  SBX_TRY(Symlink("/proc/self/fd/2", "/dev/stderr"));
  if (sethostname(o.hostname.data(), o.hostname.size()) != 0) return FailErrno("sethostname");
  // As in a namespace sandbox: the sandbox network is IPv4 only (the host
  // drops IPv6 from sandbox links anyway). `all` reaches the links that
  // exist (eth0, before it ever goes up) and `default` later ones. A kernel
  // without IPv6 has no such files.
  for (const char* f : {"/proc/sys/net/ipv6/conf/all/disable_ipv6",
                        "/proc/sys/net/ipv6/conf/default/disable_ipv6"}) {
    if (access(f, F_OK) == 0) SBX_TRY(WriteFile(f, "1"));
  }
  return LoopbackUp();
}

// Step 7, continued: what the namespaces backend's cgroup, seccomp filter and
// no_new_privs give its sandboxes, as far as it matters inside a VM (the
// guest kernel is not the host's, but a fork bomb or a hog should meet the
// same limits, and nested user namespaces stay unavailable to sandboxed code).
Status Harden(const Options& o) {
  SBX_TRY(
      MountAt("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr));
  SBX_TRY(WriteFile("/sys/fs/cgroup/cgroup.subtree_control", "+pids +memory"));
  SBX_TRY(Mkdir(kSandboxCgroup));
  const std::string cg = kSandboxCgroup;
  SBX_TRY(WriteFile((cg + "/pids.max").c_str(), std::to_string(o.pids_max)));
  // "0" moves the writing process; its children are born inside.
  SBX_TRY(WriteFile((cg + "/cgroup.procs").c_str(), "0"));
  SBX_TRY(WriteFile("/proc/sys/user/max_user_namespaces", "0"));
  // As in the namespaces backend, /proc/1/comm names the agent (not "init").
  if (prctl(PR_SET_NAME, "sandbox-agent", 0, 0, 0) != 0) return FailErrno("PR_SET_NAME");
  // Inherited by every process the agent starts: no setuid transitions.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return FailErrno("PR_SET_NO_NEW_PRIVS");
  return {};
}

size_t RemoveBelow(int dir_fd, dev_t dev, int depth) {
  if (depth > 64) return 1;
  int dup = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return 1;
  DIR* d = fdopendir(dup);
  if (!d) {
    close(dup);
    return 1;
  }
  std::vector<std::pair<std::string, bool>> entries;  // name, is a directory
  while (dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    struct stat st {};
    if (fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    // A mount point reports its mounted filesystem's device: never enter it.
    if (S_ISDIR(st.st_mode) && st.st_dev != dev) {
      entries.emplace_back("", false);  // counted as left
      continue;
    }
    entries.emplace_back(e->d_name, S_ISDIR(st.st_mode));
  }
  closedir(d);
  size_t left = 0;
  for (const auto& [name, is_dir] : entries) {
    if (name.empty()) {
      ++left;
      continue;
    }
    if (is_dir) {
      UniqueFd sub(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) {
        ++left;
        continue;
      }
      left += RemoveBelow(sub.get(), dev, depth + 1);
      if (unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0) ++left;
    } else if (unlinkat(dir_fd, name.c_str(), 0) != 0) {
      ++left;
    }
  }
  return left;
}

void SetIpv4(sockaddr* sa, uint32_t addr) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(addr);
  std::memcpy(sa, &sin, sizeof sin);
}

}  // namespace

Status ConfigureInterface(const NetConfigRequest& r) {
  UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return FailErrno("socket");
  ifreq ifr{};
  if (r.interface.empty() || r.interface.size() >= IFNAMSIZ) return FailMsg("bad interface name");
  std::memcpy(ifr.ifr_name, r.interface.c_str(), r.interface.size() + 1);
  const std::string& dev = r.interface;
  SetIpv4(&ifr.ifr_addr, r.address);
  if (ioctl(s.get(), SIOCSIFADDR, &ifr) != 0) return FailErrno("SIOCSIFADDR " + dev);
  SetIpv4(&ifr.ifr_netmask, r.prefix == 0 ? 0 : ~uint32_t{0} << (32 - r.prefix));
  if (ioctl(s.get(), SIOCSIFNETMASK, &ifr) != 0) return FailErrno("SIOCSIFNETMASK " + dev);
  if (ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return FailErrno("SIOCGIFFLAGS " + dev);
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) return FailErrno("SIOCSIFFLAGS " + dev);
  // The default route via the gateway, replacing one a previous call set
  // (a second call with other addresses reconfigures the link).
  rtentry rt{};
  SetIpv4(&rt.rt_dst, 0);
  SetIpv4(&rt.rt_genmask, 0);
  SetIpv4(&rt.rt_gateway, r.gateway);
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  std::string dev_name = dev;  // rt_dev is a non-const char*
  rt.rt_dev = dev_name.data();
  rtentry del = rt;
  if (ioctl(s.get(), SIOCDELRT, &del) != 0 && errno != ESRCH) {
    return FailErrno("SIOCDELRT default via " + dev);
  }
  if (ioctl(s.get(), SIOCADDRT, &rt) != 0) return FailErrno("SIOCADDRT default via " + dev);
  // The ingress's way to servers bound to 127.0.0.1 (common/loopback_relay.h).
  if (auto relay = StartLoopbackRelay(r.gateway); !relay) return Fail(relay.error());
  Kmsg(6, "%s: %u.%u.%u.%u/%d via %u.%u.%u.%u", dev.c_str(), r.address >> 24,
       (r.address >> 16) & 255, (r.address >> 8) & 255, r.address & 255, r.prefix, r.gateway >> 24,
       (r.gateway >> 16) & 255, (r.gateway >> 8) & 255, r.gateway & 255);
  return {};
}

bool WantsVmMode(int argc, char** argv, pid_t pid) {
  bool named_link = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--vm") return true;
    if (a.starts_with("--link-fd") || a.starts_with("--link-path")) named_link = true;
  }
  return pid == 1 && !named_link;
}

Result<Options> ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--vm") continue;
    if (!a.starts_with("--")) continue;  // a stray kernel word; see the header
    auto eq = a.find('=');
    if (eq == std::string_view::npos) return FailMsg("unknown argument " + std::string(a));
    std::string_view key = a.substr(0, eq), value = a.substr(eq + 1);
    if (value.empty()) return FailMsg("empty value in " + std::string(a));
    if (key == "--port") {
      o.port_name = value;
    } else if (key == "--root-serial") {
      o.root_serial = value;
    } else if (key == "--root-fs") {
      if (value != "erofs" && value != "ext4") return FailMsg("--root-fs must be erofs or ext4");
      o.root_fstype = value;
    } else if (key == "--scratch-serial") {
      o.scratch_serial = value;
    } else if (key == "--pids-max") {
      unsigned long n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || end != value.data() + value.size() || n < 16 || n > 4194304) {
        return FailMsg("--pids-max must be 16..4194304");
      }
      o.pids_max = static_cast<uint32_t>(n);
    } else if (key == "--hostname") {
      if (!ValidHostname(value)) return FailMsg("invalid --hostname");
      o.hostname = value;
    } else if (key == "--port-fd") {
      int n = -1;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || end != value.data() + value.size() || n < 3 || n > 1023) {
        return FailMsg("--port-fd must be 3..1023");
      }
      o.port_fd = n;
    } else {
      return FailMsg("unknown argument " + std::string(a));
    }
  }
  return o;
}

Result<std::vector<std::string>> ParseModulesLoad(std::string_view text) {
  std::vector<std::string> names;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = Trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (line.empty() || line.front() == '#') continue;
    if (line.find('/') != std::string_view::npos || line == "." || line == "..") {
      return FailMsg("bad module name '" + std::string(line) + "'");
    }
    names.emplace_back(line);
  }
  return names;
}

Result<std::string> FindPortByName(const std::string& class_dir, std::string_view port_name) {
  auto entries = ListDir(class_dir);
  if (!entries) return Fail(entries.error());
  for (const auto& e : *entries) {
    auto name = ReadFile(class_dir + "/" + e + "/name", 256);
    if (name && Trim(*name) == port_name) return e;
  }
  return Fail(Error{ENOENT, "no port named " + std::string(port_name) + " in " + class_dir});
}

Result<std::string> FindDiskBySerial(const std::string& block_dir, std::string_view serial) {
  auto entries = ListDir(block_dir);
  if (!entries) return Fail(entries.error());
  for (const auto& e : *entries) {
    if (!e.starts_with("vd")) continue;
    auto s = ReadFile(block_dir + "/" + e + "/serial", 256);
    if (s && Trim(*s) == serial) return e;
  }
  return Fail(Error{ENOENT, "no disk with serial " + std::string(serial) + " in " + block_dir});
}

size_t RemoveTreeOnSameDevice(int dir_fd) {
  struct stat st {};
  if (fstat(dir_fd, &st) != 0) return 1;
  return RemoveBelow(dir_fd, st.st_dev, 0);
}

bool ValidHostname(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

Result<UniqueFd> BootStage1(const Options& o) {
  const double t0 = NowS();
  SBX_TRY(MountAt("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"));
  g_kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
  SBX_TRY(MountAt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr));
  SBX_TRY(MountAt("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr));
  auto modules = LoadModules();
  if (!modules) return Fail(modules.error().Wrap("loading modules"));
  const double t_modules = NowS();
  auto port = OpenPort(o.port_name);
  if (!port) return Fail(port.error().Wrap("agent port"));
  Kmsg(6, "stage 1: init at %.3f s, %d modules in %.3f s, port after %.3f s", t0, *modules,
       t_modules - t0, NowS() - t0);
  return port;
}

Result<vmboot::BootConfig> AwaitConfig(int port_fd) {
  const std::string hello = vmboot::AwaitingConfigFrame();
  for (size_t off = 0; off < hello.size();) {
    ssize_t n = write(port_fd, hello.data() + off, hello.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return FailErrno("writing awaiting-config");
    off += static_cast<size_t>(n);
  }
  // The host answers with exactly one CONTROL frame. A snapshot of the VM is
  // taken while this read blocks; every restored copy continues here.
  link::FrameDecoder decoder;
  std::optional<link::Frame> frame;
  char buf[4096];
  while (!frame) {
    ssize_t n = read(port_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno("reading the boot config");
    if (n == 0) return FailMsg("the host closed the port before sending the boot config");
    std::span<const char> rest(buf, static_cast<size_t>(n));
    auto used = decoder.Feed(rest);
    if (!used) return Fail(used.error().Wrap("boot config"));
    frame = decoder.Next();
    if (frame && *used != rest.size()) return FailMsg("boot config: unexpected bytes after it");
  }
  if (frame->type != link::FrameType::kControl || frame->channel != 0) {
    return FailMsg("boot config: not a CONTROL frame");
  }
  auto config = vmboot::ParseConfig(frame->payload);
  if (!config) return Fail(config.error());

  // Restored siblings share the kernel's RNG state up to here: mix in the
  // host's fresh bytes (credited) and make the CRNG take a new key from the
  // input pool now, rather than at its next scheduled reseed.
  UniqueFd rnd(open("/dev/urandom", O_WRONLY | O_CLOEXEC));
  if (!rnd) return FailErrno("open /dev/urandom");
  // rand_pool_info ends in a flexible array: the bytes follow the header.
  alignas(
      rand_pool_info) unsigned char pool[sizeof(rand_pool_info) + vmboot::kMaxEntropyBytes] = {};
  auto* info = reinterpret_cast<rand_pool_info*>(pool);
  info->entropy_count = static_cast<int>(config->entropy.size() * 8);
  info->buf_size = static_cast<int>(config->entropy.size());
  std::memcpy(pool + sizeof(rand_pool_info), config->entropy.data(), config->entropy.size());
  if (ioctl(rnd.get(), RNDADDENTROPY, info) != 0) return FailErrno("RNDADDENTROPY");
  if (ioctl(rnd.get(), RNDRESEEDCRNG) != 0) return FailErrno("RNDRESEEDCRNG");
  timespec now{static_cast<time_t>(config->realtime_ns / 1'000'000'000),
               static_cast<long>(config->realtime_ns % 1'000'000'000)};
  if (clock_settime(CLOCK_REALTIME, &now) != 0) return FailErrno("clock_settime");
  Kmsg(6, "boot config: %zu bytes of host entropy added, CRNG reseeded, clock set",
       config->entropy.size());
  return config;
}

std::vector<std::string> Stage2Args(const Options& o, const vmboot::BootConfig& c, int port_fd) {
  return {"/init",
          "--vm",
          "--port-fd=" + std::to_string(port_fd),
          "--port=" + o.port_name,
          "--root-serial=" + o.root_serial,
          "--root-fs=" + o.root_fstype,
          "--scratch-serial=" + o.scratch_serial,
          "--hostname=" + c.hostname,
          "--pids-max=" + std::to_string(c.pids_max)};
}

Status BootStage2(const Options& o) {
  const double t0 = NowS();
  if (g_kmsg < 0) g_kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
  if (auto st = MountRoot(o); !st) return Fail(st.error().Wrap("root filesystem"));
  if (auto st = SwitchRoot(); !st) return Fail(st.error().Wrap("switching root"));
  if (auto st = FinishEnvironment(o); !st) return Fail(st.error().Wrap("sandbox environment"));
  if (auto st = Harden(o); !st) return Fail(st.error().Wrap("hardening"));
  Kmsg(6, "stage 2: root and environment in %.3f s (at %.3f s since boot)", NowS() - t0, NowS());
  return {};
}

void PowerOff() {
  sync();
  reboot(RB_POWER_OFF);
  // Only reached without ACPI power-off; QEMU runs with -no-reboot and the
  // kernel with reboot=t, so a restart request ends it too.
  reboot(RB_AUTOBOOT);
  for (;;) pause();
}

void Main(int argc, char** argv) {
  EnsureStdio();
  auto options = ParseArgs(argc, argv);
  if (!options) {
    Kmsg(3, "%s", options.error().message.c_str());
    PowerOff();
  }
  if (options->port_fd < 0) {
    // Stage 1, as the kernel's /init.
    auto port = BootStage1(*options);
    if (!port) {
      Kmsg(3, "boot failed: %s", port.error().message.c_str());
      PowerOff();
    }
    auto config = AwaitConfig(port->get());
    if (!config) {
      Kmsg(3, "boot handshake failed: %s", config.error().message.c_str());
      PowerOff();
    }
    // The port becomes fd 3 of stage 2 (0-2 are /dev/null), open across exec.
    constexpr int kStage2PortFd = 3;
    if (g_kmsg == kStage2PortFd) {  // CLOEXEC anyway; stage 2 opens its own
      close(g_kmsg);
      g_kmsg = -1;
    }
    // dup2 onto itself would keep O_CLOEXEC.
    int moved = port->get() == kStage2PortFd ? fcntl(kStage2PortFd, F_SETFD, 0)
                                             : dup2(port->get(), kStage2PortFd);
    if (moved < 0) {
      Kmsg(3, "moving the port to fd %d: %s", kStage2PortFd, strerror(errno));
      PowerOff();
    }
    std::vector<std::string> args = Stage2Args(*options, *config, kStage2PortFd);
    std::vector<char*> argv2;
    for (auto& a : args) argv2.push_back(a.data());
    argv2.push_back(nullptr);
    char* envp[] = {nullptr};
    execve("/init", argv2.data(), envp);
    int err = errno;
    if (g_kmsg < 0) g_kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
    Kmsg(3, "re-executing /init: %s", strerror(err));
    PowerOff();
  }
  if (auto st = BootStage2(*options); !st) {
    Kmsg(3, "boot failed: %s", st.error().message.c_str());
    PowerOff();
  }
  UniqueFd link(options->port_fd);
  if (fcntl(link.get(), F_SETFD, FD_CLOEXEC) != 0) {
    Kmsg(3, "the port fd %d: %s", options->port_fd, strerror(errno));
    PowerOff();
  }
  auto agent = Agent::Create(std::move(link));
  if (!agent) {
    Kmsg(3, "%s", agent.error().message.c_str());
    PowerOff();
  }
  (*agent)->SetOomKillCounter(std::string(kSandboxCgroup) + "/memory.events");
  (*agent)->SetNetworkConfigurator(ConfigureInterface);
  int status = (*agent)->Run();
  Kmsg(6, "link closed (status %d): powering off", status);
  // Run() has killed and reaped every process; the agent object is left
  // alone (its workers may be stuck in the kernel) since the VM ends here.
  (void)agent->release();
  PowerOff();
}

}  // namespace sandboxd::agent::vm

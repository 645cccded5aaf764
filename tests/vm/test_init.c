// A stand-in for sandbox-agent as the microVM's /init, for tests/vm/boot-smoke.sh.
//
// It walks the boot path the agent will walk (docs/microvm.md, "VM init"), in
// the same order, and reports over the virtio-serial agent port instead of
// serving the agent protocol:
//   1. fds 0-2 valid (the kernel leaves them closed when there is no console)
//   2. mount /proc, /sys, /dev (devtmpfs)
//   3. load /lib/modules/<release>/modules.load with finit_module(2)
//   4. find the agent port by name in /sys/class/virtio-ports and open it
//   5. write "hello <release> ..." (the boot-to-agent mark)
//   6. find the root and scratch disks by virtio serial, mount the root
//      read-only, the scratch disk read-write, an overlay of both, move it
//      onto / and chroot into it
//   7. check files of the base image (ownership mapped back to root and app)
//      and that the overlay is writable
//   8. write "ready ..." (or "fail <step>: <reason>"), run python3 from the
//      image once (a cold first command), write "idle ...", wait for
//      "poweroff" from the host (so it can sample QEMU's memory at idle),
//      power off.
//
// Arguments come from the kernel command line after "--":
//   rootfs=erofs|ext4  port=<virtio-serial port name>
//   root-serial=<id>   scratch-serial=<id>   upper=disk|tmpfs
//   probe="<shell command>"  timed instead of the cold python3 (benchmarks)
//
// Static, plain C, no allocation worth mentioning: it runs as PID 1 with
// nothing else in the initramfs.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char* g_rootfs = "erofs";
static const char* g_port_name = "sandbox.agent";
static const char* g_root_serial = "root";
static const char* g_scratch_serial = "scratch";
static const char* g_upper = "disk";
static const char* g_probe = NULL;  // a /bin/sh -c command to time instead of python3
static int g_port = -1;

static double Now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void Log(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
  ssize_t w = write(2, buf, (size_t)n);
  (void)w;
}

static void PortLine(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0 || g_port < 0) return;
  if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
  const char* p = buf;
  while (n > 0) {
    ssize_t w = write(g_port, p, (size_t)n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= (int)w;
  }
}

static void PowerOff(void) {
  sync();
  reboot(RB_POWER_OFF);
  // Only reached if ACPI poweroff is unavailable; QEMU runs with -no-reboot and
  // reboot=t, so a restart request ends it too.
  reboot(RB_AUTOBOOT);
  for (;;) pause();
}

static void Fail(const char* step, const char* fmt, ...) {
  char why[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  Log("test-init: FAIL %s: %s\n", step, why);
  PortLine("fail %s: %s\n", step, why);
  PowerOff();
}

// The kernel opens /dev/console for init; with no console device the open
// fails and init starts with fds 0-2 closed. Anything opened later would then
// land on 0-2, so fill them first.
static void EnsureStdFds(void) {
  for (int fd = 0; fd < 3; ++fd) {
    if (fcntl(fd, F_GETFD) >= 0) continue;
    int n = open("/dev/null", O_RDWR);   // the initramfs ships /dev/null
    if (n < 0) n = open("/", O_RDONLY);  // any fd will do as a placeholder
    if (n >= 0 && n != fd) {
      dup2(n, fd);
      close(n);
    }
  }
}

static void MountOrFail(const char* src, const char* dst, const char* type, unsigned long flags,
                        const char* data) {
  mkdir(dst, 0755);
  if (mount(src, dst, type, flags, data) != 0) {
    Fail("mount", "%s on %s (%s): %s", src, dst, type, strerror(errno));
  }
}

static int ReadSmallFile(const char* path, char* buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n < 0) return -1;
  buf[n] = 0;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
  return (int)n;
}

// Loads every module named in modules.load, in order. Returns how many.
static int LoadModules(const char* release) {
  char dir[256], manifest[320];
  snprintf(dir, sizeof dir, "/lib/modules/%s", release);
  snprintf(manifest, sizeof manifest, "%s/modules.load", dir);
  FILE* f = fopen(manifest, "re");
  if (!f) Fail("modules", "%s: %s", manifest, strerror(errno));
  char line[256];
  int count = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    if (line[0] == 0 || line[0] == '#') continue;
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, line);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) Fail("modules", "%s: %s", path, strerror(errno));
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
      Fail("modules", "finit_module %s: %s", line, strerror(errno));
    }
    close(fd);
    ++count;
  }
  fclose(f);
  return count;
}

// Polls for up to timeout_s until fn() returns >= 0. Devices appear
// asynchronously: virtio-console ports only after the host has announced them
// on the control queue.
static int Poll(int (*fn)(char*, size_t, const char*), char* out, size_t cap, const char* key,
                double timeout_s) {
  double deadline = Now() + timeout_s;
  for (;;) {
    int r = fn(out, cap, key);
    if (r >= 0 || Now() > deadline) return r;
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

// /sys/class/virtio-ports/vportNpM/name holds the name QEMU gave the
// virtserialport; the node is /dev/vportNpM (no udev, so no
// /dev/virtio-ports/<name> symlink).
static int FindPort(char* out, size_t cap, const char* name) {
  DIR* d = opendir("/sys/class/virtio-ports");
  if (!d) return -1;
  struct dirent* e;
  int found = -1;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char p[300], v[128];
    snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
    if (ReadSmallFile(p, v, sizeof v) >= 0 && strcmp(v, name) == 0) {
      snprintf(out, cap, "/dev/%s", e->d_name);
      struct stat st;
      if (stat(out, &st) == 0) found = 0;
      break;
    }
  }
  closedir(d);
  return found;
}

// /sys/block/vdX/serial holds the virtio-blk serial= QEMU was given. Device
// order on the virtio-mmio bus is not the command-line order, so disks are
// always found by serial.
static int FindDisk(char* out, size_t cap, const char* serial) {
  DIR* d = opendir("/sys/block");
  if (!d) return -1;
  struct dirent* e;
  int found = -1;
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, "vd", 2) != 0) continue;
    char p[300], v[128];
    snprintf(p, sizeof p, "/sys/block/%s/serial", e->d_name);
    if (ReadSmallFile(p, v, sizeof v) >= 0 && strcmp(v, serial) == 0) {
      snprintf(out, cap, "/dev/%s", e->d_name);
      struct stat st;
      if (stat(out, &st) == 0) found = 0;
      break;
    }
  }
  closedir(d);
  return found;
}

static void ParseArgs(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* a = argv[i];
    if (!strncmp(a, "rootfs=", 7))
      g_rootfs = a + 7;
    else if (!strncmp(a, "port=", 5))
      g_port_name = a + 5;
    else if (!strncmp(a, "root-serial=", 12))
      g_root_serial = a + 12;
    else if (!strncmp(a, "scratch-serial=", 15))
      g_scratch_serial = a + 15;
    else if (!strncmp(a, "upper=", 6))
      g_upper = a + 6;
    else if (!strncmp(a, "probe=", 6))
      g_probe = a + 6;
  }
}

int main(int argc, char** argv) {
  const double t_init = Now();
  // devtmpfs first: /dev/null for the std fds. The initramfs has /dev/null and
  // /dev/console too, but devtmpfs is mounted over them right away.
  mkdir("/dev", 0755);
  mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  EnsureStdFds();
  ParseArgs(argc, argv);
  MountOrFail("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  MountOrFail("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);

  struct utsname u;
  uname(&u);
  Log("test-init: uname -r: %s\n", u.release);

  const double t_mod0 = Now();
  int nmod = LoadModules(u.release);
  const double t_mod1 = Now();

  char port[300];
  if (Poll(FindPort, port, sizeof port, g_port_name, 10) < 0) {
    Fail("port", "no virtio-serial port named %s", g_port_name);
  }
  g_port = open(port, O_RDWR | O_CLOEXEC | O_NOCTTY);
  if (g_port < 0) Fail("port", "open %s: %s", port, strerror(errno));
  const double t_port = Now();
  // Is the kernel's CRNG ready (getrandom() would not block)? It should be
  // by now when the VM has a virtio-rng device.
  char rnd[16];
  const int crng = getrandom(rnd, sizeof rnd, GRND_NONBLOCK) == (ssize_t)sizeof rnd;
  PortLine("hello %s init=%.3f modules=%d/%.3fs port=%s crng=%d t=%.3f\n", u.release, t_init, nmod,
           t_mod1 - t_mod0, port, crng, t_port);

  // Root: read-only lower from the image disk; upper+work on the scratch disk
  // (or a tmpfs); the overlay becomes /.
  char root_dev[300], scratch_dev[300];
  if (Poll(FindDisk, root_dev, sizeof root_dev, g_root_serial, 5) < 0) {
    Fail("root", "no virtio-blk disk with serial %s", g_root_serial);
  }
  MountOrFail(root_dev, "/mnt/lower", g_rootfs, MS_RDONLY | MS_NODEV,
              strcmp(g_rootfs, "ext4") == 0 ? "noload" : NULL);
  if (strcmp(g_upper, "tmpfs") == 0) {
    MountOrFail("tmpfs", "/mnt/scratch", "tmpfs", MS_NODEV, "mode=0755");
  } else {
    if (Poll(FindDisk, scratch_dev, sizeof scratch_dev, g_scratch_serial, 5) < 0) {
      Fail("scratch", "no virtio-blk disk with serial %s", g_scratch_serial);
    }
    MountOrFail(scratch_dev, "/mnt/scratch", "ext4", MS_NODEV, "noinit_itable");
  }
  mkdir("/mnt/scratch/upper", 0755);
  mkdir("/mnt/scratch/work", 0755);
  MountOrFail("overlay", "/mnt/root", "overlay", 0,
              "lowerdir=/mnt/lower,upperdir=/mnt/scratch/upper,workdir=/mnt/scratch/work");

  // switch_root: the initramfs is the kernel's rootfs and cannot be
  // pivot_root'ed away, so move the new root over / and chroot. (The agent
  // also deletes the initramfs files first to give their memory back.)
  MountOrFail("/dev", "/mnt/root/dev", NULL, MS_MOVE, NULL);
  MountOrFail("/proc", "/mnt/root/proc", NULL, MS_MOVE, NULL);
  MountOrFail("/sys", "/mnt/root/sys", NULL, MS_MOVE, NULL);
  if (chdir("/mnt/root") != 0) Fail("switch", "chdir: %s", strerror(errno));
  if (mount(".", "/", NULL, MS_MOVE, NULL) != 0) Fail("switch", "move: %s", strerror(errno));
  if (chroot(".") != 0 || chdir("/") != 0) Fail("switch", "chroot: %s", strerror(errno));
  const double t_root = Now();

  struct stat st;
  if (stat("/usr/bin/bash", &st) != 0) Fail("check", "/usr/bin/bash: %s", strerror(errno));
  if (st.st_uid != 0 || st.st_gid != 0) {
    Fail("check", "/usr/bin/bash owned by %u:%u, want 0:0", st.st_uid, st.st_gid);
  }
  if (stat("/home/app", &st) != 0 || st.st_uid != 1000 || st.st_gid != 1000) {
    Fail("check", "/home/app not owned by 1000:1000");
  }
  char osr[4096];
  if (ReadSmallFile("/etc/os-release", osr, sizeof osr) < 0 || !strstr(osr, "ID=")) {
    Fail("check", "/etc/os-release unreadable");
  }
  int fd = open("/tmp/overlay-write", O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, "x", 1) != 1) Fail("check", "overlay not writable: %s", strerror(errno));
  close(fd);
  char mounts[4096] = "";
  ReadSmallFile("/proc/mounts", mounts, sizeof mounts);
  const char* rootline = strstr(mounts, "overlay / ");

  PortLine("ready root=%s(%s) upper=%s root_mounted=%.3f checks=ok root_is_overlay=%d t=%.3f\n",
           root_dev, g_rootfs, g_upper, t_root, rootline != NULL, Now());

  // A first command from the image, cold: what a user's first exec costs.
  double probe_s = -1;
  if (access("/usr/bin/python3", X_OK) == 0 || g_probe) {
    const double t0 = Now();
    pid_t pid = fork();
    if (pid == 0) {
      char* const py[] = {"/usr/bin/python3", "-c", "import json, os; os.listdir('/')", NULL};
      char* const sh[] = {"/bin/sh", "-c", (char*)g_probe, NULL};
      char* const env[] = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", NULL};
      execve(g_probe ? sh[0] : py[0], g_probe ? sh : py, env);
      _exit(127);
    }
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
        WEXITSTATUS(status) == 0) {
      probe_s = Now() - t0;
    } else {
      Fail("check", "%s from the image did not run (status %d)", g_probe ? "probe" : "python3",
           status);
    }
  }
  PortLine("idle %s=%.3f\n", g_probe ? "probe" : "python3_cold", probe_s);

  // Idle until the host has looked at us; never longer than 60 s.
  struct pollfd pfd = {g_port, POLLIN, 0};
  char cmd[64];
  if (poll(&pfd, 1, 60000) > 0) {
    ssize_t n = read(g_port, cmd, sizeof cmd - 1);
    (void)n;
  }
  PowerOff();
  return 0;
}

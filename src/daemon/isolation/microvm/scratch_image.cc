#include "daemon/isolation/microvm/scratch_image.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <vector>

extern char** environ;

namespace sandboxd::isolation::microvm {
namespace {

// Bump when the mke2fs options change: old templates are then remade.
constexpr int kTemplateVersion = 1;

std::string Stamp(uint64_t bytes) {
  return "ext4 bytes=" + std::to_string(bytes) + " v" + std::to_string(kTemplateVersion) + "\n";
}

Result<std::string> ReadAll(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return FailErrno("open " + path);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno("read " + path);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

Status WriteAll(const std::string& path, const std::string& content) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return FailErrno("open " + path);
  if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    return FailErrno("write " + path);
  }
  return {};
}

// mke2fs lives in /usr/sbin, which a daemon started from a user's shell may
// not have on its PATH.
std::string FindMke2fs() {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::istringstream in(path);
    std::string d;
    while (std::getline(in, d, ':')) dirs.push_back(d);
  }
  for (const char* d : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) dirs.emplace_back(d);
  for (const auto& d : dirs) {
    std::string p = d + "/mke2fs";
    if (!d.empty() && ::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

Status RunMke2fs(const std::string& image) {
  const std::string mke2fs = FindMke2fs();
  if (mke2fs.empty()) return FailMsg("mke2fs not found (install e2fsprogs)");
  std::vector<std::string> args = {mke2fs,           "-q", "-F", "-t", "ext4",    "-O",
                                   "^has_journal",   "-m", "0",  "-L", "scratch", "-E",
                                   "root_owner=0:0", image};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  int err = ::posix_spawn(&pid, mke2fs.c_str(), nullptr, nullptr, argv.data(), environ);
  if (err != 0) return FailErrno("spawn " + mke2fs, err);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return FailErrno("waitpid mke2fs");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return FailMsg("mke2fs " + image + " failed (status " + std::to_string(status) + ")");
  }
  return {};
}

}  // namespace

Status EnsureScratchTemplate(const std::string& path, uint64_t bytes) {
  const std::string stamp_path = path + ".stamp";
  if (auto stamp = ReadAll(stamp_path);
      stamp && *stamp == Stamp(bytes) && ::access(path.c_str(), R_OK) == 0) {
    return {};
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) return FailErrno("create " + tmp);
    if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
      ::unlink(tmp.c_str());
      return FailErrno("truncate " + tmp);
    }
  }
  if (auto st = RunMke2fs(tmp); !st) {
    ::unlink(tmp.c_str());
    return st;
  }
  ::unlink(stamp_path.c_str());
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return FailErrno("rename " + tmp);
  }
  return WriteAll(stamp_path, Stamp(bytes));
}

Result<UniqueFd> CloneSparse(const std::string& src_path, const std::string& dst_path) {
  UniqueFd src(::open(src_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!src) return FailErrno("open " + src_path);
  struct stat st {};
  if (::fstat(src.get(), &st) != 0) return FailErrno("stat " + src_path);
  UniqueFd dst(::open(dst_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!dst) return FailErrno("create " + dst_path);
  auto fail = [&](Error e) {
    dst.Reset();
    ::unlink(dst_path.c_str());
    return Fail(std::move(e));
  };
  // A reflink shares every block until written (btrfs, xfs).
  if (::ioctl(dst.get(), FICLONE, src.get()) == 0) return dst;

  // Otherwise copy the data extents only; the rest stays a hole.
  off_t pos = 0;
  while (pos < st.st_size) {
    off_t data = ::lseek(src.get(), pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only a hole is left
    if (data < 0) return fail(Error::Errno("SEEK_DATA " + src_path));
    off_t hole = ::lseek(src.get(), data, SEEK_HOLE);
    if (hole < 0) return fail(Error::Errno("SEEK_HOLE " + src_path));
    off_t in = data, out = data;
    while (in < hole) {
      ssize_t n =
          ::copy_file_range(src.get(), &in, dst.get(), &out, static_cast<size_t>(hole - in), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
        char buf[64 * 1024];  // no in-kernel copy between these files
        ssize_t r = ::pread(src.get(), buf, std::min<off_t>(sizeof buf, hole - in), in);
        if (r <= 0) return fail(Error::Errno("read " + src_path));
        if (::pwrite(dst.get(), buf, static_cast<size_t>(r), out) != r) {
          return fail(Error::Errno("write " + dst_path));
        }
        in += r;
        out += r;
        continue;
      }
      if (n <= 0) return fail(Error::Errno("copy_file_range " + src_path));
    }
    pos = hole;
  }
  if (::ftruncate(dst.get(), st.st_size) != 0) return fail(Error::Errno("truncate " + dst_path));
  return dst;
}

Result<uint64_t> AllocatedBytes(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return FailErrno("fstat");
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace sandboxd::isolation::microvm

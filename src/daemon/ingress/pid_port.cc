#include "daemon/ingress/pid_port.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"

namespace sandboxd::ingress {

namespace {

// Bounds on what a (hostile) sandbox can make us read.
constexpr size_t kMaxProcesses = 8192;
constexpr size_t kMaxFdsPerProcess = 65536;
constexpr size_t kMaxTableBytes = 16u << 20;

// The sandbox's procfs: "proc" resolved inside the sandbox's root (symlinks
// and ".." cannot leave it), and only if it really is a procfs.
Result<UniqueFd> OpenSandboxProc(int proc_fd) {
  UniqueFd root(::openat(proc_fd, "root", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return FailErrno("open the sandbox's root");
  open_how how{};
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS;  // no magic links either
  UniqueFd proc(static_cast<int>(::syscall(SYS_openat2, root.get(), "proc", &how, sizeof how)));
  if (!proc) return FailErrno("open the sandbox's /proc");
  struct statfs st {};
  if (::fstatfs(proc.get(), &st) != 0) return FailErrno("statfs the sandbox's /proc");
  if (st.f_type != PROC_SUPER_MAGIC) return FailMsg("the sandbox's /proc is not a procfs");
  return proc;
}

bool ParsePid(std::string_view s, int64_t& out) {
  if (s.empty() || s.size() > 10) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && out > 0;
}

std::string ReadSmallFile(int dir, const std::string& path, size_t limit) {
  UniqueFd fd(::openat(dir, path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return {};
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() >= limit) break;
  }
  return out;
}

// Entries of a directory opened relative to `dir` (names only, no "."/"..").
template <typename Fn>
void ForEachEntry(int dir, const std::string& path, size_t limit, Fn fn) {
  int fd = ::openat(dir, path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return;
  }
  size_t n = 0;
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (++n > limit) break;
    fn(::dirfd(d), name);
  }
  ::closedir(d);
}

// The parent pid from /proc/<pid>/stat ("pid (comm) state ppid ..."; comm
// may hold spaces and parentheses, so parse after the last ')').
bool ParentOf(int proc, int64_t pid, int64_t& ppid) {
  std::string stat = ReadSmallFile(proc, std::to_string(pid) + "/stat", 4096);
  auto close = stat.rfind(')');
  if (close == std::string::npos || close + 4 > stat.size()) return false;
  std::string_view rest = std::string_view(stat).substr(close + 2);  // "S ppid ..."
  auto sp = rest.find(' ');
  if (sp == std::string_view::npos) return false;
  rest = rest.substr(sp + 1);
  auto end = rest.find(' ');
  auto [p, ec] = std::from_chars(rest.data(), rest.data() + std::min(end, rest.size()), ppid);
  return ec == std::errc();
}

// `pid` and every descendant of it.
std::vector<int64_t> Subtree(int proc, int64_t pid) {
  std::map<int64_t, std::vector<int64_t>> children;
  ForEachEntry(proc, ".", kMaxProcesses + 64, [&](int, std::string_view name) {
    int64_t p = 0, pp = 0;
    if (ParsePid(name, p) && ParentOf(proc, p, pp)) children[pp].push_back(p);
  });
  std::vector<int64_t> out{pid};
  for (size_t i = 0; i < out.size() && out.size() < kMaxProcesses; ++i) {
    auto it = children.find(out[i]);
    if (it == children.end()) continue;
    for (int64_t c : it->second) out.push_back(c);
  }
  return out;
}

// Socket inodes open in these processes ("socket:[123]" fd links).
std::set<uint64_t> SocketInodes(int proc, const std::vector<int64_t>& pids) {
  std::set<uint64_t> out;
  for (int64_t p : pids) {
    ForEachEntry(proc, std::to_string(p) + "/fd", kMaxFdsPerProcess,
                 [&](int dir, std::string_view name) {
                   char link[64];
                   ssize_t n = ::readlinkat(dir, std::string(name).c_str(), link, sizeof link - 1);
                   if (n <= 0) return;
                   std::string_view l(link, static_cast<size_t>(n));
                   if (!l.starts_with("socket:[") || !l.ends_with("]")) return;
                   l = l.substr(8, l.size() - 9);
                   uint64_t ino = 0;
                   auto [q, ec] = std::from_chars(l.data(), l.data() + l.size(), ino);
                   if (ec == std::errc() && q == l.data() + l.size()) out.insert(ino);
                 });
  }
  return out;
}

// Listening ports of /proc/net/tcp{,6} rows whose inode is in `inodes`.
void ListeningPorts(const std::string& table, const std::set<uint64_t>& inodes,
                    std::set<uint16_t>& out) {
  size_t pos = table.find('\n');  // header line
  while (pos != std::string::npos && pos + 1 < table.size()) {
    size_t end = table.find('\n', pos + 1);
    std::string_view line =
        std::string_view(table).substr(pos + 1, end == std::string::npos ? end : end - pos - 1);
    pos = end;
    std::vector<std::string_view> f;
    size_t i = 0;
    while (i < line.size() && f.size() < 10) {
      while (i < line.size() && line[i] == ' ') ++i;
      size_t j = line.find(' ', i);
      if (j == std::string_view::npos) j = line.size();
      if (j > i) f.push_back(line.substr(i, j - i));
      i = j;
    }
    if (f.size() < 10 || f[3] != "0A") continue;  // TCP_LISTEN
    uint64_t ino = 0;
    if (std::from_chars(f[9].data(), f[9].data() + f[9].size(), ino).ec != std::errc() ||
        !inodes.count(ino))
      continue;
    auto colon = f[1].rfind(':');
    if (colon == std::string_view::npos) continue;
    unsigned port = 0;
    std::string_view hex = f[1].substr(colon + 1);
    if (std::from_chars(hex.data(), hex.data() + hex.size(), port, 16).ec != std::errc()) continue;
    if (port > 0 && port <= 65535) out.insert(static_cast<uint16_t>(port));
  }
}

}  // namespace

bool ProcessExists(int proc_fd, int64_t pid) {
  if (pid <= 0) return false;
  auto proc = OpenSandboxProc(proc_fd);
  if (!proc) return false;
  struct stat st {};
  return ::fstatat(proc->get(), std::to_string(pid).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         S_ISDIR(st.st_mode);
}

Result<uint16_t> ListeningPort(int proc_fd, int64_t pid) {
  auto proc = OpenSandboxProc(proc_fd);
  if (!proc) return std::unexpected(proc.error());
  struct stat st {};
  if (pid <= 0 ||
      ::fstatat(proc->get(), std::to_string(pid).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return Fail(
        Error{ESRCH, "process " + std::to_string(pid) + " does not exist (it may have exited)"});
  }
  auto inodes = SocketInodes(proc->get(), Subtree(proc->get(), pid));
  std::set<uint16_t> ports;
  if (!inodes.empty()) {
    // The host's view of the sandbox's network namespace (init's).
    ListeningPorts(ReadSmallFile(proc_fd, "net/tcp", kMaxTableBytes), inodes, ports);
    ListeningPorts(ReadSmallFile(proc_fd, "net/tcp6", kMaxTableBytes), inodes, ports);
  }
  if (ports.empty()) {
    return Fail(
        Error{ENOENT, "process " + std::to_string(pid) + " does not listen on a TCP port (yet)"});
  }
  return *ports.begin();
}

}  // namespace sandboxd::ingress

#include "agent/fs_ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace sandboxd::agent::fs {
namespace {

using nlohmann::json;

constexpr int64_t kMaxSafeInt = 9007199254740991;  // Number.MAX_SAFE_INTEGER
// A readDir reply must fit one control frame (1 MiB) with room to spare.
constexpr size_t kMaxReadDirBytes = 900 * 1024;

#define FS_TRY_ASSIGN(var, expr)                         \
  auto var##_r = (expr);                                 \
  if (!var##_r) return std::unexpected(var##_r.error()); \
  auto var = std::move(*var##_r)

std::unexpected<Error> Os(int err, std::string_view syscall, std::string_view path) {
  return std::unexpected(OsError(err, syscall, path));
}
std::unexpected<Error> Os2(int err, std::string_view syscall, std::string_view a,
                           std::string_view b) {
  return std::unexpected(OsError2(err, syscall, a, b));
}

// d_type of an entry, falling back to lstat when the fs does not report it.
unsigned char EntryType(int dir_fd, const dirent* e) {
  if (e->d_type != DT_UNKNOWN) return e->d_type;
  struct stat st;
  if (fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) return DT_UNKNOWN;
  if (S_ISDIR(st.st_mode)) return DT_DIR;
  if (S_ISREG(st.st_mode)) return DT_REG;
  if (S_ISLNK(st.st_mode)) return DT_LNK;
  return DT_UNKNOWN;
}

bool IsDot(const char* n) { return n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0')); }

// Removes `name` under `parent` and everything below it, never following
// symlinks (a symlink to a directory is unlinked, not descended). Returns 0
// or the first errno. Holds one fd per level of depth.
int RemoveTree(int parent, const char* name) {
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOTDIR || errno == ELOOP) return unlinkat(parent, name, 0) == 0 ? 0 : errno;
    return errno;
  }
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    int err = errno;
    close(fd);
    return err;
  }
  int result = 0;
  while (true) {
    errno = 0;
    dirent* e = readdir(dir);
    if (e == nullptr) {
      if (errno != 0) result = errno;
      break;
    }
    if (IsDot(e->d_name)) continue;
    int err = EntryType(fd, e) == DT_DIR ? RemoveTree(fd, e->d_name)
                                         : (unlinkat(fd, e->d_name, 0) == 0 ? 0 : errno);
    if (err == EISDIR) err = RemoveTree(fd, e->d_name);  // type changed under us
    if (err != 0 && err != ENOENT) {
      result = err;
      break;
    }
  }
  closedir(dir);
  if (result != 0) return result;
  if (unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT) return errno;
  return 0;
}

// Like Rust's create_dir_all (what Deno's recursive mkdir uses).
int MkdirAll(const std::string& path, mode_t mode) {
  if (path.empty()) return ENOENT;
  if (mkdir(path.c_str(), mode) == 0) return 0;
  int err = errno;
  if (err == EEXIST) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) ? 0 : EEXIST;
  }
  if (err != ENOENT) return err;
  std::string parent = path;
  while (parent.size() > 1 && parent.back() == '/') parent.pop_back();
  size_t slash = parent.rfind('/');
  if (slash == std::string::npos) return ENOENT;
  parent.resize(slash == 0 ? 1 : slash);
  if (parent == path) return ENOENT;
  if (int perr = MkdirAll(parent, mode); perr != 0) return perr;
  if (mkdir(path.c_str(), mode) == 0) return 0;
  err = errno;
  if (err == EEXIST) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) ? 0 : EEXIST;
  }
  return err;
}

Result<json> ReadDir(const json& msg, const Cred& cred) {
  FS_TRY_ASSIGN(path, Params(msg).Path("path"));
  int fd = UserOpen(Resolve(cred, path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Os(errno, "readdir", path);
  if (int err = GuardFd(fd); err != 0) {
    close(fd);
    return Os(err, "readdir", path);
  }
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    int err = errno;
    close(fd);
    return Os(err, "readdir", path);
  }
  json out = json::array();
  size_t bytes = 0;
  int err = 0;
  while (true) {
    errno = 0;
    dirent* e = readdir(dir);
    if (e == nullptr) {
      err = errno;
      break;
    }
    if (IsDot(e->d_name)) continue;
    unsigned char t = EntryType(fd, e);
    bytes += strlen(e->d_name) + 80;
    if (bytes > kMaxReadDirBytes) {
      err = E2BIG;
      break;
    }
    out.push_back(json{{"name", e->d_name},
                       {"isFile", t == DT_REG},
                       {"isDirectory", t == DT_DIR},
                       {"isSymlink", t == DT_LNK}});
  }
  closedir(dir);
  if (err == E2BIG) {
    return std::unexpected(Error{E2BIG, "readdir '" + path + "': listing too large for one reply"});
  }
  if (err != 0) return Os(err, "readdir", path);
  return out;
}

Result<json> Remove(const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(path, p.Path("path"));
  FS_TRY_ASSIGN(opts, p.Object("options"));
  FS_TRY_ASSIGN(recursive, opts.Bool("recursive", false));
  std::string abs = Resolve(cred, path);
  struct stat st;
  if (lstat(abs.c_str(), &st) != 0) return Os(errno, "remove", path);
  int err = 0;
  if (!S_ISDIR(st.st_mode)) {
    if (unlink(abs.c_str()) != 0) err = errno;
  } else if (recursive) {
    err = RemoveTree(AT_FDCWD, abs.c_str());
  } else if (rmdir(abs.c_str()) != 0) {
    err = errno;
    if (err == EEXIST) err = ENOTEMPTY;
  }
  if (err != 0) return Os(err, "remove", path);
  return nullptr;
}

Result<json> Mkdir(const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(path, p.Path("path"));
  FS_TRY_ASSIGN(opts, p.Object("options"));
  FS_TRY_ASSIGN(recursive, opts.Bool("recursive", false));
  FS_TRY_ASSIGN(mode, opts.OptInt("mode", 0, 07777));
  mode_t m = static_cast<mode_t>(mode.value_or(0777));
  std::string abs = Resolve(cred, path);
  int err = 0;
  if (recursive) {
    err = MkdirAll(abs, m);
  } else if (mkdir(abs.c_str(), m) != 0) {
    err = errno;
  }
  if (err != 0) return Os(err, "mkdir", path);
  return nullptr;
}

Result<json> Rename(const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(from, p.Path("oldPath"));
  FS_TRY_ASSIGN(to, p.Path("newPath"));
  if (rename(Resolve(cred, from).c_str(), Resolve(cred, to).c_str()) != 0) {
    return Os2(errno, "rename", from, to);
  }
  return nullptr;
}

Result<json> Stat(const json& msg, const Cred& cred, bool follow) {
  FS_TRY_ASSIGN(path, Params(msg).Path("path"));
  struct statx st;
  int fd = OpenGuardedPath(Resolve(cred, path), follow);
  if (fd < 0) return Os(-fd, follow ? "stat" : "lstat", path);
  int err = StatxFd(fd, &st);
  close(fd);
  if (err != 0) return Os(err, follow ? "stat" : "lstat", path);
  return FileInfoJson(st);
}

Result<json> Chmod(const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(path, p.Path("path"));
  FS_TRY_ASSIGN(mode, p.Int("mode", 0, std::numeric_limits<uint32_t>::max()));
  if (chmod(Resolve(cred, path).c_str(), static_cast<mode_t>(mode) & 07777) != 0) {
    return Os(errno, "chmod", path);
  }
  return nullptr;
}

// chown's target ids travel as `owner` / `group` because `uid` / `gid` carry
// the caller's credentials on every agent op (see the report on
// docs/agent-link.md). null (or absent) leaves that id unchanged.
Result<json> Chown(const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(path, p.Path("path"));
  if (!msg.contains("owner") || !msg.contains("group")) {
    return Invalid("chown needs 'owner' and 'group' (number or null)");
  }
  constexpr int64_t kMaxId = std::numeric_limits<uint32_t>::max() - 1;
  FS_TRY_ASSIGN(owner, p.OptInt("owner", 0, kMaxId));
  FS_TRY_ASSIGN(group, p.OptInt("group", 0, kMaxId));
  uid_t u = owner ? static_cast<uid_t>(*owner) : static_cast<uid_t>(-1);
  gid_t g = group ? static_cast<gid_t>(*group) : static_cast<gid_t>(-1);
  if (chown(Resolve(cred, path).c_str(), u, g) != 0) return Os(errno, "chown", path);
  return nullptr;
}

int CopyContents(int in, int out) {
  bool use_cfr = true;
  char buf[128 * 1024];
  while (true) {
    if (use_cfr) {
      ssize_t n = copy_file_range(in, nullptr, out, nullptr, 1u << 30, 0);
      if (n > 0) continue;
      if (n == 0) return 0;
      if (errno == EINTR) continue;
      if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) return errno;
      use_cfr = false;  // falls back to read/write from the current offsets
    }
    ssize_t n = read(in, buf, sizeof buf);
    if (n == 0) return 0;
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf + off, n - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      off += w;
    }
  }
}

Result<json> CopyFile(const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(from, p.Path("fromPath"));
  FS_TRY_ASSIGN(to, p.Path("toPath"));
  // O_NONBLOCK: a FIFO source must not block the open (it is rejected below).
  UniqueFd in(UserOpen(Resolve(cred, from).c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!in) return Os2(errno, "copy", from, to);
  if (int err = GuardFd(in.get()); err != 0) return Os2(err, "copy", from, to);
  fcntl(in.get(), F_SETFL, fcntl(in.get(), F_GETFL) & ~O_NONBLOCK);
  struct stat st;
  if (fstat(in.get(), &st) != 0) return Os2(errno, "copy", from, to);
  if (!S_ISREG(st.st_mode)) {
    return std::unexpected(
        Error{EINVAL,
              "the source path is neither a regular file nor a symlink to a regular file: copy '" +
                  from + "' -> '" + to + "'"});
  }
  mode_t perm = st.st_mode & 07777;
  UniqueFd out(UserOpen(Resolve(cred, to).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, perm));
  if (!out) return Os2(errno, "copy", from, to);
  if (int err = GuardFd(out.get()); err != 0) return Os2(err, "copy", from, to);
  // Like std::fs::copy: the permissions are copied even onto an existing file.
  if (fchmod(out.get(), perm) != 0) return Os2(errno, "copy", from, to);
  if (int err = CopyContents(in.get(), out.get()); err != 0) return Os2(err, "copy", from, to);
  if (close(out.Release()) != 0) return Os2(errno, "copy", from, to);
  return nullptr;
}

Result<json> Link(const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(target, p.Path("target"));
  FS_TRY_ASSIGN(path, p.Path("path"));
  if (link(Resolve(cred, target).c_str(), Resolve(cred, path).c_str()) != 0) {
    return Os2(errno, "link", target, path);
  }
  return nullptr;
}

Result<json> Symlink(const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(target, p.Path("target"));
  FS_TRY_ASSIGN(path, p.Path("path"));
  FS_TRY_ASSIGN(opts, p.Object("options"));
  FS_TRY_ASSIGN(type, opts.OptString("type", 16));  // meaningless on Linux
  (void)type;
  // The target is stored verbatim: a relative target is relative to the
  // link's directory, not to cwd.
  if (symlink(target.c_str(), Resolve(cred, path).c_str()) != 0) {
    return Os2(errno, "symlink", target, path);
  }
  return nullptr;
}

Result<json> ReadLink(const json& msg, const Cred& cred) {
  FS_TRY_ASSIGN(path, Params(msg).Path("path"));
  char buf[kMaxPathBytes + 1];
  int fd = OpenGuardedPath(Resolve(cred, path), /*follow=*/false);
  if (fd < 0) return Os(-fd, "readlink", path);
  ssize_t n = readlinkat(fd, "", buf, sizeof buf);
  int err = errno;
  close(fd);
  if (n < 0) return Os(err == ENOENT ? EINVAL : err, "readlink", path);  // not a symlink
  if (static_cast<size_t>(n) >= sizeof buf) return Os(ENAMETOOLONG, "readlink", path);
  return std::string(buf, n);
}

Result<json> RealPath(const json& msg, const Cred& cred) {
  FS_TRY_ASSIGN(path, Params(msg).Path("path"));
  // What the kernel resolved, read back from the guarded O_PATH fd.
  int fd = OpenGuardedPath(Resolve(cred, path), /*follow=*/true);
  if (fd < 0) return Os(-fd, "realpath", path);
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char buf[kMaxPathBytes + 1];
  ssize_t n = readlink(link, buf, sizeof buf);
  int err = errno;
  close(fd);
  if (n < 0) return Os(err, "realpath", path);
  if (static_cast<size_t>(n) >= sizeof buf) return Os(ENAMETOOLONG, "realpath", path);
  std::string out(buf, static_cast<size_t>(n));
  if (!out.starts_with('/')) return Os(ENOENT, "realpath", path);  // unreachable from our root
  return out;
}

Result<json> Truncate(const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(name, p.Path("name"));
  FS_TRY_ASSIGN(length, p.OptInt("length", 0, kMaxSafeInt));
  if (truncate(Resolve(cred, name).c_str(), length.value_or(0)) != 0) {
    return Os(errno, "truncate", name);
  }
  return nullptr;
}

Result<json> Umask(const json& msg) {
  FS_TRY_ASSIGN(mask, Params(msg).OptInt("mask", 0, 0777));
  // The mask is process-wide (threads share it); Deno's is too.
  if (mask) return static_cast<int>(umask(static_cast<mode_t>(*mask)));
  // Reading it without a set-and-restore window in which a concurrent op
  // would create files with the wrong mask.
  if (FILE* f = fopen("/proc/self/status", "re")) {
    char line[256];
    unsigned value = 0;
    bool found = false;
    while (!found && fgets(line, sizeof line, f) != nullptr) {
      found = sscanf(line, "Umask: %o", &value) == 1;
    }
    fclose(f);
    if (found) return static_cast<int>(value);
  }
  mode_t prev = umask(022);  // no /proc: the racy way
  umask(prev);
  return static_cast<int>(prev);
}

Result<json> Utime(const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(path, p.Path("path"));
  FS_TRY_ASSIGN(atime, DateParam(p, "atime"));
  FS_TRY_ASSIGN(mtime, DateParam(p, "mtime"));
  timespec ts[2] = {atime, mtime};
  if (utimensat(AT_FDCWD, Resolve(cred, path).c_str(), ts, 0) != 0) return Os(errno, "utime", path);
  return nullptr;
}

std::string RandomName() {
  static constexpr char kChars[] = "0123456789abcdef";
  unsigned char raw[6];
  if (getrandom(raw, sizeof raw, 0) != sizeof raw) {
    // Never expected; the retry loop still guarantees uniqueness via EEXIST.
    for (auto& c : raw) c = static_cast<unsigned char>(rand());
  }
  std::string out;
  for (unsigned char c : raw) out += kChars[c & 15];
  return out;
}

Result<json> MakeTemp(const json& msg, const Cred& cred, bool dir) {
  FS_TRY_ASSIGN(opts, Params(msg).Object("options"));
  FS_TRY_ASSIGN(base, opts.OptPath("dir"));
  FS_TRY_ASSIGN(prefix, opts.OptString("prefix", 255));
  FS_TRY_ASSIGN(suffix, opts.OptString("suffix", 255));
  std::string parent = base.value_or("/tmp");
  for (const auto& part : {prefix.value_or(""), suffix.value_or("")}) {
    if (part.find('/') != std::string::npos)
      return Invalid("prefix and suffix must not contain '/'");
  }
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string name = prefix.value_or("") + RandomName() + suffix.value_or("");
    std::string path = parent.empty() ? name : parent + (parent.back() == '/' ? "" : "/") + name;
    std::string abs = Resolve(cred, path);
    if (dir) {
      if (mkdir(abs.c_str(), 0700) == 0) return path;
    } else {
      int fd = UserOpen(abs.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd >= 0) {
        close(fd);
        return path;
      }
    }
    if (errno != EEXIST) return Os(errno, dir ? "mkdtemp" : "mkstemp", path);
  }
  return Os(EEXIST, dir ? "mkdtemp" : "mkstemp", parent);
}

}  // namespace

bool IsPathOp(std::string_view op) {
  for (std::string_view name : {"readDir", "remove", "mkdir", "rename", "stat", "lstat", "chmod",
                                "chown", "copyFile", "link", "symlink", "readLink", "realPath",
                                "truncate", "umask", "utime", "makeTempDir", "makeTempFile"}) {
    if (op == name) return true;
  }
  return false;
}

Result<json> RunPathOp(std::string_view op, const json& msg, const Cred& cred) {
  if (op == "readDir") return ReadDir(msg, cred);
  if (op == "remove") return Remove(msg, cred);
  if (op == "mkdir") return Mkdir(msg, cred);
  if (op == "rename") return Rename(msg, cred);
  if (op == "stat") return Stat(msg, cred, true);
  if (op == "lstat") return Stat(msg, cred, false);
  if (op == "chmod") return Chmod(msg, cred);
  if (op == "chown") return Chown(msg, cred);
  if (op == "copyFile") return CopyFile(msg, cred);
  if (op == "link") return Link(msg, cred);
  if (op == "symlink") return Symlink(msg, cred);
  if (op == "readLink") return ReadLink(msg, cred);
  if (op == "realPath") return RealPath(msg, cred);
  if (op == "truncate") return Truncate(msg, cred);
  if (op == "umask") return Umask(msg);
  if (op == "utime") return Utime(msg, cred);
  if (op == "makeTempDir") return MakeTemp(msg, cred, true);
  if (op == "makeTempFile") return MakeTemp(msg, cred, false);
  return std::unexpected(Error{ENOSYS, "unknown op '" + std::string(op.substr(0, 64)) + "'"});
}

// ---------------------------------------------------------------------------
// File handles

bool IsHandleOp(std::string_view op) {
  for (std::string_view name :
       {"fileRead", "fileWrite", "fileSeek", "fileStat", "fileSync", "fileSyncData", "fileTruncate",
        "fileUtime", "fileLock", "fileUnlock", "fileClose"}) {
    if (op == name) return true;
  }
  return false;
}

size_t FileTable::size() const {
  std::lock_guard lock(mu_);
  return handles_.size();
}

Result<json> FileTable::Open(std::string_view op, const json& msg, const Cred& cred) {
  Params p(msg);
  FS_TRY_ASSIGN(path, p.Path("path"));
  int flags = O_CLOEXEC;
  mode_t mode = 0666;
  if (op == "create") {
    flags |= O_RDWR | O_CREAT | O_TRUNC;
  } else if (!p.Has("options")) {
    flags |= O_RDONLY;  // Deno: no options ⇒ read-only
  } else {
    FS_TRY_ASSIGN(o, p.Object("options"));
    FS_TRY_ASSIGN(read, o.Bool("read", false));
    FS_TRY_ASSIGN(write, o.Bool("write", false));
    FS_TRY_ASSIGN(append, o.Bool("append", false));
    FS_TRY_ASSIGN(trunc, o.Bool("truncate", false));
    FS_TRY_ASSIGN(create, o.Bool("create", false));
    FS_TRY_ASSIGN(create_new, o.Bool("createNew", false));
    FS_TRY_ASSIGN(m, o.OptInt("mode", 0, 07777));
    // The checks of Rust's OpenOptions, which Deno uses.
    if (!read && !write && !append) {
      return Invalid("open '" + path + "': options need at least one of read, write or append");
    }
    if ((create || create_new || trunc) && !write && !append) {
      return Invalid("open '" + path + "': create, createNew and truncate need write or append");
    }
    if (trunc && append)
      return Invalid("open '" + path + "': truncate and append exclude each other");
    bool writes = write || append;
    flags |= read && writes ? O_RDWR : (writes ? O_WRONLY : O_RDONLY);
    if (append) flags |= O_APPEND;
    if (trunc) flags |= O_TRUNC;
    if (create_new) {
      flags |= O_CREAT | O_EXCL;
    } else if (create) {
      flags |= O_CREAT;
    }
    if (m) mode = static_cast<mode_t>(*m);
  }
  {
    std::lock_guard lock(mu_);
    if (handles_.size() >= kMaxHandles) return Os(EMFILE, "open", path);
  }
  UniqueFd fd(UserOpen(Resolve(cred, path).c_str(), flags, mode));
  if (!fd) return Os(errno, "open", path);
  if (int err = GuardFd(fd.get()); err != 0) return Os(err, "open", path);
  auto h = std::make_shared<Handle>();
  h->fd = std::move(fd);
  h->path = path;
  std::lock_guard lock(mu_);
  if (handles_.size() >= kMaxHandles) return Os(EMFILE, "open", path);  // raced
  uint64_t id = next_id_++;
  handles_[id] = std::move(h);
  return json{{"fileHandleId", id}};
}

Result<std::shared_ptr<FileTable::Handle>> FileTable::Get(const json& msg) const {
  FS_TRY_ASSIGN(id, Params(msg).Int("fileHandleId", 0, kMaxSafeInt));
  std::lock_guard lock(mu_);
  auto it = handles_.find(static_cast<uint64_t>(id));
  if (it == handles_.end()) return std::unexpected(Error{EBADF, "Bad resource ID"});
  return it->second;
}

Result<json> FileTable::Run(std::string_view op, const json& msg) {
  Params p(msg);
  if (op == "fileClose") {
    FS_TRY_ASSIGN(id, p.Int("fileHandleId", 0, kMaxSafeInt));
    std::shared_ptr<Handle> h;
    {
      std::lock_guard lock(mu_);
      auto it = handles_.find(static_cast<uint64_t>(id));
      if (it == handles_.end()) return std::unexpected(Error{EBADF, "Bad resource ID"});
      h = std::move(it->second);
      h->closed = true;
      handles_.erase(it);
    }
    // The fd closes when the last in-flight op on it lets go.
    return nullptr;
  }
  FS_TRY_ASSIGN(h, Get(msg));
  int fd = h->fd.get();
  const std::string& path = h->path;
  if (op == "fileRead") {
    FS_TRY_ASSIGN(length, p.Int("length", 0, kMaxSafeInt));
    size_t want = std::min<size_t>(static_cast<size_t>(length), kMaxHandleIo);
    std::string buf(want, '\0');
    ssize_t n;
    {
      std::lock_guard lock(h->io);
      do {
        n = read(fd, buf.data(), want);
      } while (n < 0 && errno == EINTR);
    }
    if (n < 0) return Os(errno, "read", path);
    if (n == 0 && want > 0) return json{{"data", nullptr}};
    buf.resize(n);
    return json{{"data", Base64Encode(buf)}};
  }
  if (op == "fileWrite") {
    const json& data = p.Raw("data");
    if (!data.is_string()) return Invalid("'data' must be a base64 string");
    const auto& text = data.get_ref<const std::string&>();
    if (text.size() > (kMaxHandleIo + 2) / 3 * 4) {
      return Invalid("'data' exceeds " + std::to_string(kMaxHandleIo) + " bytes");
    }
    auto bytes = Base64Decode(text);
    if (!bytes) return Invalid("'data' is not valid base64");
    size_t off = 0;
    std::lock_guard lock(h->io);
    while (off < bytes->size()) {
      ssize_t n = write(fd, bytes->data() + off, bytes->size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (off > 0) break;  // report the partial write
        return Os(errno, "write", path);
      }
      off += n;
    }
    return json{{"bytesWritten", off}};
  }
  if (op == "fileSeek") {
    const json& off = p.Raw("offset");
    int64_t offset;
    if (off.is_string()) {
      // A JS bigint arrives as a decimal string.
      const auto& s = off.get_ref<const std::string&>();
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), offset);
      if (ec != std::errc() || end != s.data() + s.size() || s.empty()) {
        return Invalid("'offset' is not a decimal integer");
      }
    } else {
      FS_TRY_ASSIGN(o, p.Int("offset", -kMaxSafeInt, kMaxSafeInt));
      offset = o;
    }
    FS_TRY_ASSIGN(whence, p.Int("whence", 0, 2));
    int w = whence == 0 ? SEEK_SET : whence == 1 ? SEEK_CUR : SEEK_END;
    std::lock_guard lock(h->io);
    off_t pos = lseek(fd, offset, w);
    if (pos < 0) return Os(errno, "seek", path);
    return json{{"position", pos}};
  }
  if (op == "fileStat") {
    struct statx st;
    if (int err = StatxFd(fd, &st); err != 0) return Os(err, "fstat", path);
    return FileInfoJson(st);
  }
  if (op == "fileSync" || op == "fileSyncData") {
    int r = op == "fileSync" ? fsync(fd) : fdatasync(fd);
    if (r != 0) return Os(errno, op == "fileSync" ? "fsync" : "fdatasync", path);
    return nullptr;
  }
  if (op == "fileTruncate") {
    FS_TRY_ASSIGN(len, p.OptInt("len", 0, kMaxSafeInt));
    if (ftruncate(fd, len.value_or(0)) != 0) return Os(errno, "ftruncate", path);
    return nullptr;
  }
  if (op == "fileUtime") {
    FS_TRY_ASSIGN(atime, DateParam(p, "atime"));
    FS_TRY_ASSIGN(mtime, DateParam(p, "mtime"));
    timespec ts[2] = {atime, mtime};
    if (futimens(fd, ts) != 0) return Os(errno, "futimens", path);
    return nullptr;
  }
  if (op == "fileLock" || op == "fileUnlock") {
    int how = LOCK_UN;
    if (op == "fileLock") {
      FS_TRY_ASSIGN(exclusive, p.Bool("exclusive", false));
      how = exclusive ? LOCK_EX : LOCK_SH;
    }
    if (how == LOCK_UN) {
      if (flock(fd, LOCK_UN) != 0) return Os(errno, "flock", path);
      return nullptr;
    }
    // Waits like a blocking flock (callers give fileLock its own thread),
    // but polls so that closing the handle ends the wait: a blocking flock
    // could hold the thread, and the fd, forever.
    useconds_t backoff = 1000;
    while (flock(fd, how | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) return Os(errno, "flock", path);
      if (h->closed)
        return std::unexpected(Error{EBADF, "flock '" + path + "': the file was closed"});
      usleep(backoff);
      backoff = std::min<useconds_t>(backoff * 2, 20000);
    }
    return nullptr;
  }
  return std::unexpected(Error{ENOSYS, "unknown op '" + std::string(op.substr(0, 64)) + "'"});
}

}  // namespace sandboxd::agent::fs

#include "daemon/isolation/remove_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/fd.h"

namespace sandboxd::isolation {
namespace {

// Recursive removal of a sandbox's directory, written for hostile contents:
// it never follows symlinks (openat O_NOFOLLOW, unlinkat), never crosses into
// another filesystem (a mount point left here would otherwise let us delete
// through it), and copes with arbitrarily deep trees without exhausting the
// daemon's fds or stack: below kMaxDepth, subdirectories are renamed up to the
// top directory and removed in a later pass. Files in upper/ belong to the
// sandbox's uids; we are root, so ownership does not matter.
class TreeRemover {
 public:
  TreeRemover(int top_fd, dev_t dev) : top_fd_(top_fd), dev_(dev) {}

  Status EmptyTop() {
    // Each pass removes up to kMaxDepth levels and lifts what is deeper to
    // the top, so the number of passes is bounded by depth / kMaxDepth.
    for (int pass = 0; pass < 100000; ++pass) {
      lifted_ = false;
      SBX_TRY(Empty(top_fd_, 0));
      if (!lifted_) return {};
    }
    return FailMsg("directory tree too deep");
  }

 private:
  static constexpr int kMaxDepth = 32;

  // Removes everything in the directory `fd` (which is at `depth`).
  Status Empty(int fd, int depth) {
    struct Entry {
      std::string name;
      bool is_dir;
    };
    std::vector<Entry> entries;
    {  // Read the names first so that only one fd per level stays open.
      int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (dup < 0) return FailErrno("dup");
      DIR* dir = ::fdopendir(dup);
      if (!dir) {
        ::close(dup);
        return FailErrno("fdopendir");
      }
      // The dup shares the file offset with `fd`, which an earlier pass over
      // the top directory left at its end.
      ::rewinddir(dir);
      while (dirent* e = ::readdir(dir)) {
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
        bool is_dir = e->d_type == DT_DIR;
        if (e->d_type == DT_UNKNOWN) {
          struct stat est {};
          is_dir = ::fstatat(fd, e->d_name, &est, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(est.st_mode);
        }
        entries.push_back({e->d_name, is_dir});
      }
      ::closedir(dir);
    }
    Status result;
    auto note = [&](Status st) {
      if (!st && result) result = std::move(st);
    };
    for (const auto& e : entries) {
      const char* name = e.name.c_str();
      if (!e.is_dir) {
        if (::unlinkat(fd, name, 0) != 0 && errno != ENOENT) note(FailErrno(e.name));
        continue;
      }
      if (depth >= kMaxDepth) {
        const std::string lifted = ".sbx-deep-" + std::to_string(counter_++);
        if (::renameat(fd, name, top_fd_, lifted.c_str()) != 0) {
          note(FailErrno("rename " + e.name));
        } else {
          lifted_ = true;
        }
        continue;
      }
      UniqueFd sub(::openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub) {
        if (errno == ENOENT) continue;
        if (errno == ENOTDIR || errno == ELOOP) {  // replaced meanwhile
          if (::unlinkat(fd, name, 0) != 0 && errno != ENOENT) note(FailErrno(e.name));
          continue;
        }
        note(FailErrno("open " + e.name));
        continue;
      }
      struct stat st {};
      if (::fstat(sub.get(), &st) != 0) {
        note(FailErrno("stat " + e.name));
        continue;
      }
      if (st.st_dev != dev_) {
        note(FailMsg("refusing to cross mount point at " + e.name));
        continue;
      }
      note(Empty(sub.get(), depth + 1));
      sub.Reset();
      if (::unlinkat(fd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
        note(FailErrno("rmdir " + e.name));
      }
    }
    return result;
  }

  const int top_fd_;
  const dev_t dev_;
  uint64_t counter_ = 0;
  bool lifted_ = false;
};

}  // namespace

Status RemoveTree(const std::string& parent, const std::string& name) {
  UniqueFd pfd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!pfd) return FailErrno("open " + parent);
  UniqueFd top(::openat(pfd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!top) {
    if (errno == ENOENT) return {};
    if (errno == ENOTDIR || errno == ELOOP) {
      if (::unlinkat(pfd.get(), name.c_str(), 0) != 0 && errno != ENOENT) {
        return FailErrno("unlink " + parent + "/" + name);
      }
      return {};
    }
    return FailErrno("open " + parent + "/" + name);
  }
  struct stat pst {
  }, st{};
  if (::fstat(pfd.get(), &pst) != 0 || ::fstat(top.get(), &st) != 0) return FailErrno("stat");
  if (st.st_dev != pst.st_dev) return FailMsg(parent + "/" + name + " is a mount point");
  if (auto r = TreeRemover(top.get(), st.st_dev).EmptyTop(); !r) {
    return Fail(r.error().Wrap("removing " + parent + "/" + name));
  }
  top.Reset();
  if (::unlinkat(pfd.get(), name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return FailErrno("rmdir " + parent + "/" + name);
  }
  return {};
}

}  // namespace sandboxd::isolation

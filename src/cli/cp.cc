// sandbox cp [-q] SRC DST
//
// Copies files and directory trees between the local machine and sandboxes,
// or between two sandboxes. A sandbox side is written ID:PATH.
//   sandbox cp ./dir ID:/app          upload (dir → /app/dir if /app exists)
//   sandbox cp ID:/app/out.txt .      download
//   sandbox cp ID1:/a ID2:/b          sandbox to sandbox: each file is
//                                     downloaded into a pipe that the upload
//                                     reads concurrently (no temp file)
//   sandbox cp 'ID:/app/*.txt' out/   glob on the sandbox side (expandGlob);
//                                     every match goes into directory out/
// Like cp -r: when DST is an existing directory (or ends with '/'), SRC is
// copied into it under its own name; otherwise DST is the copy. Directories
// are copied recursively; symlinks are recreated as symlinks with the same
// target text. A progress line (bytes, rate, ETA) goes to stderr when stderr
// is a terminal and the transfer exceeds 4 MiB.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <thread>

#include "cli/cli.h"
#include "cli/cp_util.h"
#include "client/sandbox.h"

namespace sandboxd::cli {
namespace {

namespace fs = std::filesystem;
using client::Error;
using client::Fail;
using client::Result;
using client::Status;

enum class Kind { kMissing, kFile, kDir, kSymlink, kOther };

// Owns an fd (O_CLOEXEC everywhere).
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

Error LocalError(const std::string& path, int err) {
  Error e = Error::Make(client::kLocalIo, path + ": " + std::strerror(err));
  return e;
}

// Progress over the whole copy. Drawn at most 10 times a second.
class Progress {
 public:
  void Begin(std::uint64_t total, bool quiet) {
    total_ = total;
    enabled_ = !quiet && ShouldShowProgress(::isatty(STDERR_FILENO) == 1, total);
    start_ = std::chrono::steady_clock::now();
  }
  void FileDone(std::uint64_t bytes) {
    base_ += bytes;
    current_ = 0;
    Draw(false);
  }
  void Update(std::uint64_t file_bytes) {
    current_ = file_bytes;
    Draw(false);
  }
  void End() {
    if (!enabled_) return;
    Draw(true);
    std::fputc('\n', stderr);
  }

 private:
  void Draw(bool force) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double elapsed = std::chrono::duration<double>(now - start_).count();
    std::fprintf(stderr, "\r%s\033[K", FormatProgress(base_ + current_, total_, elapsed).c_str());
    std::fflush(stderr);
  }
  bool enabled_ = false;
  std::uint64_t total_ = 0, base_ = 0, current_ = 0;
  std::chrono::steady_clock::time_point start_, last_;
};

// One tree entry below a copy root.
struct Entry {
  std::string rel;  // "" for the root itself
  std::string path;  // full path on its side
  Kind kind = Kind::kOther;
  std::uint64_t size = 0;
};

class Side {
 public:
  virtual ~Side() = default;
  virtual std::string Name(const std::string& path) const = 0;
  // Type after following symlinks; kMissing when it does not exist.
  virtual Result<Kind> Type(const std::string& path) = 0;
  // The tree at `root`, pre-order, root first. Sizes filled when `sizes`.
  virtual Result<std::vector<Entry>> List(const std::string& root, bool sizes) = 0;
  virtual Result<std::string> ReadLink(const std::string& path) = 0;
  virtual Status MakeDir(const std::string& path) = 0;  // ok if it exists
  virtual Status MakeSymlink(const std::string& target, const std::string& path) = 0;
  virtual client::Sandbox* sandbox() { return nullptr; }
};

class LocalSide : public Side {
 public:
  std::string Name(const std::string& path) const override { return path; }
  Result<Kind> Type(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return Kind::kMissing;
      return Fail(LocalError(path, errno));
    }
    return S_ISREG(st.st_mode) ? Kind::kFile : S_ISDIR(st.st_mode) ? Kind::kDir : Kind::kOther;
  }
  Result<std::vector<Entry>> List(const std::string& root, bool) override {
    std::vector<Entry> out;
    std::error_code ec;
    out.push_back({"", root, Kind::kDir, 0});
    fs::recursive_directory_iterator it(root, ec), end;
    if (ec) return Fail(LocalError(root, ec.value()));
    for (; it != end; it.increment(ec)) {
      if (ec) return Fail(LocalError(root, ec.value()));
      Entry e;
      e.path = it->path().string();
      e.rel = it->path().lexically_relative(root).string();
      auto st = it->symlink_status(ec);
      if (ec) return Fail(LocalError(e.path, ec.value()));
      if (fs::is_symlink(st)) {
        e.kind = Kind::kSymlink;
      } else if (fs::is_directory(st)) {
        e.kind = Kind::kDir;
      } else if (fs::is_regular_file(st)) {
        e.kind = Kind::kFile;
        e.size = it->file_size(ec);
        if (ec) return Fail(LocalError(e.path, ec.value()));
      } else {
        e.kind = Kind::kOther;
      }
      out.push_back(std::move(e));
    }
    return out;
  }
  Result<std::string> ReadLink(const std::string& path) override {
    std::error_code ec;
    auto t = fs::read_symlink(path, ec);
    if (ec) return Fail(LocalError(path, ec.value()));
    return t.string();
  }
  Status MakeDir(const std::string& path) override {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) return Fail(LocalError(path, ec.value()));
    return {};
  }
  Status MakeSymlink(const std::string& target, const std::string& path) override {
    std::error_code ec;
    if (fs::is_symlink(fs::symlink_status(path, ec))) fs::remove(path, ec);
    fs::create_symlink(target, path, ec);
    if (ec) return Fail(LocalError(path, ec.value()));
    return {};
  }
};

class RemoteSide : public Side {
 public:
  explicit RemoteSide(client::Sandbox* sb) : sb_(sb) {}
  std::string Name(const std::string& path) const override { return sb_->id() + ":" + path; }
  client::Sandbox* sandbox() override { return sb_; }
  Result<Kind> Type(const std::string& path) override {
    auto st = sb_->Stat(path);
    if (!st) {
      if (st.error().code == "ENOENT") return Kind::kMissing;
      return Fail(st.error());
    }
    return st->is_file ? Kind::kFile : st->is_directory ? Kind::kDir : Kind::kOther;
  }
  Result<std::vector<Entry>> List(const std::string& root, bool sizes) override {
    auto real = sb_->RealPath(root);
    if (!real) return Fail(real.error());
    auto walked = sb_->Walk(*real);
    if (!walked) return Fail(walked.error());
    std::vector<Entry> out;
    for (auto& w : *walked) {
      auto rel = RelativeTo(*real, w.path);
      if (!rel) return Fail(client::kProtocolError, "walk returned " + w.path + " outside " + *real);
      Entry e{*rel, w.path, w.is_symlink ? Kind::kSymlink : w.is_directory ? Kind::kDir
                                                         : w.is_file      ? Kind::kFile
                                                                          : Kind::kOther,
              0};
      if (sizes && e.kind == Kind::kFile) {
        auto st = sb_->Lstat(w.path);
        if (st) e.size = st->size;
      }
      out.push_back(std::move(e));
    }
    return out;
  }
  Result<std::string> ReadLink(const std::string& path) override { return sb_->ReadLink(path); }
  Status MakeDir(const std::string& path) override { return sb_->Mkdir(path, /*recursive=*/true); }
  Status MakeSymlink(const std::string& target, const std::string& path) override {
    auto s = sb_->Symlink(target, path);
    if (!s && s.error().code == "EEXIST") {
      if (auto r = sb_->Remove(path); !r) return r;
      s = sb_->Symlink(target, path);
    }
    return s;
  }

 private:
  client::Sandbox* sb_;
};

// Downloads of files at least this big (when the size is known) read with 4
// handles in parallel (seek-based, so reply order does not matter): ~25%
// faster than one sequential fileRead loop in bench-fs.
constexpr std::uint64_t kParallelDownloadMin = 8ull << 20;

// Copies one regular file from `src` to `dst` (at least one is remote).
// `size` is the source size when known (0 otherwise).
Status CopyFile(Side& src, const std::string& src_path, Side& dst, const std::string& dst_path,
                std::uint64_t size, Progress& progress) {
  auto update = [&progress](std::uint64_t n) { progress.Update(n); };
  std::uint64_t moved = 0;
  if (!src.sandbox()) {  // upload
    Fd in(::open(src_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (in.get() < 0) return Fail(LocalError(src_path, errno));
    auto r = dst.sandbox()->WriteFileFrom(dst_path, in.get(), {}, update);
    if (!r) return Fail(r.error());
    moved = *r;
  } else if (!dst.sandbox()) {  // download
    Fd out(::open(dst_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (out.get() < 0) return Fail(LocalError(dst_path, errno));
    auto r = size >= kParallelDownloadMin ? src.sandbox()->DownloadToParallel(src_path, out.get(), 4, update)
                                          : src.sandbox()->DownloadTo(src_path, out.get(), update);
    if (!r) return Fail(r.error());
    moved = *r;
  } else {  // sandbox to sandbox: the download feeds a pipe the upload reads
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return Fail(LocalError("pipe", errno));
    Fd read_end(p[0]);
    auto write_end = std::make_shared<Fd>(p[1]);
    Result<std::uint64_t> down = 0;
    std::thread downloader([&src, &src_path, &down, write_end] {
      down = src.sandbox()->DownloadTo(src_path, write_end->get());
      write_end->Reset();  // EOF for the upload
    });
    auto up = dst.sandbox()->WriteFileFrom(dst_path, read_end.get(), {}, update);
    read_end.Reset();  // an upload that stopped early unblocks the download (EPIPE)
    downloader.join();
    if (!down) return Fail(down.error());
    if (!up) return Fail(up.error());
    moved = *up;
  }
  progress.FileDone(moved);
  return {};
}

struct Op {
  Kind kind;
  std::string src, dst;
  std::uint64_t size = 0;
};

int RunCp(const GlobalOptions& global, const std::string& src_arg, const std::string& dst_arg, bool quiet) {
  // A sandbox-to-sandbox copy whose upload fails closes the pipe under the
  // download: that must be EPIPE (an error value), not a fatal SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  Location src = ParseLocation(src_arg), dst = ParseLocation(dst_arg);
  if (!src.remote() && !dst.remote()) {
    std::fprintf(stderr, "sandbox: cp: one of SRC and DST must be a sandbox path (ID:PATH)\n");
    return 2;
  }
  if (!src.remote() && HasGlob(src.path)) {
    // The shell expands local globs; a literal one means no match.
    struct stat st;
    if (::stat(src.path.c_str(), &st) != 0) {
      std::fprintf(stderr, "sandbox: cp: %s: No such file or directory\n", src.path.c_str());
      return 1;
    }
  }
  auto c = MakeClient(global);
  if (!c) return ReportError("cp", c.error());
  std::map<std::string, std::unique_ptr<client::Sandbox>> sandboxes;
  auto side_for = [&](const Location& loc) -> Result<std::unique_ptr<Side>> {
    if (!loc.remote()) return std::unique_ptr<Side>(new LocalSide());
    auto& slot = sandboxes[*loc.sandbox];
    if (!slot) {
      auto sb = client::Sandbox::Connect(*c, *loc.sandbox);
      if (!sb) return Fail(sb.error());
      slot = std::make_unique<client::Sandbox>(std::move(*sb));
    }
    return std::unique_ptr<Side>(new RemoteSide(slot.get()));
  };
  auto src_side = side_for(src);
  if (!src_side) return ReportError("cp", src_side.error());
  auto dst_side = side_for(dst);
  if (!dst_side) return ReportError("cp", dst_side.error());
  Side& from = **src_side;
  Side& to = **dst_side;

  // Sources (glob matches, or SRC itself).
  std::vector<std::string> sources;
  bool into_dir = !dst.path.empty() && dst.path.back() == '/';
  if (src.remote() && HasGlob(src.path)) {
    auto matches = from.sandbox()->ExpandGlob(src.path);
    if (!matches) return ReportError("cp: " + from.Name(src.path), matches.error());
    for (auto& m : *matches) sources.push_back(m.path);
    if (sources.empty()) {
      std::fprintf(stderr, "sandbox: cp: %s: no match\n", from.Name(src.path).c_str());
      return 1;
    }
    into_dir = true;
  } else {
    sources.push_back(src.path);
  }

  auto dst_kind = to.Type(dst.path);
  if (!dst_kind) return ReportError("cp: " + to.Name(dst.path), dst_kind.error());
  if (into_dir && *dst_kind == Kind::kMissing) {
    if (auto s = to.MakeDir(dst.path); !s) return ReportError("cp: " + to.Name(dst.path), s.error());
    dst_kind = Kind::kDir;
  }
  if (sources.size() > 1 && *dst_kind != Kind::kDir) {
    std::fprintf(stderr, "sandbox: cp: %s: not a directory\n", to.Name(dst.path).c_str());
    return 1;
  }

  // Plan every operation first (so the progress line knows the total).
  const bool want_sizes = !quiet && ::isatty(STDERR_FILENO) == 1;
  std::vector<Op> ops;
  for (const auto& source : sources) {
    auto kind = from.Type(source);
    if (!kind) return ReportError("cp: " + from.Name(source), kind.error());
    if (*kind == Kind::kMissing) {
      std::fprintf(stderr, "sandbox: cp: %s: No such file or directory\n", from.Name(source).c_str());
      return 1;
    }
    std::string target = *dst_kind == Kind::kDir ? JoinPath(dst.path, BaseName(source)) : dst.path;
    if (*kind == Kind::kFile) {
      std::uint64_t size = 0;
      if (!from.sandbox()) {
        struct stat st;
        if (::stat(source.c_str(), &st) == 0) size = static_cast<std::uint64_t>(st.st_size);
      } else if (auto st = from.sandbox()->Stat(source)) {  // one RPC; sizes the progress and the download
        size = st->size;
      }
      ops.push_back({Kind::kFile, source, target, size});
    } else if (*kind == Kind::kDir) {
      auto entries = from.List(source, want_sizes);
      if (!entries) return ReportError("cp: " + from.Name(source), entries.error());
      for (auto& e : *entries) {
        if (e.kind == Kind::kOther) {
          std::fprintf(stderr, "sandbox: cp: skipping %s (not a file, directory or symlink)\n",
                       from.Name(e.path).c_str());
          continue;
        }
        ops.push_back({e.kind, e.path, e.rel.empty() ? target : JoinPath(target, e.rel), e.size});
      }
    } else {
      std::fprintf(stderr, "sandbox: cp: %s: not a regular file or directory\n", from.Name(source).c_str());
      return 1;
    }
  }

  std::uint64_t total = 0;
  for (const auto& op : ops) total += op.size;
  Progress progress;
  progress.Begin(total, quiet);
  for (const auto& op : ops) {
    Status s;
    switch (op.kind) {
      case Kind::kDir:
        s = to.MakeDir(op.dst);
        break;
      case Kind::kSymlink: {
        auto target = from.ReadLink(op.src);
        s = target ? to.MakeSymlink(*target, op.dst) : Status(std::unexpected(target.error()));
        break;
      }
      case Kind::kFile:
        s = CopyFile(from, op.src, to, op.dst, op.size, progress);
        break;
      default:
        break;
    }
    if (!s) {
      progress.End();
      return ReportError("cp: " + from.Name(op.src) + " -> " + to.Name(op.dst), s.error());
    }
  }
  progress.End();
  for (auto& [id, sb] : sandboxes) (void)sb->Close();
  return 0;
}

}  // namespace

void RegisterCp(CLI::App& app, Context& ctx) {
  struct Args {
    std::string src, dst;
    bool quiet = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("cp", "copy files or trees between local paths and sandboxes (ID:PATH)");
  sub->add_option("src", args->src, "source: local path, ID:PATH, or a glob 'ID:/dir/*.txt'")->required();
  sub->add_option("dst", args->dst, "destination: local path or ID:PATH")->required();
  sub->add_flag("-q,--quiet", args->quiet, "no progress line");
  sub->callback([args, &ctx] { ctx.exit_code = RunCp(ctx.global, args->src, args->dst, args->quiet); });
}

}  // namespace sandboxd::cli

#include "daemon/isolation/microvm/snapshot.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>

#include "daemon/isolation/remove_tree.h"

namespace sandboxd::isolation::microvm {
namespace {

// Bump when what a snapshot contains or how it is restored changes (the
// handshake, the launch modes): old snapshots are then never used.
constexpr const char* kFormat = "sandboxd-vm-snapshot-1";

std::string Sha256Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

bool IsFingerprint(const std::string& name) {
  if (name.size() != 64) return false;
  for (char c : name) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Status MkdirPrivate(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return FailErrno("mkdir " + path);
  return {};
}

Status FsyncPath(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd) return FailErrno("open " + path);
  if (::fsync(fd.get()) != 0) return FailErrno("fsync " + path);
  return {};
}

Status WriteWhole(const std::string& path, const std::string& data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return FailErrno("open " + path);
  for (size_t off = 0; off < data.size();) {
    ssize_t n = ::write(fd.get(), data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return FailErrno("write " + path);
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return FailErrno("fsync " + path);
  return {};
}

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  ::closedir(d);
  return out;
}

}  // namespace

Result<std::string> SnapshotFingerprint(const SnapshotInputs& in) {
  std::string text = kFormat;
  text += '\n';
  for (const auto& f : in.files) {
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0) return FailErrno("snapshot input " + f);
    char line[512];
    std::snprintf(line, sizeof line, "file %" PRIu64 " %" PRIu64 " %" PRId64 " %" PRId64 ".%09ld ",
                  static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                  static_cast<int64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec),
                  st.st_mtim.tv_nsec);
    text += line + f + '\n';
  }
  for (const auto& a : in.qemu_argv) {
    text += "arg ";
    text += a;
    text += '\0';
  }
  text += "\nextra " + in.extra;
  return Sha256Hex(text);
}

Result<UniqueFd> SnapshotStore::Open(const std::string& fingerprint) const {
  const std::string path = dir_ + "/" + fingerprint + "/state";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return FailErrno("open " + path);
  return fd;
}

Result<SnapshotStore::Pending> SnapshotStore::Begin(const std::string& fingerprint) {
  static std::atomic<int> counter{0};
  SBX_TRY(MkdirPrivate(dir_));
  Pending p;
  p.fingerprint = fingerprint;
  p.tmp_dir = dir_ + "/.tmp-" + fingerprint.substr(0, 16) + "-" + std::to_string(::getpid()) + "-" +
              std::to_string(counter++);
  if (::mkdir(p.tmp_dir.c_str(), 0700) != 0) return FailErrno("mkdir " + p.tmp_dir);
  const std::string state = p.tmp_dir + "/state";
  p.fd.Reset(::open(state.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!p.fd) {
    auto e = Error::Errno("open " + state);
    (void)RemoveTree(dir_, p.tmp_dir.substr(dir_.size() + 1));
    return Fail(e);
  }
  return p;
}

Status SnapshotStore::Commit(Pending p, const std::string& meta_json) {
  auto fail = [&](Error e) {
    (void)RemoveTree(dir_, p.tmp_dir.substr(dir_.size() + 1));
    return Fail(e.Wrap("saving the snapshot"));
  };
  if (::fsync(p.fd.get()) != 0) return fail(Error::Errno("fsync state"));
  p.fd.Reset();
  if (auto st = WriteWhole(p.tmp_dir + "/meta.json", meta_json); !st) return fail(st.error());
  const std::string final_dir = dir_ + "/" + p.fingerprint;
  Remove(p.fingerprint);  // a stale one (invalidated) may be there
  if (::rename(p.tmp_dir.c_str(), final_dir.c_str()) != 0)
    return fail(Error::Errno("rename into " + final_dir));
  if (auto st = FsyncPath(dir_, O_RDONLY | O_DIRECTORY); !st) return Fail(st.error());
  RemoveAllBut(p.fingerprint);
  return {};
}

void SnapshotStore::Discard(Pending p) {
  p.fd.Reset();
  if (!p.tmp_dir.empty()) (void)RemoveTree(dir_, p.tmp_dir.substr(dir_.size() + 1));
}

void SnapshotStore::Remove(const std::string& fingerprint) {
  if (!IsFingerprint(fingerprint)) return;
  if (auto st = RemoveTree(dir_, fingerprint); !st) {
    spdlog::warn("removing snapshot {}: {}", fingerprint.substr(0, 12), st.error().message);
  }
}

void SnapshotStore::RemoveAllBut(const std::string& fingerprint) {
  const std::string own_tmp =
      ".tmp-" + fingerprint.substr(0, 16) + "-" + std::to_string(::getpid()) + "-";
  for (const auto& name : Entries(dir_)) {
    if (name == fingerprint || name == "tsc_khz") continue;
    if (name.starts_with(own_tmp)) continue;  // a preparation of this process, still writing
    if (!IsFingerprint(name) && !name.starts_with(".tmp-")) continue;  // not ours to judge
    if (auto st = RemoveTree(dir_, name); !st) {
      spdlog::warn("removing old snapshot {}: {}", name, st.error().message);
    } else {
      spdlog::info("removed snapshot {} (made from other inputs)", name.substr(0, 16));
    }
  }
}

uint64_t SnapshotStore::StableTscKhz(uint64_t measured) {
  const std::string path = dir_ + "/tsc_khz";
  if (UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)); fd) {
    char buf[32] = {};
    ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
    uint64_t stored = n > 0 ? std::strtoull(buf, nullptr, 10) : 0;
    if (stored > 0 && std::fabs(static_cast<double>(stored) - static_cast<double>(measured)) <=
                          static_cast<double>(measured) * 100e-6) {
      return stored;
    }
  }
  if (MkdirPrivate(dir_)) {
    if (auto st = WriteWhole(path, std::to_string(measured) + "\n"); !st) {
      spdlog::warn("snapshots: {}", st.error().message);
    }
  }
  return measured;
}

SnapshotCache::SnapshotCache(SnapshotStore store, std::string fingerprint, PrepareFn prepare,
                             std::function<Clock::time_point()> now)
    : store_(std::move(store)),
      fingerprint_(std::move(fingerprint)),
      prepare_(std::move(prepare)),
      now_(std::move(now)) {}

SnapshotCache::~SnapshotCache() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SnapshotCache::StartPreparing() {
  std::unique_lock lock(mu_);
  StartLocked(lock);
}

void SnapshotCache::StartLocked(std::unique_lock<std::mutex>& lock) {
  (void)lock;
  if (running_ || stopping_) return;
  if (failed_at_ && now_() - *failed_at_ < kRetryAfter) return;
  if (store_.Open(fingerprint_)) return;  // there already
  running_ = true;
  if (thread_.joinable()) thread_.join();  // the previous run has finished (running_ was false)
  thread_ = std::thread([this] { Run(); });
}

void SnapshotCache::Run() {
  auto t0 = Clock::now();
  Status result;
  auto pending = store_.Begin(fingerprint_);
  if (!pending) {
    result = Fail(pending.error());
  } else {
    result = prepare_(pending->fd.get());
    if (result) {
      std::string meta = "{\"fingerprint\":\"" + fingerprint_ +
                         "\",\"created_unix\":" + std::to_string(::time(nullptr)) + "}\n";
      result = store_.Commit(std::move(*pending), meta);
    } else {
      store_.Discard(std::move(*pending));
    }
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::lock_guard lock(mu_);
  running_ = false;
  if (result) {
    ++prepared_;
    failed_at_.reset();
    spdlog::info("microvm snapshot {} prepared in {} ms", fingerprint_.substr(0, 12), ms);
  } else {
    failed_at_ = now_();
    if (!stopping_) {
      spdlog::warn("microvm snapshot: preparing failed after {} ms (cold boots meanwhile): {}", ms,
                   result.error().message);
    }
  }
  cv_.notify_all();
}

std::optional<UniqueFd> SnapshotCache::Acquire(std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  if (auto fd = store_.Open(fingerprint_)) return std::move(*fd);
  StartLocked(lock);
  if (!running_) return std::nullopt;  // failed recently, or stopping
  const auto until = Clock::now() + wait;
  cv_.wait_until(lock, until, [this] { return !running_ || stopping_; });
  if (running_ || stopping_) return std::nullopt;
  if (auto fd = store_.Open(fingerprint_)) return std::move(*fd);
  return std::nullopt;
}

void SnapshotCache::AwaitIdle(std::chrono::milliseconds max) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, max, [this] { return !running_ || stopping_; });
}

void SnapshotCache::Invalidate() {
  std::lock_guard lock(mu_);
  if (running_) return;  // a new one is being made already
  store_.Remove(fingerprint_);
}

int SnapshotCache::prepared_count() const {
  std::lock_guard lock(mu_);
  return prepared_;
}

}  // namespace sandboxd::isolation::microvm

#include "agent/fs_stream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/fd.h"
#include "common/frame.h"

namespace sandboxd::agent::fs {

size_t OutStream::WaitRoom() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return cancelled_ || queued_ < kMaxQueued; });
  if (cancelled_) return 0;
  return kMaxQueued - queued_;
}

bool OutStream::Push(std::string_view data) {
  while (!data.empty()) {
    bool notify = false;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return cancelled_ || queued_ < kMaxQueued; });
      if (cancelled_) return false;
      // At most the room left, but never split a small record (a walk
      // entry) for it: the overshoot is bounded by one record.
      size_t n = data.size() <= link::kMaxDataChunk ? data.size()
                                                    : std::min(data.size(), kMaxQueued - queued_);
      queued_ += n;
      while (n > 0) {
        // Coalesce into the tail chunk so small records do not become one
        // frame each.
        if (queue_.empty() || queue_.back().size() >= link::kMaxDataChunk) queue_.emplace_back();
        std::string& tail = queue_.back();
        size_t k = std::min<size_t>(n, link::kMaxDataChunk - tail.size());
        tail.append(data.substr(0, k));
        data.remove_prefix(k);
        n -= k;
      }
      if (!notified_) notified_ = notify = true;
    }
    if (notify) notify_();
  }
  return true;
}

void OutStream::Cancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
  cv_.notify_all();
}

bool OutStream::cancelled() {
  std::lock_guard lock(mu_);
  return cancelled_;
}

size_t OutStream::Take(std::deque<std::string>& chunks, uint64_t max_bytes, bool* empty) {
  std::lock_guard lock(mu_);
  notified_ = false;
  size_t taken = 0;
  while (!queue_.empty() && taken < max_bytes) {
    std::string& front = queue_.front();
    size_t left = static_cast<size_t>(std::min<uint64_t>(max_bytes - taken, SIZE_MAX));
    if (front.size() <= left) {
      taken += front.size();
      chunks.push_back(std::move(front));
      queue_.pop_front();
    } else {
      chunks.push_back(front.substr(0, left));
      front.erase(0, left);
      taken += left;
    }
  }
  queued_ -= taken;
  *empty = queue_.empty();
  if (taken > 0) cv_.notify_all();
  return taken;
}

std::optional<std::string> InStream::Next() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return cancelled_ || eof_ || !queue_.empty(); });
  if (cancelled_ || queue_.empty()) return std::nullopt;
  std::string out = std::move(queue_.front());
  queue_.pop_front();
  return out;
}

void InStream::Consumed(size_t n) {
  bool notify = false;
  {
    std::lock_guard lock(mu_);
    consumed_ += n;
    if (!notified_) notified_ = notify = true;
  }
  if (notify) notify_();
}

bool InStream::cancelled() {
  std::lock_guard lock(mu_);
  return cancelled_;
}

void InStream::Feed(std::string data) {
  std::lock_guard lock(mu_);
  queue_.push_back(std::move(data));
  cv_.notify_all();
}

void InStream::Eof() {
  std::lock_guard lock(mu_);
  eof_ = true;
  cv_.notify_all();
}

void InStream::Cancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
  cv_.notify_all();
}

uint64_t InStream::TakeConsumed(bool* idle) {
  std::lock_guard lock(mu_);
  notified_ = false;
  *idle = queue_.empty();
  return std::exchange(consumed_, 0);
}

// ---------------------------------------------------------------------------
// readFile / writeFile workers

namespace {

constexpr size_t kReadChunk = 256 * 1024;

std::unexpected<Error> Cancelled(std::string_view what, std::string_view path) {
  return std::unexpected(
      Error{ECANCELED, std::string(what) + " '" + std::string(path) + "': cancelled"});
}

}  // namespace

Result<uint64_t> ReadFileToStream(const nlohmann::json& msg, const Cred& cred, int64_t max_bytes,
                                  OutStream& out) {
  auto path = Params(msg).Path("path");
  if (!path) return std::unexpected(path.error());
  // O_NONBLOCK: opening a FIFO must not wait for a writer (the thread could
  // then not be cancelled); reads are blocking again below.
  UniqueFd fd(UserOpen(Resolve(cred, *path).c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return std::unexpected(OsError(errno, "open", *path));
  if (int err = GuardFd(fd.get()); err != 0) return std::unexpected(OsError(err, "open", *path));
  fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return std::unexpected(OsError(errno, "fstat", *path));
  if (S_ISDIR(st.st_mode)) return std::unexpected(OsError(EISDIR, "read", *path));
  auto too_big = [&] {
    return std::unexpected(Error{EFBIG, "File too large (os error " + std::to_string(EFBIG) +
                                            "): read '" + *path + "' (larger than maxBytes " +
                                            std::to_string(max_bytes) + ")"});
  };
  if (max_bytes >= 0 && S_ISREG(st.st_mode) && st.st_size > max_bytes) return too_big();
  posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  auto buf = std::make_unique<char[]>(kReadChunk);
  uint64_t total = 0;
  while (true) {
    size_t room = out.WaitRoom();
    if (room == 0) return Cancelled("read", *path);
    ssize_t n = read(fd.get(), buf.get(), std::min(room, kReadChunk));
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::unexpected(OsError(errno, "read", *path));
    }
    if (n == 0) return total;
    total += n;
    // The file may grow while we read it (or have no size, like /proc).
    if (max_bytes >= 0 && total > static_cast<uint64_t>(max_bytes)) return too_big();
    if (!out.Push(std::string_view(buf.get(), n))) return Cancelled("read", *path);
  }
}

Status WriteFileFromStream(const nlohmann::json& msg, const Cred& cred, InStream& in) {
  Params p(msg);
  auto path = p.Path("path");
  if (!path) return std::unexpected(path.error());
  auto opts = p.Object("options");
  if (!opts) return std::unexpected(opts.error());
  auto append = opts->Bool("append", false);
  auto create = opts->Bool("create", true);
  auto create_new = opts->Bool("createNew", false);
  auto mode = opts->OptInt("mode", 0, 07777);
  for (const auto* r : {&append, &create, &create_new}) {
    if (!*r) return std::unexpected(r->error());
  }
  if (!mode) return std::unexpected(mode.error());
  int flags = O_WRONLY | O_CLOEXEC | (*append ? O_APPEND : O_TRUNC);
  if (*create_new) {
    flags |= O_CREAT | O_EXCL;
  } else if (*create) {
    flags |= O_CREAT;
  }
  // `mode` applies on creation (WIRE.md §4.0), subject to the umask.
  UniqueFd fd(
      UserOpen(Resolve(cred, *path).c_str(), flags, static_cast<mode_t>(mode->value_or(0666))));
  if (!fd) return std::unexpected(OsError(errno, "open", *path));
  if (int err = GuardFd(fd.get()); err != 0) return std::unexpected(OsError(err, "open", *path));
  while (auto chunk = in.Next()) {
    size_t off = 0;
    while (off < chunk->size()) {
      ssize_t n = write(fd.get(), chunk->data() + off, chunk->size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        return std::unexpected(OsError(errno, "write", *path));
      }
      off += n;
    }
    in.Consumed(chunk->size());
  }
  if (in.cancelled()) return Cancelled("write", *path);
  if (close(fd.Release()) != 0) return std::unexpected(OsError(errno, "close", *path));
  return {};
}

}  // namespace sandboxd::agent::fs

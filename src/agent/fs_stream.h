// Channel streams between a worker thread and the agent's event loop, with
// the link's credit rules (docs/agent-link.md, "Flow control").
//
// OutStream (agent → daemon: readFile, walk, expandGlob): the worker blocks
// in Push() while the stream's queue is full (kMaxQueued, the size of the
// initial window); the loop, which alone tracks the channel's credit, takes
// as many queued bytes as the credit allows with Take() and frames them.
// The worker thus reads ahead by up to one window, and a WINDOW frame is
// answered with DATA at once, without a round trip through the worker.
//
// InStream (daemon → agent: writeFile): the loop queues DATA payloads (which
// the daemon may only send within the window the loop tracks); the worker
// blocks in Next() for them and reports written bytes with Consumed(), which
// the loop turns into WINDOW frames.
//
// Both are shared (shared_ptr) between exactly one worker and the loop, and
// thread-safe. `notify` is called from the worker thread when the loop has
// something to do; it must be cheap and must not call back into the stream.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "agent/fs_util.h"
#include "common/error.h"

namespace sandboxd::agent::fs {

inline constexpr size_t kMaxQueued = 256 * 1024;

class OutStream {
 public:
  explicit OutStream(std::function<void()> notify) : notify_(std::move(notify)) {}

  // Worker side. Blocks until the queue has room and returns how many bytes
  // may be pushed without blocking (≥ 1), or 0 once cancelled.
  size_t WaitRoom();
  // Queues `data` (waiting for room as needed). False once cancelled (the
  // rest is dropped).
  bool Push(std::string_view data);

  // Loop side.
  void Cancel();  // wakes the worker; Push/WaitRoom return false/0 from now on
  // Moves up to `max_bytes` queued bytes out, as ≤ 64 KiB chunks appended to
  // `chunks`; returns the number of bytes. `*empty` tells whether the queue
  // is empty afterwards.
  size_t Take(std::deque<std::string>& chunks, uint64_t max_bytes, bool* empty);
  bool cancelled();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;  // each ≤ kMaxDataChunk
  size_t queued_ = 0;
  bool cancelled_ = false;
  bool notified_ = false;  // a notify is outstanding; the loop has not Take()n yet
  std::function<void()> notify_;
};

class InStream {
 public:
  explicit InStream(std::function<void()> notify) : notify_(std::move(notify)) {}

  // Worker side: the next payload; nullopt at EOF or once cancelled (check
  // cancelled()).
  std::optional<std::string> Next();
  void Consumed(size_t n);
  bool cancelled();

  // Loop side.
  void Feed(std::string data);
  void Eof();
  void Cancel();
  // Bytes consumed since the last call; `idle` is set when nothing is queued.
  uint64_t TakeConsumed(bool* idle);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  bool eof_ = false;
  bool cancelled_ = false;
  uint64_t consumed_ = 0;
  bool notified_ = false;
  std::function<void()> notify_;
};

// The worker side of readFile/readTextFile: opens `path` (params in `msg`),
// fails with EFBIG if it is larger than `max_bytes` (< 0: no limit) before
// sending anything, then pushes its bytes. Returns the size sent; ECANCELED
// once the stream was cancelled.
Result<uint64_t> ReadFileToStream(const nlohmann::json& msg, const Cred& cred, int64_t max_bytes,
                                  OutStream& out);

// The worker side of writeFile/writeTextFile: opens `path` with the
// WriteFileOptions in msg["options"], writes every payload of `in` until
// EOF and closes the file. ECANCELED once the stream was cancelled.
Status WriteFileFromStream(const nlohmann::json& msg, const Cred& cred, InStream& in);

}  // namespace sandboxd::agent::fs

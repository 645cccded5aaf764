// Internal to sbx_client: the connection behind Sandbox/Process, shared by
// sandbox.cc (processes, RPC) and fs.cc (filesystem transfers). Not part of
// the public API.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include "client/sandbox.h"

namespace sandboxd::client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using json = nlohmann::json;

// Next client-allocated stream id (one process-wide counter, WIRE.md §3.1).
std::int64_t NextClientStreamId();

// Shared between the user-facing Process handles and the I/O thread; guarded
// by the owning Connection's mutex (callbacks are immutable after creation).
struct ProcessState {
  std::int64_t pid = 0;
  std::optional<std::int64_t> stdin_id, stdout_id, stderr_id;
  OutputCallback on_stdout, on_stderr;
  bool stdout_done = true, stderr_done = true;
  bool stdin_closed = false;
  bool stdin_cancelled = false;
  std::optional<Result<ProcessStatus>> status;
  std::string stdout_buf, stderr_buf;
};

// One WebSocket connection plus its I/O thread. All members below `mu_` are
// guarded by it; ws_, write queue, read buffer and timer are touched only on
// the I/O thread.
class Connection {
 public:
  using Completion = std::function<void(Result<json>)>;

  static Result<std::shared_ptr<Connection>> Open(const Client& client, const std::string& target,
                                                  const std::vector<std::pair<std::string, std::string>>& headers,
                                                  std::string* sandbox_id);
  ~Connection() { Shutdown(); }

  // Blocking RPC.
  Result<json> Call(std::string_view method, json params);
  // Non-blocking RPC; `done` runs on the I/O thread (or inline if closed).
  void CallAsync(std::string_view method, json params, Completion done);
  // Queues a text frame without waiting; `done` runs on the I/O thread once
  // it was written or failed. Frames go out in call order.
  void SendAsync(std::string text, std::function<void(Status)> done);
  // Routes a server → client stream (walk/expandGlob records) to `sink`, on
  // the I/O thread, including what arrived before; the last call is kEnd or
  // kError (also when the connection closes first... or already closed).
  using StreamSink = std::function<void(const StreamNotification&)>;
  void AttachSink(std::int64_t stream_id, StreamSink sink);
  // True once the server sent $sandbox.stream.cancel for our stream.
  bool OutStreamCancelled(std::int64_t stream_id);
  // Drops the cancel record of a finished outgoing stream.
  void ForgetOutStream(std::int64_t stream_id) {
    std::lock_guard lock(mu_);
    cancelled_out_.erase(stream_id);
  }
  // Queues a text frame; blocks until it was written (or the connection died).
  Status SendAndWait(std::string text);
  // Attaches a spawned process's output streams; runs on the I/O thread so
  // that buffered and new chunks stay in order. Also sends processWait.
  void AttachProcess(std::shared_ptr<ProcessState> proc);
  // Waits until `pred` holds (under the lock) or the deadline passes.
  template <typename Pred>
  bool WaitUntil(Pred pred, std::optional<std::chrono::steady_clock::time_point> deadline) {
    std::unique_lock lock(mu_);
    if (deadline) return cv_.wait_until(lock, *deadline, [&] { return pred(); });
    cv_.wait(lock, [&] { return pred(); });
    return true;
  }
  std::mutex& mu() { return mu_; }
  void Notify() { cv_.notify_all(); }
  bool OnIoThread() const { return std::this_thread::get_id() == io_thread_id_; }
  bool closed() {
    std::lock_guard lock(mu_);
    return closed_;
  }
  Error close_error() {
    std::lock_guard lock(mu_);
    return close_error_;
  }
  // Close handshake, then stop the thread. Idempotent.
  Status Close();
  // Waits for the server to close the socket.
  bool WaitClosed(std::chrono::milliseconds timeout) {
    return WaitUntil([this] { return closed_; }, std::chrono::steady_clock::now() + timeout);
  }

 private:
  struct Slot {
    std::optional<Result<json>> result;
    Completion done;  // when set, called instead of filling `result`
  };
  struct InStream {  // a server → client stream
    std::deque<std::string> buffered;
    bool ended = false;
    bool failed = false;  // ended by $sandbox.stream.error
    std::optional<Error> error;
    std::shared_ptr<ProcessState> owner;
    bool is_stdout = true;
    StreamSink sink;  // generic consumer (AttachSink)
  };
  struct Outgoing {
    std::string text;
    std::function<void(Status)> done;
  };

  Connection() : ws_(ioc_), ping_timer_(ioc_), guard_(asio::make_work_guard(ioc_)) {}

  void Start();
  void Shutdown();
  void Post(std::function<void()> fn) { asio::post(ioc_, std::move(fn)); }
  // I/O thread only:
  void Enqueue(std::string text, std::function<void(Status)> done);
  void WriteNext();
  void ReadNext();
  void ScheduleKeepalive();
  void HandleMessage(std::string_view text);
  void HandleStream(StreamNotification n);
  void Deliver(const std::shared_ptr<ProcessState>& p, bool is_stdout, std::string chunk);
  void FinishStream(const std::shared_ptr<ProcessState>& p, bool is_stdout);
  void MarkClosed(Error why);
  void StartClose();

  asio::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_;
  asio::steady_timer ping_timer_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  beast::flat_buffer read_buf_;
  std::deque<Outgoing> writes_;
  bool writing_ = false;
  bool close_requested_ = false;
  bool close_sent_ = false;
  std::thread thread_;
  std::thread::id io_thread_id_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  Error close_error_;
  std::int64_t next_id_ = 0;
  std::map<std::int64_t, std::shared_ptr<Slot>> pending_;
  std::map<std::int64_t, InStream> in_streams_;
  std::map<std::int64_t, std::weak_ptr<ProcessState>> stdin_owners_;
  std::set<std::int64_t> cancelled_out_;
  std::vector<std::weak_ptr<ProcessState>> processes_;
};

}  // namespace sandboxd::client

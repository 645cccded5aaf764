// Messages from the daemon's event loop to one SSH connection thread, and the
// thread-safe queue that carries them (an eventfd wakes the thread's
// ssh_event loop). The other direction is boost::asio::post onto the loop.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::ssh {

// Loop → connection thread. `chan` is the connection's own channel number.
struct ToSsh {
  enum class Kind {
    kStarted,      // the process runs
    kStartFailed,  // `text`: why it could not be started; `code`: exit status to report
    kOutput,       // `data` from the process (`is_stderr`), credit owed on `agent_channel`
    kOutputEof,    // one of the process's outputs ended (`is_stderr`)
    kStdinAck,     // `n` bytes of stdin left the daemon's queue: send more
    kStdinClosed,  // the process closed its stdin: drop what the client sends
    kExit,         // `code`/`signal`, or `failed` (the sandbox went away first)
    kDisconnect,   // end the connection; `text` says why
  };
  Kind kind;
  uint32_t chan = 0;
  uint32_t agent_channel = 0;
  bool is_stderr = false;
  std::string data;  // kOutput bytes, or the message of kStartFailed/kDisconnect
  uint64_t n = 0;
  int code = 0;
  int signal = 0;
  bool failed = false;
};

// Multi-producer, single-consumer. Thread-safe.
class Mailbox {
 public:
  static Result<std::shared_ptr<Mailbox>> Create();

  // Queues `m` and wakes the consumer. False (and `m` dropped) once closed.
  bool Post(ToSsh m);
  // Consumer: everything queued so far (and clears the wake-up).
  std::deque<ToSsh> Take();
  // No more messages are accepted; queued ones are dropped.
  void Close();
  bool closed() const;
  // Readable while messages are queued.
  int fd() const { return efd_.get(); }

 private:
  explicit Mailbox(UniqueFd efd) : efd_(std::move(efd)) {}
  UniqueFd efd_;
  mutable std::mutex mu_;
  std::deque<ToSsh> q_;
  bool closed_ = false;
};

}  // namespace sandboxd::ssh

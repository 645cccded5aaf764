// The daemon's end of one sandbox's agent link (docs/agent-link.md): control
// calls with replies, events, and flow-controlled byte channels, over one
// non-blocking stream socket. Lives on the daemon's event-loop thread; not
// thread-safe. The agent is untrusted: every frame is bounded by the decoder,
// every control message is type-checked, and a protocol violation closes the
// link (costing that sandbox only).
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "common/fd.h"
#include "common/frame.h"

namespace sandboxd::core {

class AgentLink : public std::enable_shared_from_this<AgentLink> {
 public:
  // Reply to a control call: the `ok` value, or an Error whose code is the
  // agent's errno (ETIMEDOUT when the agent did not answer in time, EPIPE when
  // the link closed first).
  using ReplyFn = std::function<void(Result<nlohmann::json>)>;
  using EventFn = std::function<void(const nlohmann::json&)>;
  using ClosedFn = std::function<void(const Error&)>;

  // Receiving side of a channel the agent writes (process stdout/stderr).
  struct Sink {
    std::function<void(std::string_view)> on_data;  // the receiver must call Consumed() later
    std::function<void()> on_eof;
  };

  AgentLink(boost::asio::io_context& io, UniqueFd fd, std::chrono::milliseconds call_timeout);
  ~AgentLink();

  void Start(EventFn on_event, ClosedFn on_closed);
  void Close();
  bool closed() const { return closed_; }

  // `timeout` 0 uses the link's default; kNoDeadline waits as long as the link
  // lives (streaming transfers and lock waits, which make progress elsewhere).
  static constexpr std::chrono::milliseconds kNoDeadline = std::chrono::milliseconds::max();
  void Call(const std::string& op, nlohmann::json params, ReplyFn reply,
            std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

  uint32_t NewChannel() { return next_channel_++; }

  // Channels the agent writes to us.
  void OpenInbound(uint32_t ch, Sink sink);
  // Returns credit for `n` bytes delivered through on_data (batched internally).
  void Consumed(uint32_t ch, uint32_t n);
  // Tells the agent we no longer want the channel.
  void ResetInbound(uint32_t ch);

  // Channels we write to the agent (process stdin). Data beyond the agent's
  // credit is queued here; PendingBytes() lets the caller stop reading its own
  // source while the queue is long. on_reset fires if the agent abandons it.
  void OpenOutbound(uint32_t ch, std::function<void()> on_reset);
  void Write(uint32_t ch, std::string_view data);
  void WriteEof(uint32_t ch);
  void DropOutbound(uint32_t ch);
  // Abandons a channel we write: queued data is dropped and the agent gets
  // RESET (it discards the transfer, e.g. an aborted writeFile).
  void AbortOutbound(uint32_t ch);
  size_t PendingBytes() const { return pending_out_bytes_; }
  // Bytes queued on one channel we write (0 for unknown channels).
  size_t QueuedBytes(uint32_t ch) const;
  // Called whenever queued outbound data drains below the low-water mark.
  void SetDrainHandler(std::function<void()> fn) { on_drain_ = std::move(fn); }

 private:
  struct Inbound {
    Sink sink;
    uint32_t unacked = 0;    // consumed, credit not yet returned
    uint64_t in_flight = 0;  // received minus credit returned: never above the window
  };
  struct Outbound {
    uint32_t credit = link::kInitialWindow;
    std::deque<std::string> queue;
    bool eof_pending = false;
    std::function<void()> on_reset;
  };
  struct Pending {
    ReplyFn reply;
    std::chrono::steady_clock::time_point deadline;
  };

  void ReadMore();
  void HandleFrame(link::Frame&& f);
  void HandleControl(const std::string& payload);
  void Flush();
  void Send(link::FrameType t, uint32_t ch, std::string_view payload);
  void PumpOutbound(uint32_t ch, Outbound& o);
  void Fail(const Error& e);
  void ArmSweep();

  boost::asio::io_context& io_;
  boost::asio::local::stream_protocol::socket sock_;
  std::chrono::milliseconds call_timeout_;
  boost::asio::steady_timer sweep_;
  link::FrameDecoder decoder_;
  std::array<char, 64 * 1024> rbuf_;
  std::string wbuf_;    // frames waiting to be written
  std::string writing_; // frames being written
  bool write_busy_ = false;
  bool closed_ = false;
  bool sweep_armed_ = false;
  uint64_t next_id_ = 1;
  uint32_t next_channel_ = 1;
  std::map<uint64_t, Pending> pending_;
  std::map<uint32_t, Inbound> inbound_;
  std::map<uint32_t, Outbound> outbound_;
  size_t pending_out_bytes_ = 0;
  EventFn on_event_;
  ClosedFn on_closed_;
  std::function<void()> on_drain_;
};

}  // namespace sandboxd::core

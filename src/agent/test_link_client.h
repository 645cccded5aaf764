// Test helper: runs the real sandbox-agent binary on one end of a socketpair
// (as fd 3, `--link-fd 3`) and plays the daemon's side of the agent link.
//
// Not thread-safe. All waits are bounded by deadlines; nothing here sleeps
// for a fixed time except PumpFor(), which tests use only to check that
// something does NOT happen.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fd.h"
#include "common/frame.h"

namespace sandboxd::agent::testing {

using Ms = std::chrono::milliseconds;
inline constexpr Ms kDefaultTimeout{5000};

class AgentUnderTest {
 public:
  // One channel the agent writes (stdout/stderr) as seen by the client.
  struct OutChannel {
    std::string data;         // first kKeepBytes bytes received
    uint64_t bytes = 0;       // total DATA bytes received
    uint64_t granted = link::kInitialWindow;  // total credit given to the agent
    bool auto_window = true;  // return credit as soon as data arrives
    bool eof = false;
    // If set, receives every DATA payload (and `data` stays empty): for
    // transfers too large to keep.
    std::function<void(std::string_view)> sink;
  };
  static constexpr size_t kKeepBytes = 1 << 20;

  // Starts `binary`; nullptr (with a message on stderr) on failure.
  static std::unique_ptr<AgentUnderTest> Start(const std::string& binary);
  // Plays the daemon's side on an agent link that is already there (e.g. a
  // sandbox backend's TakeLinkFd()); pid() is then -1 and nothing is reaped.
  static std::unique_ptr<AgentUnderTest> Attach(UniqueFd link);
  ~AgentUnderTest();  // closes the link, then kills and reaps the agent if needed

  pid_t pid() const { return pid_; }

  // Queues a frame and writes it out (reading meanwhile, so neither side can
  // deadlock on full socket buffers). False if the link is gone.
  bool Send(link::FrameType type, uint32_t channel, std::string_view payload);
  // Sends a request with a fresh id and returns the id.
  uint64_t Request(nlohmann::json request);
  // The response to `id`, or nullopt after `timeout`.
  std::optional<nlohmann::json> Await(uint64_t id, Ms timeout = kDefaultTimeout);
  // Request + Await; a timeout yields a JSON null.
  nlohmann::json Call(nlohmann::json request, Ms timeout = kDefaultTimeout);

  // Sends `data` on a stdin channel, never exceeding the credit the agent
  // has granted (waiting for WINDOW frames as needed). False on timeout.
  bool SendInput(uint32_t channel, std::string_view data, Ms timeout = kDefaultTimeout);
  // Grants `credit` more bytes on an output channel.
  void Grant(uint32_t channel, uint32_t credit);

  // Processes incoming frames until `cond` holds (true) or `timeout` (false).
  bool WaitUntil(const std::function<bool()>& cond, Ms timeout = kDefaultTimeout);
  // Processes incoming frames for exactly `duration`.
  void PumpFor(Ms duration);

  // Closes the daemon's end of the link.
  void CloseLink();
  // Waits for the agent to exit; its wait status, or nullopt on timeout.
  std::optional<int> WaitExit(Ms timeout = kDefaultTimeout);

  // State collected from the link.
  bool ready = false;
  bool link_closed = false;
  std::string violation;  // non-empty if the agent broke the protocol
  std::map<uint32_t, OutChannel> out;
  std::map<uint32_t, uint64_t> send_credit;  // stdin channels: credit we hold
  std::set<uint32_t> resets;                 // channels the agent RESET
  std::map<int64_t, nlohmann::json> exits;   // exit events by pid
  std::vector<nlohmann::json> events;        // every event, in order
  std::map<uint64_t, nlohmann::json> responses;

  OutChannel& Out(uint32_t channel) { return out[channel]; }
  uint64_t Credit(uint32_t channel);

 private:
  AgentUnderTest() = default;
  // One poll round of at most `timeout_ms`: reads and/or writes. False once
  // the link is closed.
  bool PumpOnce(int timeout_ms);
  // Writes out everything queued (pumping input meanwhile). False on failure.
  bool Flush();
  void HandleFrame(link::Frame& frame);

  pid_t pid_ = -1;
  UniqueFd link_;
  link::FrameDecoder decoder_;
  std::string outbuf_;
  uint64_t next_id_ = 1;
};

struct ProcEntry {
  pid_t pid;
  char state;  // 'R', 'S', 'Z', ...
};
// Processes whose parent is `parent`, from /proc/*/stat.
std::vector<ProcEntry> ChildrenOf(pid_t parent);
// The state of `pid` from /proc/<pid>/stat; nullopt if it does not exist.
std::optional<char> ProcState(pid_t pid);

}  // namespace sandboxd::agent::testing

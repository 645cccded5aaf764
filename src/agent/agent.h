// sandbox-agent: PID 1 of a sandbox. Serves the agent link
// (docs/agent-link.md): spawns processes, moves their stdio over flow-
// controlled channels, reports exits, reaps every child.
//
// Single-threaded epoll loop; every fd is non-blocking and CLOEXEC, so no
// slow pipe reader or writer, and no slow daemon, can stall the loop.
// Filesystem ops run on worker threads (worker_pool.h) with the request's
// filesystem credentials; their results come back to the loop through a
// LoopQueue, and only the loop writes to the link.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agent/fs_ops.h"
#include "agent/fs_stream.h"
#include "agent/fs_util.h"
#include "agent/request.h"
#include "agent/spawn.h"
#include "agent/worker_pool.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/frame.h"

namespace sandboxd::agent {

class Agent {
 public:
  // Takes the link (socket or character device). Changes process-wide state:
  // ignores SIGPIPE, blocks SIGCHLD/SIGTERM/SIGINT/SIGHUP (read through a
  // signalfd) and makes the process a child subreaper, so orphans are reaped
  // even when the agent is not PID 1. Create at most one Agent per process.
  static Result<std::unique_ptr<Agent>> Create(UniqueFd link);

  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;
  ~Agent();

  // `memory_events` is the memory.events file of a cgroup (v2) holding every
  // process the agent starts. When set, the exit event of a process killed by
  // SIGKILL while that cgroup's oom_kill count rose carries "oom": true. The
  // microVM's agent uses it: OOM kills there happen in the guest's kernel,
  // where the daemon cannot count them. Call before Run().
  void SetOomKillCounter(std::string memory_events) { oom_events_ = std::move(memory_events); }

  // Serves the `configureNetwork` op with `fn` (run on the agent's loop; it
  // must be quick). Without it the op answers ENOSYS: only the microVM's
  // agent owns its network stack (a namespace sandbox's link is configured by
  // the host, and its root has no CAP_NET_ADMIN there). Call before Run().
  void SetNetworkConfigurator(std::function<Status(const NetConfigRequest&)> fn) {
    configure_network_ = std::move(fn);
  }

  // Serves the link until it closes or fails, or a termination signal
  // arrives; then SIGKILLs every process group it started (everything, when
  // PID 1), reaps them for a bounded time and returns the exit status.
  int Run();

 private:
  // A stdout/stderr channel: the agent reads the pipe and sends DATA while
  // it holds credit.
  struct OutChannel {
    UniqueFd fd;  // pipe read end, or a dup of a pty master
    uint64_t terminal = 0;  // non-zero for a pty (see Process::terminal)
    uint32_t credit = link::kInitialWindow;
    bool active = false;   // the spawn succeeded and was answered
    bool watched = false;  // in the epoll set (EPOLLIN)
  };
  // A stdin channel: the daemon sends DATA within the credit the agent gave,
  // the agent writes it to the pipe and returns the credit.
  struct InChannel {
    UniqueFd fd;  // pipe write end, or a dup of a pty master
    uint64_t terminal = 0;  // non-zero for a pty: EOF is typed as VEOF
    std::string buf;  // received, not yet written to the pipe (≤ the window)
    size_t off = 0;
    uint32_t window = link::kInitialWindow;  // credit the daemon still holds
    uint32_t unreported = 0;                 // written to the pipe, credit not yet returned
    bool eof = false;                        // daemon sent EOF: close once drained
    bool active = false;
    bool watched = false;
    uint32_t events = 0;
  };
  struct Process {
    uint64_t request_id = 0;            // the spawn request, answered once exec is known
    std::optional<PendingExec> exec;    // set until the exec outcome is known
    bool started = false;               // exec succeeded: report its exit
    uint32_t channels[3] = {0, 0, 0};  // stdin, stdout, stderr
    // With a pty: an agent-wide serial that tags this terminal's channels
    // (channel ids and pids can be reused; these never are), and the
    // master for resize. The master is closed when the process is reaped
    // or the terminal is hung up.
    uint64_t terminal = 0;
    UniqueFd pty_master;
    uint64_t oom_kills_at_spawn = 0;  // see SetOomKillCounter
  };

  // A channel the agent writes from a worker (readFile, walk, expandGlob).
  struct FileOut {
    std::shared_ptr<fs::OutStream> stream;
    uint64_t request_id = 0;
    uint64_t credit = link::kInitialWindow;  // DATA bytes we may still send
    bool reply_size = false;  // readFile: the reply is {"size": N}
    bool reset = false;       // the daemon RESET the channel
    bool done = false;        // the worker finished; `error`/`size` are final
    std::optional<Error> error;
    uint64_t size = 0;
  };
  // A channel the daemon writes to a file on a worker (writeFile).
  struct FileIn {
    std::shared_ptr<fs::InStream> stream;
    uint64_t request_id = 0;
    uint32_t window = link::kInitialWindow;  // credit the daemon still holds
    uint64_t unreported = 0;                 // written, credit not yet returned
    bool eof = false;
    bool reset = false;  // the daemon RESET the channel
  };

  Agent() = default;

  // Event loop pieces.
  void OnLinkReadable();
  void OnSignal();
  void OnOutReadable(uint32_t id);
  void OnInEvent(uint32_t id, uint32_t events);
  void OnExecStatus(pid_t pid);

  void HandleFrame(link::Frame& frame);
  void HandleControl(std::string_view payload);
  void HandleSpawn(uint64_t id, const nlohmann::json& msg);
  void HandleListeningPort(uint64_t id, const nlohmann::json& msg);
  void HandleKill(uint64_t id, const nlohmann::json& msg);
  void HandleResize(uint64_t id, const nlohmann::json& msg);
  // Closes every fd the agent holds on a pty's master, so the kernel hangs
  // the terminal up (SIGHUP to its session); RESETs its stdin channel.
  void HangUp(uint64_t terminal);

  // Filesystem ops (docs/agent-link.md, "Filesystem ops").
  void HandleFs(uint64_t id, const std::string& op, nlohmann::json&& msg);
  void StartFileOut(uint64_t id, const std::string& op, nlohmann::json&& msg, fs::Cred&& cred);
  void StartFileIn(uint64_t id, nlohmann::json&& msg, fs::Cred&& cred);
  Result<uint32_t> ClaimChannel(const nlohmann::json& msg);
  void OnFileOutDone(uint32_t channel, Result<uint64_t> result);
  void PumpFileOuts();
  void OnFileInProgress(uint32_t channel);
  void OnFileInDone(uint32_t channel, Status result);
  bool ChannelInUse(uint32_t channel) const;

  void Reap();
  // Resolves a pending spawn once the child exec'd or failed; `child_gone`
  // when it has been reaped (the verdict must then be readable).
  void ResolveExec(pid_t pid, bool child_gone);
  void Shutdown();

  void FlushIn(uint32_t id);
  void ResetIn(uint32_t id);  // tells the daemon, then closes
  void CloseIn(uint32_t id);
  void CloseOut(uint32_t id);
  void UpdateOutWatch(uint32_t id, OutChannel& ch);
  void UpdateInWatch(uint32_t id, InChannel& ch);

  void FlushLink();
  void UpdateLinkWatch();
  void UpdateCongestion();
  size_t Backlog() const { return out_.size() - out_off_; }

  void Respond(uint64_t id, const nlohmann::json& ok);
  void RespondErr(uint64_t id, const Error& err);
  // False (nothing sent) when the message does not fit one frame.
  bool SendControl(const nlohmann::json& msg);

  bool Watch(int fd, uint64_t key, uint32_t events);
  void Unwatch(int fd);

  UniqueFd link_;
  UniqueFd epoll_;
  UniqueFd signal_fd_;
  link::FrameDecoder decoder_;
  std::string out_;  // encoded frames not yet written to the link
  size_t out_off_ = 0;
  uint32_t link_events_ = 0;
  bool congested_ = false;  // Backlog() over the high-water mark: pipes paused
  bool done_ = false;
  int exit_code_ = 0;

  std::unordered_map<uint32_t, OutChannel> outs_;
  std::unordered_map<uint32_t, InChannel> ins_;
  std::unordered_map<pid_t, Process> procs_;  // spawned and not yet reaped
  uint64_t next_terminal_ = 1;

  std::shared_ptr<LoopQueue> loop_queue_;
  std::unique_ptr<WorkerPool> pool_;
  std::shared_ptr<fs::FileTable> files_ = std::make_shared<fs::FileTable>();
  std::unordered_map<uint32_t, FileOut> file_outs_;
  std::vector<uint32_t> file_outs_ready_;  // have queued bytes or finished
  std::unordered_map<uint32_t, FileIn> file_ins_;
  std::string oom_events_;  // SetOomKillCounter; empty: not reported
  std::function<Status(const NetConfigRequest&)> configure_network_;
  uint64_t OomKills() const;
};

}  // namespace sandboxd::agent

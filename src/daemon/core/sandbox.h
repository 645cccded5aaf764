// One live sandbox as the daemon sees it: its isolation instance, its agent
// link, the sandbox-wide environment, the processes spawned in it and the
// client connections attached to it. Event-loop thread only.
#pragma once

#include <boost/asio.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "daemon/net/network.h"
#include "daemon/core/agent_link.h"
#include "daemon/core/config.h"
#include "daemon/ingress/exposure.h"
#include "daemon/isolation/backend.h"

namespace sandboxd::core {

// How a process ended (sandbox2's "what happened to the program", apart from
// platform failures, which are Errors).
struct ExitStatus {
  int code = 0;    // exit code, or 128+N when killed by signal N
  int signal = 0;  // 0 unless killed by a signal
  bool oom = false;
};

// A client connection attached to a sandbox (a WebSocket session).
class Attachment {
 public:
  virtual ~Attachment() = default;
  // The sandbox is going away: close the connection with this WebSocket code.
  virtual void CloseFromServer(uint16_t code, const std::string& reason) = 0;
};

enum class SandboxState { kRunning, kStopping, kStopped };

class Sandbox : public std::enable_shared_from_this<Sandbox> {
 public:
  Sandbox(boost::asio::io_context& io, std::string id, std::string org, CreateConfig cfg, int64_t created_ms);

  const std::string& id() const { return id_; }
  const std::string& org() const { return org_; }
  const CreateConfig& config() const { return cfg_; }
  // The isolation backend that runs it ("namespaces" | "microvm").
  const std::string& isolation() const { return isolation_; }
  SandboxState state() const { return state_; }
  std::optional<int64_t> stop_at_ms() const { return stop_at_ms_; }
  AgentLink& link() { return *link_; }
  // The sandbox's network (null when the daemon runs without one).
  net::NetworkAttachment* net() const { return net_.get(); }
  bool running() const { return state_ == SandboxState::kRunning; }
  // What exposeHttp exposed; the ingress routes only to running sandboxes,
  // so exposure ends with the sandbox.
  ingress::ExposureSet& exposures() { return exposures_; }
  // Host pid of the sandbox's PID 1 while it runs, else 0.
  pid_t init_pid() const { return instance_ ? instance_->InitPid() : 0; }

  // --- environment (envGet/envSet/envDelete/envToObject) ---
  std::map<std::string, std::string>& env() { return env_; }
  // The environment of a spawned process: sandbox env (unless clear) + extra.
  std::vector<std::string> ProcessEnv(const std::map<std::string, std::string>& extra, bool clear) const;

  // --- processes ---
  void RegisterProcess(int64_t pid, int open_outputs);
  void OutputClosed(int64_t pid);
  using WaitFn = std::function<void(Result<ExitStatus>)>;
  // Calls `fn` once the process has exited and its output streams have ended
  // (or a short grace after exit, for outputs held open by grandchildren).
  // Unknown pid → Error{ESRCH}.
  void Wait(int64_t pid, WaitFn fn);
  // Unknown or already-exited pid → Error{ESRCH}.
  void Kill(int64_t pid, int signo, std::function<void(Status)> done);

  // --- connections ---
  void Attach(Attachment* a);
  void Detach(Attachment* a);
  size_t attachments() const { return attachments_.size(); }

 private:
  friend class Manager;
  struct Proc {
    std::optional<ExitStatus> exit;
    int open_outputs = 0;
    uint64_t oom_base = 0;
    bool done = false;
    std::vector<WaitFn> waiters;
    std::shared_ptr<boost::asio::steady_timer> grace;
  };
  void OnAgentEvent(const nlohmann::json& ev);
  void MaybeFinish(int64_t pid, bool force);
  void FailAllWaiters(const Error& e);

  boost::asio::io_context& io_;
  std::string id_;
  std::string org_;
  CreateConfig cfg_;
  std::string isolation_;
  int64_t created_ms_;
  std::optional<int64_t> stop_at_ms_;
  SandboxState state_ = SandboxState::kRunning;
  std::unique_ptr<isolation::Instance> instance_;
  std::shared_ptr<AgentLink> link_;
  std::unique_ptr<net::NetworkAttachment> net_;
  ingress::ExposureSet exposures_;
  std::map<std::string, std::string> env_;
  std::map<int64_t, Proc> procs_;
  std::deque<int64_t> finished_order_;  // bounds how many exited processes we remember
  std::set<Attachment*> attachments_;
  boost::asio::steady_timer stop_timer_;   // timed sandboxes: fires at stop_at_ms
  boost::asio::steady_timer grace_timer_;  // session sandboxes: fires after the last detach
  std::function<void()> on_last_detach_;
};

}  // namespace sandboxd::core

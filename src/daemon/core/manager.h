// The sandbox registry and lifecycle state machine: create, connect, kill,
// extend, list; session and timed lifetimes. Runs on the daemon's event-loop
// thread; blocking backend work (start, destroy) goes to a small thread pool
// and its results come back to the loop.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "daemon/core/api_error.h"
#include "daemon/core/config.h"
#include "daemon/core/sandbox.h"
#include "daemon/core/store.h"
#include "daemon/isolation/backend.h"
#include "daemon/isolation/select_backend.h"
#include "daemon/net/network.h"

namespace sandboxd::core {

// Where a sandbox with secrets finds the egress proxy's CA: alone, and
// appended to the system bundle (the default bundle of OpenSSL-based tools).
inline constexpr const char* kSandboxCaFile = "/etc/ssl/certs/sandboxd-egress-ca.pem";
inline constexpr const char* kSandboxTrustBundle = "/etc/ssl/certs/ca-certificates.crt";

struct ManagerOptions {
  std::string region = "loc";
  std::chrono::milliseconds session_grace{1000};  // session sandbox lives this long after its last client
  std::chrono::milliseconds agent_call_timeout{10000};
  std::optional<int64_t> max_lifetime_ms;        // cap on a timed sandbox's lifetime (none by default)
  int64_t max_extend_ms = 30 * 60 * 1000;       // one extendTimeout adds at most this much
  int64_t stopped_retention_ms = 60 * 60 * 1000;  // list shows sandboxes stopped within this window
  size_t max_sandboxes = 256;                   // live sandboxes; beyond → 503
};

// Time behind a seam so tests can fake it.
using NowMsFn = std::function<int64_t()>;
int64_t SystemNowMs();

class Manager {
 public:
  // `backends`: every isolation backend of this daemon; a sandbox gets the
  // default one unless its create config names another (CreateConfig::isolation).
  Manager(boost::asio::io_context& io, Store& store, isolation::BackendSet backends, ManagerOptions opts,
          NowMsFn now = SystemNowMs);
  ~Manager();

  const ManagerOptions& options() const { return opts_; }
  ConfigLimits Limits() const;

  using CreateFn = std::function<void(ApiResult<std::shared_ptr<Sandbox>>)>;
  void Create(const std::string& org, CreateConfig cfg, CreateFn done);

  // A running sandbox of `org`; 404 for unknown, stopped or foreign ids.
  ApiResult<std::shared_ptr<Sandbox>> FindRunning(const std::string& org, const std::string& id);
  // A running sandbox of any org, or null: for the ingress, which routes by
  // sandbox id alone (an exposed URL is public, WIRE.md §5.1).
  std::shared_ptr<Sandbox> FindRunningAnyOrg(const std::string& id) const;

  // Starts stopping the sandbox (clients are disconnected at once; teardown
  // continues in the background). Unknown → 404; already stopped → ok.
  ApiResult<void> Kill(const std::string& org, const std::string& id, const std::string& reason);

  // Moves a timed sandbox's deadline to `stop_at_ms`, clamped to at most
  // max_extend_ms past the current deadline. Returns the deadline granted.
  ApiResult<int64_t> Extend(const std::string& org, const std::string& id, int64_t stop_at_ms);

  ApiResult<ListPage> List(ListQuery q);

  // Replaces a running sandbox's allowNet list (effective for new
  // connections at once). 400 for a bad pattern, 409 without networking.
  ApiResult<std::vector<std::string>> SetAllowNet(const std::string& org, const std::string& id,
                                                  const std::vector<std::string>& allow_net);

  // Outbound networking (null: sandboxes get only loopback). Set before the
  // first Create; not owned.
  void SetNetwork(net::NetworkService* net) { net_ = net; }

  // Stops every sandbox; `done` runs on the loop once all are torn down.
  void Shutdown(std::function<void()> done);

  size_t live() const { return live_.size(); }

 private:
  void StartStop(const std::shared_ptr<Sandbox>& sb, const std::string& reason, bool failed);
  // Pool thread: the sandbox's CA (if it has secrets), policy and network.
  Result<std::unique_ptr<net::NetworkAttachment>> AttachNetwork(isolation::Instance& inst,
                                                                const std::shared_ptr<Sandbox>& sb,
                                                                std::vector<net::SecretBinding> bindings,
                                                                const std::vector<std::string>& secret_hosts);
  void ConfigureGuestNetwork(const std::shared_ptr<Sandbox>& sb, CreateFn done);
  void HandOut(const std::shared_ptr<Sandbox>& sb, CreateFn done);
  void InstallTrust(const std::shared_ptr<Sandbox>& sb, CreateFn done);
  void ArmStopTimer(const std::shared_ptr<Sandbox>& sb);

  boost::asio::io_context& io_;
  Store& store_;
  isolation::BackendSet backends_;
  net::NetworkService* net_ = nullptr;
  ManagerOptions opts_;
  NowMsFn now_;
  boost::asio::thread_pool pool_{2};
  std::map<std::string, std::shared_ptr<Sandbox>> live_;  // running or stopping
  size_t creating_ = 0;
  size_t destroying_ = 0;
  bool shutting_down_ = false;
  std::function<void()> on_all_destroyed_;
};

}  // namespace sandboxd::core

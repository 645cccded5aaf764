// The daemon's SSH server (libssh): `exposeSsh` hands out a random username
// bound to one sandbox; a client that logs in with it gets session channels
// whose shells, commands and sftp subsystem run inside that sandbox through
// its agent. No sshd runs in the sandbox.
//
// Threading: the listener, the username registry and every Bridge live on
// the daemon's event loop; each accepted connection is served on a thread of
// its own (libssh sessions are single-threaded, and a slow or hostile client
// then stalls nobody else). Connection threads reach the loop only through
// boost::asio::post and Resolve(); the loop reaches them through Mailboxes.
#pragma once

#include <libssh/server.h>

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/fd.h"
#include "daemon/core/api_error.h"
#include "daemon/core/manager.h"
#include "daemon/ssh/bridge.h"
#include "daemon/ssh/host_key.h"
#include "daemon/ssh/mailbox.h"
#include "daemon/ssh/user_registry.h"

namespace sandboxd::ssh {

struct GatewayOptions {
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 0;  // 0 picks a free port
  std::string hostname;      // what exposeSsh reports (default: the listen host)
  std::string host_key_path;
  size_t max_connections = 256;                   // beyond: accepted and closed at once
  std::chrono::milliseconds login_grace{30'000};  // key exchange + authentication
};

class Gateway {
 public:
  // Event-loop thread. Loads (or creates) the host key and starts listening.
  static Result<std::unique_ptr<Gateway>> Start(boost::asio::io_context& io, core::Manager& mgr,
                                                GatewayOptions opts);
  // Joins the connection threads: call after the event loop has stopped
  // running (Stop() first ends every connection).
  ~Gateway();

  boost::asio::ip::tcp::endpoint endpoint() const { return endpoint_; }
  const std::string& hostname() const { return opts_.hostname; }

  // POST /api/v3/sandbox/{id}/expose/ssh: {hostname, username, port} for a
  // running sandbox of `org`. Event-loop thread.
  core::ApiResult<nlohmann::json> Expose(const std::string& org, const std::string& id);

  // Stops accepting and ends every connection. Event-loop thread; idempotent.
  void Stop();

  // --- for connection threads ---
  struct Login {
    std::shared_ptr<Bridge> bridge;  // set when the username names a running sandbox
    std::string refusal;             // why not, for the client
  };
  // Any thread but the loop's: asks the loop whom `username` names and, if
  // it is a running sandbox, attaches a new Bridge to it. Blocks (bounded)
  // for the loop's answer.
  Login Resolve(const std::string& username, std::shared_ptr<Mailbox> mailbox,
                const std::string& peer);
  boost::asio::io_context& io() { return io_; }
  const GatewayOptions& options() const { return opts_; }

 private:
  Gateway(boost::asio::io_context& io, core::Manager& mgr, GatewayOptions opts);
  Status Listen();
  void AcceptNext();
  void Serve(boost::asio::ip::tcp::socket socket);
  void ServeThread(int fd, std::string peer, std::shared_ptr<Mailbox> mailbox);
  void ReapWorkers(bool all);
  Login ResolveOnLoop(const std::string& username, const std::shared_ptr<Mailbox>& mailbox,
                      const std::string& peer);

  boost::asio::io_context& io_;
  core::Manager& mgr_;
  GatewayOptions opts_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ip::tcp::endpoint endpoint_;
  ssh_bind bind_ = nullptr;
  std::mutex bind_mu_;  // ssh_bind_accept_fd reads the bind's settings
  UserRegistry users_;  // loop only

  struct Worker {
    std::thread thread;
    std::shared_ptr<Mailbox> mailbox;
    std::shared_ptr<std::atomic<bool>> done;
    UniqueFd socket;  // our own duplicate: shutdown() ends a connection stuck in a blocking step
  };
  std::vector<Worker> workers_;  // loop (and the destructor) only

  // Resolve() hand-off between connection threads and the loop.
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
};

}  // namespace sandboxd::ssh

// The event-loop half of one SSH connection: it is attached to the sandbox
// (a live SSH connection keeps a "session" sandbox alive, like a WebSocket),
// runs each session channel's process through the agent and moves bytes
// between the agent link and the connection thread's Mailbox.
//
// Threading: every method runs on the daemon's event loop. The connection
// thread calls them only through boost::asio::post. The last reference must
// be dropped on the loop too (the connection thread hands its reference back
// with a posted Close()).
#pragma once

#include <boost/asio.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/core/sandbox.h"
#include "daemon/ssh/mailbox.h"

namespace sandboxd::ssh {

struct PtySpec {
  std::string term = "xterm-256color";
  int rows = 24;
  int cols = 80;
};

// What a session channel asked to run (RFC 4254 §6.5).
struct RunSpec {
  enum class Kind { kShell, kExec, kSftp };
  Kind kind = Kind::kShell;
  std::string command;  // kExec
  std::optional<PtySpec> pty;
  std::map<std::string, std::string> env;  // accepted `env` requests
};

// Where the sftp subsystem's server lives in the sandbox image (Debian's
// openssh-sftp-server; it is a plain stdin/stdout program, not a daemon).
inline constexpr const char* kSftpServer = "/usr/lib/openssh/sftp-server";

// The argv a RunSpec becomes: the login shell for `shell`, `shell -c CMD` for
// exec, sftp-server for the subsystem.
std::vector<std::string> ArgvFor(const RunSpec& spec, const std::string& shell);

class Bridge : public std::enable_shared_from_this<Bridge>, public core::Attachment {
 public:
  Bridge(boost::asio::io_context& io, std::shared_ptr<core::Sandbox> sb,
         std::shared_ptr<Mailbox> mailbox, std::string peer);
  ~Bridge() override;

  const std::string& sandbox_id() const { return sb_->id(); }

  // Attaches to the sandbox. False if it stopped meanwhile.
  bool Attach();

  // Connection thread → loop.
  void Start(uint32_t chan, RunSpec spec);
  void StdinData(uint32_t chan, std::string data);
  void StdinEof(uint32_t chan);
  void Resize(uint32_t chan, int rows, int cols);
  void Signal(uint32_t chan, int signo);
  // Returns credit for output the connection has handed to libssh.
  void OutputConsumed(uint32_t agent_channel, uint32_t n);
  // The client closed the channel (or the connection thread gave up on it):
  // outputs are reset (a pty is hung up: SIGHUP), stdin ends.
  void ChannelClosed(uint32_t chan);
  // The connection is gone: every channel closes and the sandbox is detached.
  void Close();

  // core::Attachment: the sandbox is stopping.
  void CloseFromServer(uint16_t code, const std::string& reason) override;

 private:
  struct Proc {
    uint32_t out_ch = 0, err_ch = 0, in_ch = 0;
    int64_t pid = 0;
    bool spawned = false;
    bool closed = false;        // ChannelClosed seen
    bool stdin_open = false;    // OpenOutbound done and neither EOF nor reset yet
    bool stdin_eof = false;     // the client ended stdin
    std::string pending_stdin;  // before the process exists
    uint64_t unacked = 0;       // stdin bytes not yet acknowledged to the connection
    std::optional<std::pair<int, int>> pending_size;  // window-change before spawn
    bool pty = false;
    std::shared_ptr<boost::asio::steady_timer> ack_timer;
  };

  void Post(ToSsh m);
  void AckStdin(uint32_t chan);
  void ReleaseProc(uint32_t chan, Proc& p);

  boost::asio::io_context& io_;
  std::shared_ptr<core::Sandbox> sb_;
  std::shared_ptr<Mailbox> mailbox_;
  std::string peer_;
  bool attached_ = false;
  bool closed_ = false;
  std::map<uint32_t, Proc> procs_;
};

}  // namespace sandboxd::ssh

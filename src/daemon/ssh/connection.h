// The connection-thread half of one SSH connection: key exchange,
// authentication (the username is the credential), and the session channels
// (pty-req, shell, exec, subsystem sftp, window-change, signal, env, EOF,
// exit-status/exit-signal), driven by libssh's event API. Everything that
// touches the sandbox goes to the connection's Bridge on the event loop.
//
// Flow control, both ways:
//  - sandbox → client: output is written only as far as the client's channel
//    window reaches; the agent gets its credit back (Bridge::OutputConsumed)
//    only once libssh took the bytes, so at most the agent's window per
//    output is buffered here.
//  - client → sandbox: at most kStdinInFlight bytes per channel are on their
//    way to the agent; beyond that the data callback leaves bytes in libssh's
//    channel buffer, which stops it from growing the client's window.
//
// Not thread-safe: one thread runs Run() from start to end.
#pragma once

#include <libssh/callbacks.h>
#include <libssh/libssh.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "daemon/ssh/bridge.h"
#include "daemon/ssh/mailbox.h"

namespace sandboxd::ssh {

class Gateway;

// SSH signal names (RFC 4254 §6.10, without "SIG") ↔ Linux numbers.
std::optional<int> SignalFromSsh(std::string_view name);
std::string SshSignalName(int signo);  // "" when SSH has no name for it
// A pty-req's size and terminal type, made acceptable to the agent.
PtySpec NormalizePty(const char* term, int cols, int rows);

class Connection {
 public:
  static constexpr uint64_t kStdinInFlight = 1 << 20;
  static constexpr size_t kMaxChannels = 10;
  static constexpr size_t kMaxEnv = 64;

  // Takes ownership of `session` (already bound to the accepted socket).
  Connection(Gateway& gw, ssh_session session, std::shared_ptr<Mailbox> mailbox, std::string peer);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Serves the connection until it ends.
  void Run();

 private:
  struct Chunk {
    std::string data;
    size_t off = 0;
    bool is_stderr = false;
    uint32_t agent_channel = 0;
  };
  struct Chan {
    Connection* conn = nullptr;
    uint32_t id = 0;
    ssh_channel ch = nullptr;
    ssh_channel_callbacks_struct cb{};
    std::optional<PtySpec> pty;
    std::map<std::string, std::string> env;
    bool requested = false;  // a shell/exec/subsystem was accepted
    // sandbox → client
    std::deque<Chunk> outq;
    int outputs_open = 0;
    bool exited = false;
    bool exit_failed = false;
    int exit_code = 0;
    int exit_signal = 0;
    bool eof_sent = false;
    bool close_sent = false;
    bool pumping = false;
    // client → sandbox
    uint64_t stdin_in_flight = 0;
    uint32_t unread = 0;  // bytes libssh holds for us that we did not take yet
    bool client_eof = false;
    bool eof_forwarded = false;
    bool stdin_closed = false;
    bool remote_closed = false;
  };

  // Returns true once authenticated (or false when the connection should end).
  bool Setup();
  void Loop();
  void Teardown();

  int Authenticate(const char* user);
  ssh_channel OpenChannel();
  void SendBanner(const std::string& text);
  void RequestDisconnect(const std::string& reason);

  Chan* Find(uint32_t id);
  int Run(Chan& c, RunSpec spec);
  int OnData(Chan& c, const char* data, uint32_t len, int is_stderr);
  void OnClientEof(Chan& c);
  void OnClientClose(Chan& c);
  void ForwardEof(Chan& c);
  void ResumeStdin(Chan& c);
  void DiscardUnread(Chan& c);

  void OnMailbox();
  void Handle(ToSsh& m);
  void Pump(Chan& c);
  void TryFinish(Chan& c);
  void CloseChannel(Chan& c, const std::string& message);
  void DropOutput(Chan& c);
  void FreeDeadChannels();

  // Posting to the Bridge on the event loop.
  template <typename Fn>
  void ToLoop(Fn fn);

  // libssh trampolines.
  static int CbAuthNone(ssh_session, const char* user, void* ud);
  static int CbAuthPassword(ssh_session, const char* user, const char* password, void* ud);
  static int CbAuthPubkey(ssh_session, const char* user, ssh_key key, char state, void* ud);
  static ssh_channel CbChannelOpen(ssh_session, void* ud);
  static int CbMessage(ssh_session, ssh_message msg, void* ud);
  static int CbMailboxFd(socket_t fd, int revents, void* ud);
  static int CbData(ssh_session, ssh_channel, void* data, uint32_t len, int is_stderr, void* ud);
  static void CbEof(ssh_session, ssh_channel, void* ud);
  static void CbClose(ssh_session, ssh_channel, void* ud);
  static void CbSignal(ssh_session, ssh_channel, const char* signal, void* ud);
  static int CbPty(ssh_session, ssh_channel, const char* term, int cols, int rows, int px, int py,
                   void* ud);
  static int CbShell(ssh_session, ssh_channel, void* ud);
  static int CbExec(ssh_session, ssh_channel, const char* command, void* ud);
  static int CbSubsystem(ssh_session, ssh_channel, const char* subsystem, void* ud);
  static int CbWindowChange(ssh_session, ssh_channel, int cols, int rows, int px, int py, void* ud);
  static int CbEnv(ssh_session, ssh_channel, const char* name, const char* value, void* ud);
  static int CbWriteWontBlock(ssh_session, ssh_channel, uint32_t bytes, void* ud);

  Gateway& gw_;
  ssh_session session_;
  ssh_event event_ = nullptr;
  std::shared_ptr<Mailbox> mailbox_;
  std::string peer_;
  ssh_server_callbacks_struct server_cb_{};
  std::shared_ptr<Bridge> bridge_;  // set once authenticated; released on the loop
  std::string username_;
  bool refused_ = false;
  bool disconnect_ = false;
  std::string disconnect_reason_;
  std::chrono::steady_clock::time_point login_deadline_;
  uint32_t next_chan_ = 1;
  std::map<uint32_t, std::unique_ptr<Chan>> chans_;
};

}  // namespace sandboxd::ssh

#include "daemon/ssh/connection.h"

#include <libssh/server.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/signals.h"
#include "daemon/ssh/gateway.h"

namespace sandboxd::ssh {

namespace {
constexpr uint32_t kReadChunk = 64 * 1024;
constexpr int kLoginPollMs = 200;
constexpr int kIdlePollMs = 1000;
constexpr int kFlushOnCloseMs = 2000;
constexpr const char* kDefaultTerm = "xterm-256color";

bool IsLocaleVariable(std::string_view name) { return name == "LANG" || name.starts_with("LC_"); }
}  // namespace

std::optional<int> SignalFromSsh(std::string_view name) {
  if (name.empty() || name.size() > 16) return std::nullopt;
  return SignalNumber("SIG" + std::string(name));
}

std::string SshSignalName(int signo) {
  std::string n = SignalName(signo);
  return n.starts_with("SIG") ? n.substr(3) : std::string();
}

PtySpec NormalizePty(const char* term, int cols, int rows) {
  PtySpec p;
  std::string_view t = term ? std::string_view(term) : std::string_view();
  bool printable = !t.empty() && t.size() <= 128 &&
                   std::all_of(t.begin(), t.end(), [](char c) { return c > ' ' && c < 127; });
  p.term = printable ? std::string(t) : kDefaultTerm;
  // A client without a terminal of its own (ssh -tt from a pipe) sends 0×0.
  p.cols = cols <= 0 ? 80 : std::min(cols, 10000);
  p.rows = rows <= 0 ? 24 : std::min(rows, 10000);
  return p;
}

Connection::Connection(Gateway& gw, ssh_session session, std::shared_ptr<Mailbox> mailbox,
                       std::string peer)
    : gw_(gw), session_(session), mailbox_(std::move(mailbox)), peer_(std::move(peer)) {}

Connection::~Connection() {
  // ssh_free frees the channels; our callback structs must outlive that.
  ssh_free(session_);
  chans_.clear();
}

template <typename Fn>
void Connection::ToLoop(Fn fn) {
  boost::asio::post(gw_.io(), std::move(fn));
}

void Connection::Run() {
  if (Setup()) Loop();
  Teardown();
}

bool Connection::Setup() {
  login_deadline_ = std::chrono::steady_clock::now() + gw_.options().login_grace;
  long timeout_s = std::max<long>(
      1, std::chrono::duration_cast<std::chrono::seconds>(gw_.options().login_grace).count());
  ssh_options_set(session_, SSH_OPTIONS_TIMEOUT, &timeout_s);

  ssh_callbacks_init(&server_cb_);
  server_cb_.userdata = this;
  server_cb_.auth_none_function = CbAuthNone;
  server_cb_.auth_password_function = CbAuthPassword;
  server_cb_.auth_pubkey_function = CbAuthPubkey;
  server_cb_.channel_open_request_session_function = CbChannelOpen;
  ssh_set_server_callbacks(session_, &server_cb_);
  // Everything without a callback (port forwarding, x11, keyboard-interactive,
  // global requests) gets the default answer: refused.
  ssh_set_message_callback(session_, CbMessage, this);
  ssh_set_auth_methods(session_,
                       SSH_AUTH_METHOD_NONE | SSH_AUTH_METHOD_PASSWORD | SSH_AUTH_METHOD_PUBLICKEY);

  // Blocking, bounded by SSH_OPTIONS_TIMEOUT: this thread serves only this client.
  if (ssh_handle_key_exchange(session_) != SSH_OK) {
    spdlog::debug("ssh {}: key exchange failed: {}", peer_, ssh_get_error(session_));
    return false;
  }
  ssh_set_blocking(session_, 0);
  event_ = ssh_event_new();
  if (event_ == nullptr || ssh_event_add_session(event_, session_) != SSH_OK ||
      ssh_event_add_fd(event_, mailbox_->fd(), POLLIN, CbMailboxFd, this) != SSH_OK) {
    spdlog::error("ssh {}: cannot set up the event loop", peer_);
    return false;
  }
  return true;
}

void Connection::Loop() {
  int errors = 0;
  for (;;) {
    // Before login the deadline needs a look now and then; after it, the
    // loop wakes for the client or the mailbox.
    int rc = ssh_event_dopoll(event_, bridge_ ? kIdlePollMs : kLoginPollMs);
    int st = ssh_get_status(session_);
    if ((st & (SSH_CLOSED | SSH_CLOSED_ERROR)) || !ssh_is_connected(session_)) break;
    if (rc == SSH_ERROR && ++errors > 100) {
      spdlog::warn("ssh {}: event loop keeps failing: {}", peer_, ssh_get_error(session_));
      break;
    }
    if (rc != SSH_ERROR) errors = 0;
    if (!bridge_ && !disconnect_ && std::chrono::steady_clock::now() > login_deadline_) {
      RequestDisconnect("login timed out");
    }
    if (disconnect_) break;
    // Window adjustments are also picked up here, in case libssh reported
    // them without the write-will-not-block callback.
    for (auto& [id, c] : chans_) {
      if (!c->outq.empty() && !c->close_sent) Pump(*c);
    }
    FreeDeadChannels();
  }
}

void Connection::Teardown() {
  mailbox_->Close();
  if (event_) ssh_event_remove_fd(event_, mailbox_->fd());
  if (bridge_) {
    // The loop owns the bridge's last reference from here on.
    ToLoop([b = std::move(bridge_)] { b->Close(); });
  }
  if (disconnect_ && ssh_is_connected(session_)) {
    ssh_blocking_flush(session_,
                       kFlushOnCloseMs);  // what we still owe the client (stderr notes, CLOSE)
  }
  // ssh_disconnect frees the channels: no callback may point at us after it.
  for (auto& [id, c] : chans_) ssh_remove_channel_callbacks(c->ch, &c->cb);
  if (ssh_is_connected(session_)) {
    if (disconnect_) ssh_session_set_disconnect_message(session_, disconnect_reason_.c_str());
    ssh_disconnect(session_);
  }
  if (event_) {
    ssh_event_remove_session(event_, session_);
    ssh_event_free(event_);
    event_ = nullptr;
  }
  spdlog::debug("ssh {}: connection closed", peer_);
}

// ---------------------------------------------------------------- auth

int Connection::Authenticate(const char* user) {
  if (bridge_) return SSH_AUTH_SUCCESS;
  if (refused_ || disconnect_) return SSH_AUTH_DENIED;
  std::string name = user ? user : "";
  Gateway::Login login = gw_.Resolve(name, mailbox_, peer_);
  if (login.bridge) {
    bridge_ = std::move(login.bridge);
    username_ = name;
    spdlog::info("ssh {}: logged in to sandbox {}", peer_, bridge_->sandbox_id());
    return SSH_AUTH_SUCCESS;
  }
  refused_ = true;
  spdlog::info("ssh {}: login refused: {}", peer_, login.refusal);
  // The banner is what OpenSSH shows the user; then the connection ends.
  // Only publickey stays on offer so no client starts a password prompt
  // before the disconnect arrives.
  SendBanner("sandboxd: " + login.refusal + "\r\n");
  ssh_set_auth_methods(session_, SSH_AUTH_METHOD_PUBLICKEY);
  RequestDisconnect(login.refusal);
  return SSH_AUTH_DENIED;
}

void Connection::SendBanner(const std::string& text) {
  ssh_string s = ssh_string_from_char(text.c_str());
  if (s == nullptr) return;
  ssh_send_issue_banner(session_, s);
  ssh_string_free(s);
}

void Connection::RequestDisconnect(const std::string& reason) {
  std::vector<uint32_t> ids;
  for (auto& [id, c] : chans_) ids.push_back(id);
  for (uint32_t id : ids) {
    if (Chan* c = Find(id)) CloseChannel(*c, "sandboxd: " + reason + "\r\n");
  }
  if (!disconnect_) {
    disconnect_ = true;
    disconnect_reason_ = reason;
  }
}

// ---------------------------------------------------------------- channels

Connection::Chan* Connection::Find(uint32_t id) {
  auto it = chans_.find(id);
  return it == chans_.end() ? nullptr : it->second.get();
}

ssh_channel Connection::OpenChannel() {
  if (!bridge_ || disconnect_) return nullptr;
  size_t open = 0;
  for (auto& [id, c] : chans_) open += c->close_sent ? 0 : 1;
  if (open >= kMaxChannels) return nullptr;
  ssh_channel ch = ssh_channel_new(session_);
  if (ch == nullptr) return nullptr;
  auto c = std::make_unique<Chan>();
  c->conn = this;
  c->id = next_chan_++;
  c->ch = ch;
  ssh_callbacks_init(&c->cb);
  c->cb.userdata = c.get();
  c->cb.channel_data_function = CbData;
  c->cb.channel_eof_function = CbEof;
  c->cb.channel_close_function = CbClose;
  c->cb.channel_signal_function = CbSignal;
  c->cb.channel_pty_request_function = CbPty;
  c->cb.channel_shell_request_function = CbShell;
  c->cb.channel_pty_window_change_function = CbWindowChange;
  c->cb.channel_exec_request_function = CbExec;
  c->cb.channel_env_request_function = CbEnv;
  c->cb.channel_subsystem_request_function = CbSubsystem;
  c->cb.channel_write_wontblock_function = CbWriteWontBlock;
  ssh_set_channel_callbacks(ch, &c->cb);
  chans_[c->id] = std::move(c);
  return ch;
}

int Connection::Run(Chan& c, RunSpec spec) {
  if (c.requested || c.close_sent || !bridge_) return 1;
  c.requested = true;
  if (spec.kind != RunSpec::Kind::kSftp)
    spec.pty = c.pty;  // a binary protocol never runs on a terminal
  spec.env = c.env;
  c.outputs_open = spec.pty ? 1 : 2;
  ToLoop([b = bridge_, id = c.id, spec = std::move(spec)]() mutable {
    b->Start(id, std::move(spec));
  });
  if (c.client_eof && c.unread == 0) ForwardEof(c);
  return 0;
}

int Connection::OnData(Chan& c, const char* data, uint32_t len, int is_stderr) {
  if (is_stderr || !c.requested || c.stdin_closed || c.close_sent || c.eof_forwarded)
    return static_cast<int>(len);
  uint64_t room = c.stdin_in_flight < kStdinInFlight ? kStdinInFlight - c.stdin_in_flight : 0;
  uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(len, room));
  if (n > 0) {
    c.stdin_in_flight += n;
    ToLoop([b = bridge_, id = c.id, bytes = std::string(data, n)]() mutable {
      b->StdinData(id, std::move(bytes));
    });
  }
  // libssh hands us its whole buffer each time: what we leave is all of it
  // that we did not take, and it stays there until ResumeStdin reads it.
  c.unread = len - n;
  return static_cast<int>(n);
}

void Connection::ResumeStdin(Chan& c) {
  while (c.unread > 0 && c.stdin_in_flight < kStdinInFlight && !c.close_sent && !c.stdin_closed) {
    uint32_t want = static_cast<uint32_t>(
        std::min<uint64_t>({c.unread, kStdinInFlight - c.stdin_in_flight, uint64_t{kReadChunk}}));
    std::string buf(want, '\0');
    int r = ssh_channel_read_nonblocking(c.ch, buf.data(), want, 0);
    if (r <= 0) {
      c.unread = 0;
      break;
    }
    buf.resize(static_cast<size_t>(r));
    c.unread -= static_cast<uint32_t>(r);
    c.stdin_in_flight += static_cast<uint64_t>(r);
    ToLoop([b = bridge_, id = c.id, bytes = std::move(buf)]() mutable {
      b->StdinData(id, std::move(bytes));
    });
  }
  if (c.unread == 0 && c.client_eof) ForwardEof(c);
}

void Connection::DiscardUnread(Chan& c) {
  char buf[16 * 1024];
  while (c.unread > 0) {
    int r = ssh_channel_read_nonblocking(c.ch, buf, std::min<uint32_t>(c.unread, sizeof buf), 0);
    if (r <= 0) break;
    c.unread -= std::min<uint32_t>(c.unread, static_cast<uint32_t>(r));
  }
  c.unread = 0;
}

void Connection::OnClientEof(Chan& c) {
  c.client_eof = true;
  if (c.unread == 0) ForwardEof(c);
}

void Connection::ForwardEof(Chan& c) {
  if (c.eof_forwarded || !c.requested || c.close_sent) return;
  c.eof_forwarded = true;
  if (c.stdin_closed) return;
  ToLoop([b = bridge_, id = c.id] { b->StdinEof(id); });
}

void Connection::OnClientClose(Chan& c) {
  c.remote_closed = true;
  if (!c.close_sent) CloseChannel(c, "");
}

void Connection::CloseChannel(Chan& c, const std::string& message) {
  if (c.close_sent) return;
  c.close_sent = true;  // first: the calls below may run callbacks that look
  DropOutput(c);
  if (!c.remote_closed && !c.eof_sent) {
    if (!message.empty()) {
      uint32_t n =
          std::min<uint32_t>(ssh_channel_window_size(c.ch), static_cast<uint32_t>(message.size()));
      if (n > 0) ssh_channel_write_stderr(c.ch, message.data(), n);
    }
    c.eof_sent = true;
    ssh_channel_send_eof(c.ch);
  }
  ssh_channel_close(c.ch);
  if (c.requested && bridge_) ToLoop([b = bridge_, id = c.id] { b->ChannelClosed(id); });
}

void Connection::DropOutput(Chan& c) {
  for (auto& k : c.outq) {
    if (k.agent_channel && bridge_) {
      ToLoop([b = bridge_, ch = k.agent_channel, n = static_cast<uint32_t>(k.data.size())] {
        b->OutputConsumed(ch, n);
      });
    }
  }
  c.outq.clear();
}

void Connection::FreeDeadChannels() {
  for (auto it = chans_.begin(); it != chans_.end();) {
    Chan& c = *it->second;
    if (c.close_sent && c.remote_closed) {
      ssh_remove_channel_callbacks(c.ch, &c.cb);
      ssh_channel_free(c.ch);
      it = chans_.erase(it);
    } else {
      ++it;
    }
  }
}

// ---------------------------------------------------------------- sandbox → client

void Connection::OnMailbox() {
  auto msgs = mailbox_->Take();
  for (auto& m : msgs) Handle(m);
}

void Connection::Handle(ToSsh& m) {
  if (m.kind == ToSsh::Kind::kDisconnect) {
    spdlog::info("ssh {}: closing: {}", peer_, m.data);
    RequestDisconnect(m.data);
    return;
  }
  Chan* c = Find(m.chan);
  if (c == nullptr || c->close_sent) {
    if (m.kind == ToSsh::Kind::kOutput && bridge_) {
      ToLoop([b = bridge_, ch = m.agent_channel, n = static_cast<uint32_t>(m.data.size())] {
        b->OutputConsumed(ch, n);
      });
    }
    return;
  }
  switch (m.kind) {
    case ToSsh::Kind::kStarted:
      return;
    case ToSsh::Kind::kStartFailed:
      c->outq.push_back(
          Chunk{"sandboxd: cannot start the command: " + m.data + "\r\n", 0, true, 0});
      c->outputs_open = 0;
      c->exited = true;
      c->exit_code = m.code;
      return Pump(*c);
    case ToSsh::Kind::kOutput:
      c->outq.push_back(Chunk{std::move(m.data), 0, m.is_stderr, m.agent_channel});
      return Pump(*c);
    case ToSsh::Kind::kOutputEof:
      --c->outputs_open;
      return TryFinish(*c);
    case ToSsh::Kind::kStdinAck:
      c->stdin_in_flight -= std::min(c->stdin_in_flight, m.n);
      return ResumeStdin(*c);
    case ToSsh::Kind::kStdinClosed:
      c->stdin_closed = true;
      return DiscardUnread(*c);
    case ToSsh::Kind::kExit:
      c->exited = true;
      c->exit_failed = m.failed;
      c->exit_code = m.code;
      c->exit_signal = m.signal;
      return TryFinish(*c);
    case ToSsh::Kind::kDisconnect:
      return;
  }
}

void Connection::Pump(Chan& c) {
  if (c.pumping) return;
  c.pumping = true;
  while (!c.outq.empty() && !c.close_sent && !disconnect_) {
    uint32_t window = ssh_channel_window_size(c.ch);
    if (window == 0) break;
    // Taken out of the queue while libssh runs: a write may handle incoming
    // packets, and their callbacks may close the channel and drop the queue.
    Chunk k = std::move(c.outq.front());
    c.outq.pop_front();
    uint32_t n = static_cast<uint32_t>(std::min<size_t>(window, k.data.size() - k.off));
    int rc = k.is_stderr ? ssh_channel_write_stderr(c.ch, k.data.data() + k.off, n)
                         : ssh_channel_write(c.ch, k.data.data() + k.off, n);
    if (rc > 0) k.off += static_cast<size_t>(rc);
    bool done = k.off >= k.data.size();
    if (done || c.close_sent || rc < 0) {
      if (k.agent_channel && bridge_) {
        ToLoop([b = bridge_, ch = k.agent_channel, sz = static_cast<uint32_t>(k.data.size())] {
          b->OutputConsumed(ch, sz);
        });
      }
    } else {
      c.outq.push_front(std::move(k));
    }
    if (rc < 0) {
      spdlog::debug("ssh {}: write failed: {}", peer_, ssh_get_error(session_));
      break;
    }
    if (rc == 0) break;
  }
  c.pumping = false;
  TryFinish(c);
}

void Connection::TryFinish(Chan& c) {
  if (c.close_sent || !c.requested || c.pumping || !c.outq.empty()) return;
  if (c.outputs_open <= 0 && !c.eof_sent) {
    c.eof_sent = true;
    ssh_channel_send_eof(c.ch);  // may run callbacks (a flush handles packets)
    if (c.close_sent) return;
  }
  if (!c.exited) return;
  // Sandbox::Wait answers once the outputs ended or shortly after the exit
  // (a background process may hold them open): the channel ends either way.
  // close_sent is claimed first: the calls below may run callbacks that look.
  c.close_sent = true;
  if (!c.eof_sent) {
    c.eof_sent = true;
    ssh_channel_send_eof(c.ch);
  }
  if (!c.exit_failed) {
    std::string sig = c.exit_signal ? SshSignalName(c.exit_signal) : std::string();
    if (!sig.empty()) {
      ssh_channel_request_send_exit_signal(c.ch, sig.c_str(), 0, "", "");
    } else {
      ssh_channel_request_send_exit_status(c.ch, c.exit_code);
    }
  }
  ssh_channel_close(c.ch);
  if (bridge_) ToLoop([b = bridge_, id = c.id] { b->ChannelClosed(id); });
}

// ---------------------------------------------------------------- trampolines

int Connection::CbAuthNone(ssh_session, const char* user, void* ud) {
  return static_cast<Connection*>(ud)->Authenticate(user);
}

int Connection::CbAuthPassword(ssh_session, const char* user, const char*, void* ud) {
  return static_cast<Connection*>(ud)->Authenticate(user);
}

// Any key is accepted for a valid username, both when offered (the answer is
// PK_OK) and when signed: the username is the credential.
int Connection::CbAuthPubkey(ssh_session, const char* user, ssh_key, char state, void* ud) {
  if (state != SSH_PUBLICKEY_STATE_NONE && state != SSH_PUBLICKEY_STATE_VALID)
    return SSH_AUTH_DENIED;
  return static_cast<Connection*>(ud)->Authenticate(user);
}

ssh_channel Connection::CbChannelOpen(ssh_session, void* ud) {
  return static_cast<Connection*>(ud)->OpenChannel();
}

int Connection::CbMessage(ssh_session, ssh_message, void*) {
  return 1; /* reply with the default: refused */
}

int Connection::CbMailboxFd(socket_t, int, void* ud) {
  static_cast<Connection*>(ud)->OnMailbox();
  return 0;
}

int Connection::CbData(ssh_session, ssh_channel, void* data, uint32_t len, int is_stderr,
                       void* ud) {
  auto* c = static_cast<Chan*>(ud);
  return c->conn->OnData(*c, static_cast<const char*>(data), len, is_stderr);
}

void Connection::CbEof(ssh_session, ssh_channel, void* ud) {
  auto* c = static_cast<Chan*>(ud);
  c->conn->OnClientEof(*c);
}

void Connection::CbClose(ssh_session, ssh_channel, void* ud) {
  auto* c = static_cast<Chan*>(ud);
  c->conn->OnClientClose(*c);
}

void Connection::CbSignal(ssh_session, ssh_channel, const char* signal, void* ud) {
  auto* c = static_cast<Chan*>(ud);
  auto signo = SignalFromSsh(signal ? signal : "");
  if (!signo || !c->requested || c->close_sent || !c->conn->bridge_) return;
  c->conn->ToLoop([b = c->conn->bridge_, id = c->id, s = *signo] { b->Signal(id, s); });
}

int Connection::CbPty(ssh_session, ssh_channel, const char* term, int cols, int rows, int, int,
                      void* ud) {
  auto* c = static_cast<Chan*>(ud);
  if (c->requested || c->pty) return -1;
  c->pty = NormalizePty(term, cols, rows);
  return 0;
}

int Connection::CbShell(ssh_session, ssh_channel, void* ud) {
  auto* c = static_cast<Chan*>(ud);
  return c->conn->Run(*c, RunSpec{.kind = RunSpec::Kind::kShell});
}

int Connection::CbExec(ssh_session, ssh_channel, const char* command, void* ud) {
  auto* c = static_cast<Chan*>(ud);
  if (command == nullptr) return 1;
  return c->conn->Run(*c, RunSpec{.kind = RunSpec::Kind::kExec, .command = command});
}

int Connection::CbSubsystem(ssh_session, ssh_channel, const char* subsystem, void* ud) {
  auto* c = static_cast<Chan*>(ud);
  if (subsystem == nullptr || std::string_view(subsystem) != "sftp") return 1;
  return c->conn->Run(*c, RunSpec{.kind = RunSpec::Kind::kSftp});
}

int Connection::CbWindowChange(ssh_session, ssh_channel, int cols, int rows, int, int, void* ud) {
  auto* c = static_cast<Chan*>(ud);
  if (!c->pty) return -1;
  PtySpec size = NormalizePty(c->pty->term.c_str(), cols, rows);
  c->pty->rows = size.rows;
  c->pty->cols = size.cols;
  if (c->requested && !c->close_sent && c->conn->bridge_) {
    c->conn->ToLoop(
        [b = c->conn->bridge_, id = c->id, r = size.rows, w = size.cols] { b->Resize(id, r, w); });
  }
  return 0;
}

int Connection::CbEnv(ssh_session, ssh_channel, const char* name, const char* value, void* ud) {
  auto* c = static_cast<Chan*>(ud);
  if (name == nullptr || value == nullptr || c->requested) return 1;
  std::string_view n(name), v(value);
  // The host's locale rarely exists in the sandbox image (it has C.UTF-8),
  // and programs complain loudly about a missing one: keep the sandbox's.
  if (n.empty() || n.size() > 256 || v.size() > 32 * 1024 ||
      n.find('=') != std::string_view::npos || IsLocaleVariable(n) || c->env.size() >= kMaxEnv) {
    return 1;
  }
  c->env[std::string(n)] = std::string(v);
  return 0;
}

int Connection::CbWriteWontBlock(ssh_session, ssh_channel, uint32_t, void* ud) {
  auto* c = static_cast<Chan*>(ud);
  if (!c->outq.empty()) c->conn->Pump(*c);
  return 0;
}

}  // namespace sandboxd::ssh

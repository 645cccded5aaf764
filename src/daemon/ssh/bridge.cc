#include "daemon/ssh/bridge.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

namespace sandboxd::ssh {

using nlohmann::json;

namespace {
// Stdin the agent link may hold queued (beyond the agent's credit) for one
// channel before the connection is told to stop reading from the client.
constexpr size_t kStdinQueueLimit = 256 * 1024;
constexpr auto kAckRetry = std::chrono::milliseconds(10);
}  // namespace

std::vector<std::string> ArgvFor(const RunSpec& spec, const std::string& shell) {
  switch (spec.kind) {
    case RunSpec::Kind::kShell:
      return {shell, "-l"};
    case RunSpec::Kind::kExec:
      return {shell, "-c", spec.command};
    case RunSpec::Kind::kSftp:
      return {kSftpServer};
  }
  return {shell};
}

Bridge::Bridge(boost::asio::io_context& io, std::shared_ptr<core::Sandbox> sb,
               std::shared_ptr<Mailbox> mailbox, std::string peer)
    : io_(io), sb_(std::move(sb)), mailbox_(std::move(mailbox)), peer_(std::move(peer)) {}

Bridge::~Bridge() {
  if (attached_) sb_->Detach(this);
}

bool Bridge::Attach() {
  if (!sb_->running()) return false;
  sb_->Attach(this);
  attached_ = true;
  return true;
}

void Bridge::Post(ToSsh m) { mailbox_->Post(std::move(m)); }

void Bridge::Start(uint32_t chan, RunSpec spec) {
  if (closed_ || !sb_->running()) {
    Post({.kind = ToSsh::Kind::kStartFailed,
          .chan = chan,
          .data = "the sandbox is not running",
          .code = 255});
    return;
  }
  if (procs_.count(chan)) return;  // one process per channel; the connection enforces it too
  auto& link = sb_->link();
  Proc& p = procs_[chan];
  p.pty = spec.pty.has_value();
  p.out_ch = link.NewChannel();
  p.err_ch = p.pty ? 0 : link.NewChannel();
  p.in_ch = link.NewChannel();

  // Output sinks exist before the agent can produce output. They hold only
  // the mailbox (thread-safe) and the sandbox weakly: once the connection is
  // gone, output is drained and dropped so the process never blocks.
  struct Outputs {
    int64_t pid = 0;
    int ended_early = 0;  // EOFs before the spawn reply told us the pid
  };
  auto outs = std::make_shared<Outputs>();
  std::weak_ptr<core::Sandbox> weak_sb = sb_;
  auto make_sink = [&](uint32_t ch, bool is_stderr) {
    core::AgentLink::Sink sink;
    sink.on_data = [mb = mailbox_, weak_sb, chan, ch, is_stderr](std::string_view data) {
      bool queued = mb->Post({.kind = ToSsh::Kind::kOutput,
                              .chan = chan,
                              .agent_channel = ch,
                              .is_stderr = is_stderr,
                              .data = std::string(data)});
      if (!queued) {
        if (auto sb = weak_sb.lock(); sb && sb->running())
          sb->link().Consumed(ch, static_cast<uint32_t>(data.size()));
      }
    };
    sink.on_eof = [mb = mailbox_, weak_sb, chan, is_stderr, outs] {
      mb->Post({.kind = ToSsh::Kind::kOutputEof, .chan = chan, .is_stderr = is_stderr});
      if (outs->pid == 0) {
        ++outs->ended_early;
      } else if (auto sb = weak_sb.lock()) {
        sb->OutputClosed(outs->pid);
      }
    };
    link.OpenInbound(ch, std::move(sink));
  };
  make_sink(p.out_ch, false);
  if (p.err_ch) make_sink(p.err_ch, true);

  auto shell_it = sb_->env().find("SHELL");
  std::string shell =
      shell_it != sb_->env().end() && !shell_it->second.empty() ? shell_it->second : "/bin/bash";
  json req = {{"argv", ArgvFor(spec, shell)},
              {"env", sb_->ProcessEnv(spec.env, false)},
              {"cwd", "/home/app"},
              {"uid", 1000},
              {"gid", 1000},
              {"stdin", p.in_ch},
              {"stdout", p.out_ch},
              {"stderr", p.err_ch}};
  if (spec.pty)
    req["pty"] = {{"rows", spec.pty->rows}, {"cols", spec.pty->cols}, {"term", spec.pty->term}};
  int outputs = p.err_ch ? 2 : 1;
  auto self = shared_from_this();
  link.Call("spawn", std::move(req), [this, self, chan, outs, outputs](Result<json> r) {
    auto it = procs_.find(chan);
    if (it == procs_.end()) return;  // the connection closed meanwhile (Close() cleared everything)
    Proc& p = it->second;
    bool ok = r && r->is_object() && r->contains("pid") && (*r)["pid"].is_number_integer();
    if (!ok || !sb_->running()) {
      if (sb_->running()) {
        sb_->link().ResetInbound(p.out_ch);
        if (p.err_ch) sb_->link().ResetInbound(p.err_ch);
      }
      std::string why = !sb_->running() ? "the sandbox is not running"
                        : !r            ? r.error().message
                                        : "the sandbox agent sent a malformed reply";
      // 127 as a shell reports a command it cannot run.
      Post({.kind = ToSsh::Kind::kStartFailed, .chan = chan, .data = why, .code = 127});
      procs_.erase(it);
      return;
    }
    int64_t pid = (*r)["pid"].get<int64_t>();
    p.pid = pid;
    p.spawned = true;
    outs->pid = pid;
    sb_->RegisterProcess(pid, outputs - outs->ended_early);
    auto& link = sb_->link();
    std::weak_ptr<Bridge> weak = weak_from_this();
    link.OpenOutbound(p.in_ch, [weak, chan] {
      // The process closed its stdin (or its terminal went away).
      auto s = weak.lock();
      if (!s) return;
      if (auto it = s->procs_.find(chan); it != s->procs_.end()) it->second.stdin_open = false;
      s->Post({.kind = ToSsh::Kind::kStdinClosed, .chan = chan});
    });
    p.stdin_open = true;
    if (!p.pending_stdin.empty()) link.Write(p.in_ch, std::exchange(p.pending_stdin, {}));
    if (p.stdin_eof) {
      link.WriteEof(p.in_ch);
      p.stdin_open = false;
    }
    if (p.pending_size && p.pty) {
      link.Call("resize",
                {{"pid", pid}, {"rows", p.pending_size->first}, {"cols", p.pending_size->second}},
                [](Result<json>) {});
    }
    sb_->Wait(pid, [mb = mailbox_, chan](Result<core::ExitStatus> st) {
      if (st) {
        mb->Post(
            {.kind = ToSsh::Kind::kExit, .chan = chan, .code = st->code, .signal = st->signal});
      } else {
        mb->Post(
            {.kind = ToSsh::Kind::kExit, .chan = chan, .data = st.error().message, .failed = true});
      }
    });
    Post({.kind = ToSsh::Kind::kStarted, .chan = chan});
    if (p.closed) {
      ReleaseProc(chan, p);
      procs_.erase(chan);
      return;
    }
    AckStdin(chan);
  });
}

void Bridge::StdinData(uint32_t chan, std::string data) {
  auto it = procs_.find(chan);
  if (it == procs_.end() || data.empty()) return;
  Proc& p = it->second;
  p.unacked += data.size();
  if (!p.spawned) {
    p.pending_stdin += data;
    return;
  }
  if (p.stdin_open && sb_->running()) sb_->link().Write(p.in_ch, data);
  AckStdin(chan);
}

void Bridge::AckStdin(uint32_t chan) {
  auto it = procs_.find(chan);
  if (it == procs_.end()) return;
  Proc& p = it->second;
  if (p.unacked == 0 || !p.spawned) return;
  bool queued_long =
      p.stdin_open && sb_->running() && sb_->link().QueuedBytes(p.in_ch) > kStdinQueueLimit;
  if (!queued_long) {
    Post({.kind = ToSsh::Kind::kStdinAck, .chan = chan, .n = std::exchange(p.unacked, 0)});
    return;
  }
  // The process is not reading: look again shortly (the link has one drain
  // handler for everybody, so this polls, as the WebSocket session does).
  if (p.ack_timer) return;
  p.ack_timer = std::make_shared<boost::asio::steady_timer>(io_, kAckRetry);
  std::weak_ptr<Bridge> weak = weak_from_this();
  p.ack_timer->async_wait([weak, chan](boost::system::error_code ec) {
    auto s = weak.lock();
    if (ec || !s) return;
    auto it = s->procs_.find(chan);
    if (it == s->procs_.end()) return;
    it->second.ack_timer.reset();
    s->AckStdin(chan);
  });
}

void Bridge::StdinEof(uint32_t chan) {
  auto it = procs_.find(chan);
  if (it == procs_.end()) return;
  Proc& p = it->second;
  p.stdin_eof = true;
  if (p.spawned && p.stdin_open && sb_->running()) {
    sb_->link().WriteEof(p.in_ch);
    p.stdin_open = false;
  }
}

void Bridge::Resize(uint32_t chan, int rows, int cols) {
  auto it = procs_.find(chan);
  if (it == procs_.end() || !it->second.pty) return;
  Proc& p = it->second;
  if (!p.spawned) {
    p.pending_size = std::make_pair(rows, cols);
    return;
  }
  if (!sb_->running()) return;
  sb_->link().Call("resize", {{"pid", p.pid}, {"rows", rows}, {"cols", cols}}, [](Result<json>) {});
}

void Bridge::Signal(uint32_t chan, int signo) {
  auto it = procs_.find(chan);
  if (it == procs_.end() || !it->second.spawned || !sb_->running()) return;
  sb_->Kill(it->second.pid, signo, [](Status) {});
}

void Bridge::OutputConsumed(uint32_t agent_channel, uint32_t n) {
  if (sb_->running()) sb_->link().Consumed(agent_channel, n);
}

void Bridge::ReleaseProc(uint32_t, Proc& p) {
  if (p.ack_timer) p.ack_timer->cancel();
  p.ack_timer.reset();
  if (!sb_->running()) return;
  auto& link = sb_->link();
  // RESET on the output hangs up a terminal (SIGHUP to its session) and
  // closes a pipe's read end (SIGPIPE on the next write), as sshd does.
  link.ResetInbound(p.out_ch);
  if (p.err_ch) link.ResetInbound(p.err_ch);
  if (p.stdin_open) link.WriteEof(p.in_ch);
  p.stdin_open = false;
}

void Bridge::ChannelClosed(uint32_t chan) {
  auto it = procs_.find(chan);
  if (it == procs_.end()) return;
  it->second.closed = true;
  if (!it->second.spawned) return;  // released when the spawn reply comes
  ReleaseProc(chan, it->second);
  procs_.erase(it);
}

void Bridge::Close() {
  if (closed_) return;
  closed_ = true;
  for (auto it = procs_.begin(); it != procs_.end();) {
    if (!it->second.spawned) {  // the spawn reply releases it
      it->second.closed = true;
      ++it;
      continue;
    }
    ReleaseProc(it->first, it->second);
    it = procs_.erase(it);
  }
  if (attached_) {
    attached_ = false;
    sb_->Detach(this);
  }
}

void Bridge::CloseFromServer(uint16_t, const std::string& reason) {
  Post({.kind = ToSsh::Kind::kDisconnect, .data = "sandbox " + sb_->id() + " stopped: " + reason});
}

}  // namespace sandboxd::ssh

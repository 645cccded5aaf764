#include "agent/agent.h"

#include "common/base64.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "agent/fs_walk.h"
#include "agent/log.h"
#include "agent/pty.h"
#include "agent/request.h"
#include "daemon/ingress/pid_port.h"

namespace sandboxd::agent {
namespace {

using nlohmann::json;
using link::FrameType;

// Protocol version announced in the ready event.
constexpr int kProtocolVersion = 1;

// Above this much unsent link output the agent stops reading process pipes
// (each read adds ≤ kMaxDataChunk, so the overshoot is bounded) ...
constexpr size_t kLinkHighWater = 1u << 20;
// ... and above this it also stops reading requests from the daemon, whose
// responses would otherwise pile up without bound if it never reads.
constexpr size_t kLinkInputPause = 4u << 20;
// Output buffer capacity kept after a full flush; more is returned to the
// allocator so an idle agent stays small after a burst.
constexpr size_t kKeepCapacity = 64u * 1024;
// stdin credit is returned in batches of at least this much (or all of it
// once the channel's buffer is empty), per docs/agent-link.md.
constexpr uint32_t kWindowBatch = 64u * 1024;
// Nested JSON deeper than this is discarded while parsing; no valid request
// comes close, and it bounds what a hostile message can make us build.
constexpr int kMaxJsonDepth = 16;
// How long Shutdown() waits for killed children to be reaped.
constexpr int kShutdownReapMs = 2000;
// Pool threads for short filesystem ops, and the most threads for ops that
// may block for long (streams, fileLock) at once.
constexpr size_t kFsThreads = 4;
constexpr size_t kMaxDedicatedThreads = 256;
// Soft RLIMIT_NOFILE the agent wants for itself (capped by the hard limit).
constexpr rlim_t kWantedFileLimit = 8192;

enum class Tag : uint32_t { kLink = 1, kSignal, kOut, kIn, kExec, kFs };

uint64_t Key(Tag tag, uint32_t id) { return (uint64_t{static_cast<uint32_t>(tag)} << 32) | id; }

std::string DumpJson(const json& j) {
  // `replace`: a message must never make dump() throw on bad UTF-8.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

// Runs a worker's op so that an exception (std::regex giving up on a
// pathological pattern, bad_alloc, a bug) still becomes a reply: a request
// must never go unanswered, nor a channel stay open forever.
template <typename F>
auto Guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    return std::unexpected(Error{EIO, std::string("internal error: ") + e.what()});
  }
}

void KillGroup(pid_t pid, int sig) {
  // pgid == pid once the child ran setsid(); before that (or if the group is
  // gone but the leader is a zombie) only the pid itself works.
  if (kill(-pid, sig) < 0) kill(pid, sig);
}

}  // namespace

Result<std::unique_ptr<Agent>> Agent::Create(UniqueFd link) {
  std::unique_ptr<Agent> agent(new Agent());

  int fl = fcntl(link.get(), F_GETFL);
  if (fl < 0 || fcntl(link.get(), F_SETFL, fl | O_NONBLOCK) < 0) {
    return FailErrno("agent link: O_NONBLOCK");
  }
  if (fcntl(link.get(), F_SETFD, FD_CLOEXEC) < 0) return FailErrno("agent link: FD_CLOEXEC");
  agent->link_ = std::move(link);

  struct sigaction ign = {};
  ign.sa_handler = SIG_IGN;
  // A dead reader must show up as EPIPE on that one fd, not kill PID 1.
  if (sigaction(SIGPIPE, &ign, nullptr) < 0) return FailErrno("sigaction SIGPIPE");

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  // As PID 1 the kernel drops these anyway (no handler installed); when not
  // PID 1 (tests, debugging) they shut down cleanly instead of orphaning.
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &set, nullptr) < 0) return FailErrno("sigprocmask");
  int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) return FailErrno("signalfd");
  agent->signal_fd_.Reset(sfd);

  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) return FailErrno("prctl PR_SET_CHILD_SUBREAPER");

  // Room for fs::kMaxHandles open file handles plus transfers, directory
  // walks and process pipes; children get the original limit back.
  rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    SetChildFileLimit(nofile);
    rlim_t want = std::min<rlim_t>(nofile.rlim_max, kWantedFileLimit);
    if (nofile.rlim_cur < want) {
      rlimit raised = nofile;
      raised.rlim_cur = want;
      if (setrlimit(RLIMIT_NOFILE, &raised) != 0) Log("setrlimit NOFILE: %s", strerror(errno));
    }
  }

  int efd = epoll_create1(EPOLL_CLOEXEC);
  if (efd < 0) return FailErrno("epoll_create1");
  agent->epoll_.Reset(efd);

  if (!agent->Watch(agent->signal_fd_.get(), Key(Tag::kSignal, 0), EPOLLIN)) {
    return FailErrno("epoll add signalfd");
  }
  agent->link_events_ = EPOLLIN;
  if (!agent->Watch(agent->link_.get(), Key(Tag::kLink, 0), EPOLLIN)) {
    return FailErrno("epoll add link");
  }
  auto queue = LoopQueue::Create();
  if (!queue) return std::unexpected(queue.error());
  agent->loop_queue_ = std::move(*queue);
  if (!agent->Watch(agent->loop_queue_->fd(), Key(Tag::kFs, 0), EPOLLIN)) {
    return FailErrno("epoll add eventfd");
  }
  // After the signal mask is set: the threads inherit it.
  agent->pool_ = std::make_unique<WorkerPool>(kFsThreads, kMaxDedicatedThreads);
  return agent;
}

Agent::~Agent() = default;

int Agent::Run() {
  SendControl(json{{"event", "ready"}, {"version", kProtocolVersion}});
  while (!done_) {
    if (!file_outs_ready_.empty() && !congested_) PumpFileOuts();
    FlushLink();
    if (done_) break;
    epoll_event events[32];
    // File streams made ready while the link was congested have no fd to
    // wake us once it drained: poll instead of sleeping.
    int timeout = !file_outs_ready_.empty() && !congested_ ? 0 : -1;
    int n = epoll_wait(epoll_.get(), events, 32, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      Log("epoll_wait: %s", strerror(errno));
      exit_code_ = 1;
      break;
    }
    for (int i = 0; i < n && !done_; ++i) {
      auto tag = static_cast<Tag>(events[i].data.u64 >> 32);
      auto id = static_cast<uint32_t>(events[i].data.u64);
      // Nothing may escape the loop: an exception would end PID 1 and with
      // it the sandbox. A handler that throws is a bug; log and go on.
      try {
        switch (tag) {
          case Tag::kLink:
            if (events[i].events & (EPOLLERR | EPOLLHUP)) {
              // Peer gone (or port disconnected): nobody can read answers.
              Log("agent link closed (hangup)");
              done_ = true;
            } else if (events[i].events & EPOLLIN) {
              OnLinkReadable();
            }
            // EPOLLOUT: FlushLink() at the top of the loop.
            break;
          case Tag::kSignal: OnSignal(); break;
          case Tag::kOut: OnOutReadable(id); break;
          case Tag::kIn: OnInEvent(id, events[i].events); break;
          case Tag::kExec: OnExecStatus(static_cast<pid_t>(id)); break;
          case Tag::kFs: loop_queue_->RunPending(); break;
        }
      } catch (const std::exception& e) {
        Log("internal error: %s", e.what());
      }
    }
  }
  Shutdown();
  return exit_code_;
}

// ---------------------------------------------------------------------------
// Link input

void Agent::OnLinkReadable() {
  char buf[64 * 1024];
  ssize_t n = ::read(link_.get(), buf, sizeof buf);
  if (n == 0) {
    Log("agent link closed");
    done_ = true;
    return;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    Log("agent link read: %s", strerror(errno));
    done_ = true;
    return;
  }
  size_t off = 0;
  while (off < static_cast<size_t>(n) && !done_) {
    auto used = decoder_.Feed(std::span<const char>(buf + off, n - off));
    if (!used) {
      // The stream cannot be resynchronised after a bad header.
      Log("%s", used.error().message.c_str());
      done_ = true;
      return;
    }
    off += *used;
    while (auto frame = decoder_.Next()) {
      HandleFrame(*frame);
      if (done_) return;
    }
  }
}

void Agent::HandleFrame(link::Frame& f) {
  switch (f.type) {
    case FrameType::kControl:
      HandleControl(f.payload);
      return;
    case FrameType::kData: {
      if (auto fi = file_ins_.find(f.channel); fi != file_ins_.end()) {
        FileIn& in = fi->second;
        if (in.eof || in.reset) return;
        if (f.payload.size() > in.window) {
          Log("channel %u: DATA of %zu bytes exceeds credit %u; resetting", f.channel, f.payload.size(),
              in.window);
          link::AppendFrame(out_, FrameType::kReset, f.channel, "");
          UpdateCongestion();
          in.reset = true;  // the worker fails with ECANCELED; that is the reply
          in.stream->Cancel();
          return;
        }
        in.window -= static_cast<uint32_t>(f.payload.size());
        in.stream->Feed(std::move(f.payload));
        return;
      }
      auto it = ins_.find(f.channel);
      if (it == ins_.end()) return;  // unknown or closed: ignored by design
      InChannel& ch = it->second;
      if (ch.eof) {
        Log("channel %u: DATA after EOF ignored", f.channel);
        return;
      }
      if (f.payload.size() > ch.window) {
        // The daemon broke flow control; the stream is no longer what it
        // sent, so abandon it rather than deliver a gap.
        Log("channel %u: DATA of %zu bytes exceeds credit %u; resetting", f.channel,
            f.payload.size(), ch.window);
        ResetIn(f.channel);
        return;
      }
      ch.window -= static_cast<uint32_t>(f.payload.size());
      if (ch.off == ch.buf.size()) {
        ch.buf = std::move(f.payload);
        ch.off = 0;
      } else {
        ch.buf.erase(0, ch.off);
        ch.off = 0;
        ch.buf.append(f.payload);
      }
      if (ch.active) FlushIn(f.channel);
      return;
    }
    case FrameType::kEof: {
      if (auto fi = file_ins_.find(f.channel); fi != file_ins_.end()) {
        if (!fi->second.reset) {
          fi->second.eof = true;
          fi->second.stream->Eof();
        }
        return;
      }
      auto it = ins_.find(f.channel);
      if (it == ins_.end() || it->second.eof) return;
      InChannel& ch = it->second;
      ch.eof = true;
      if (ch.terminal != 0) {
        // A terminal has no EOF of its own: type the EOF character after
        // the pending input, like a user pressing ^D (the master stays
        // open). Not daemon data, so no credit is returned for it: the
        // channel closes once it is written.
        ch.buf.erase(0, ch.off);
        ch.off = 0;
        ch.buf.push_back(EofChar(ch.fd.get()));
      }
      if (ch.active) FlushIn(f.channel);
      return;
    }
    case FrameType::kWindow: {
      auto credit = link::ParseWindow(f.payload);
      if (auto fo = file_outs_.find(f.channel); fo != file_outs_.end()) {
        if (credit && !fo->second.reset) {
          fo->second.credit += *credit;
          file_outs_ready_.push_back(f.channel);
        }
        return;
      }
      auto it = outs_.find(f.channel);
      if (it == outs_.end()) return;
      if (!credit) {
        Log("channel %u: malformed WINDOW ignored", f.channel);
        return;
      }
      uint64_t sum = uint64_t{it->second.credit} + *credit;
      it->second.credit = static_cast<uint32_t>(std::min<uint64_t>(sum, UINT32_MAX));
      UpdateOutWatch(f.channel, it->second);
      return;
    }
    case FrameType::kReset:
      // From the reader of an output channel: stop and close the read end
      // (the process gets EPIPE; for a pty the terminal hangs up, the
      // process gets SIGHUP). From the writer of stdin: close the pipe (for
      // a pty, just stop writing to it).
      if (auto o = outs_.find(f.channel); o != outs_.end()) {
        uint64_t terminal = o->second.terminal;
        CloseOut(f.channel);
        if (terminal != 0) HangUp(terminal);
      }
      if (ins_.contains(f.channel)) CloseIn(f.channel);
      // File streams: the worker stops and its request is answered with
      // ECANCELED (every request gets exactly one reply).
      if (auto fo = file_outs_.find(f.channel); fo != file_outs_.end()) {
        fo->second.reset = true;
        fo->second.stream->Cancel();
      }
      if (auto fi = file_ins_.find(f.channel); fi != file_ins_.end()) {
        fi->second.reset = true;
        fi->second.stream->Cancel();
      }
      return;
  }
}

// ---------------------------------------------------------------------------
// Control messages

void Agent::HandleControl(std::string_view payload) {
  json::parser_callback_t limit_depth = [](int depth, json::parse_event_t, json&) {
    return depth <= kMaxJsonDepth;
  };
  json msg = json::parse(payload, limit_depth, /*allow_exceptions=*/false);
  if (msg.is_discarded() || !msg.is_object()) {
    Log("ignoring malformed control message (%zu bytes)", payload.size());
    return;
  }
  auto id_it = msg.find("id");
  if (id_it == msg.end() || !id_it->is_number_unsigned()) {
    Log("ignoring control message without a valid id");
    return;
  }
  uint64_t id = id_it->get<uint64_t>();
  auto op_it = msg.find("op");
  if (op_it == msg.end() || !op_it->is_string()) {
    RespondErr(id, Error{EINVAL, "missing 'op'"});
    return;
  }
  std::string op = op_it->get<std::string>();
  if (op == "ping") {
    Respond(id, json::object());
  } else if (op == "spawn") {
    HandleSpawn(id, msg);
  } else if (op == "kill") {
    HandleKill(id, msg);
  } else if (op == "resize") {
    HandleResize(id, msg);
  } else if (op == "listeningPort") {
    HandleListeningPort(id, msg);
  } else if (op == "configureNetwork" && configure_network_) {
    auto req = ParseNetConfig(msg);
    if (!req) return RespondErr(id, req.error());
    if (auto st = configure_network_(*req); !st) return RespondErr(id, st.error());
    Respond(id, nullptr);
  } else if (fs::IsPathOp(op) || fs::IsHandleOp(op) || op == "open" || op == "create" ||
             op == "readFile" || op == "readTextFile" || op == "writeFile" ||
             op == "writeTextFile" || op == "walk" || op == "expandGlob") {
    HandleFs(id, op, std::move(msg));
  } else {
    RespondErr(id, Error{ENOSYS, "unknown op '" + op.substr(0, 64) + "'"});
  }
}

void Agent::HandleSpawn(uint64_t id, const json& msg) {
  auto req = ParseSpawn(msg);
  if (!req) return RespondErr(id, req.error());
  for (uint32_t ch : {req->stdin_channel, req->stdout_channel, req->stderr_channel}) {
    if (ch != 0 && ChannelInUse(ch)) {
      return RespondErr(id, Error{EBUSY, "channel " + std::to_string(ch) + " is in use"});
    }
  }
  // Before the fork: an OOM kill of the new process must count as its own.
  const uint64_t oom_kills = OomKills();
  auto child = StartChild(*req);
  if (!child) return RespondErr(id, child.error().Wrap("spawn '" + req->argv[0] + "'"));

  pid_t pid = child->pid;
  Process proc;
  proc.request_id = id;
  proc.oom_kills_at_spawn = oom_kills;
  proc.channels[0] = req->stdin_channel;
  proc.channels[1] = req->stdout_channel;
  proc.channels[2] = req->stderr_channel;
  // Channels exist from now on, so stdin DATA sent before the response is
  // kept, but stay inactive until exec is confirmed: a failed spawn must
  // produce only its error, no EOFs or RESETs.
  if (child->pty_master) {
    proc.terminal = next_terminal_++;
    proc.pty_master = std::move(child->pty_master);
  }
  if (proc.channels[0] != 0) {
    InChannel& in = ins_[proc.channels[0]];
    in.fd = std::move(child->stdin_w);
    in.terminal = proc.terminal;
  }
  if (proc.channels[1] != 0) {
    OutChannel& out = outs_[proc.channels[1]];
    out.fd = std::move(child->stdout_r);
    out.terminal = proc.terminal;
  }
  if (proc.channels[2] != 0) outs_[proc.channels[2]].fd = std::move(child->stderr_r);
  int status_fd = child->exec.status.get();
  proc.exec = std::move(child->exec);
  procs_[pid] = std::move(proc);
  if (!Watch(status_fd, Key(Tag::kExec, static_cast<uint32_t>(pid)), EPOLLIN)) {
    // Cannot learn the outcome without blocking; the reap will resolve it.
    Log("epoll add exec status: %s", strerror(errno));
  }
}

// exposeHttp({pid}) in a microVM: the host cannot see the guest's processes
// and sockets, so the ingress asks here. The same code as the daemon's for a
// namespace sandbox, on our own /proc/self (our root and our network).
void Agent::HandleListeningPort(uint64_t id, const json& msg) {
  auto pid_it = msg.find("pid");
  if (pid_it == msg.end() || !pid_it->is_number_integer() || pid_it->get<int64_t>() < 1 ||
      pid_it->get<int64_t>() > (int64_t{1} << 22)) {
    return RespondErr(id, Error{EINVAL, "'pid' must be a positive integer"});
  }
  UniqueFd proc(open("/proc/self", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!proc) return RespondErr(id, Error::Errno("open /proc/self"));
  auto port = ingress::ListeningPort(proc.get(), pid_it->get<int64_t>());
  if (!port) return RespondErr(id, port.error());
  Respond(id, *port);
}

void Agent::HandleKill(uint64_t id, const json& msg) {
  auto req = ParseKill(msg);
  if (!req) return RespondErr(id, req.error());
  auto it = procs_.find(req->pid);
  // Only our own children, and only while unreaped: after waitpid() the pid
  // may belong to someone else.
  if (it == procs_.end() || !it->second.started) {
    return RespondErr(id, Error::Errno("kill " + std::to_string(req->pid), ESRCH));
  }
  if (kill(-req->pid, req->signal) < 0 && kill(req->pid, req->signal) < 0) {
    return RespondErr(id, Error::Errno("kill " + std::to_string(req->pid)));
  }
  Respond(id, nullptr);
}

void Agent::HandleResize(uint64_t id, const json& msg) {
  auto req = ParseResize(msg);
  if (!req) return RespondErr(id, req.error());
  std::string what = "resize " + std::to_string(req->pid);
  auto it = procs_.find(req->pid);
  if (it == procs_.end() || !it->second.started) return RespondErr(id, Error::Errno(what, ESRCH));
  const Process& proc = it->second;
  if (proc.terminal == 0) return RespondErr(id, Error{ENOTTY, what + ": process has no pty"});
  if (!proc.pty_master) return RespondErr(id, Error{ENOTTY, what + ": the pty was hung up"});
  if (auto st = SetWindowSize(proc.pty_master.get(), req->rows, req->cols); !st) {
    return RespondErr(id, st.error().Wrap(what));
  }
  Respond(id, nullptr);
}

void Agent::HangUp(uint64_t terminal) {
  for (auto& [pid, proc] : procs_) {
    if (proc.terminal == terminal) proc.pty_master.Reset();
  }
  std::vector<uint32_t> ins;
  for (const auto& [id, ch] : ins_) {
    if (ch.terminal == terminal) ins.push_back(id);
  }
  // Its input can no longer be delivered: tell the daemon, as when a
  // process closes its stdin.
  for (uint32_t id : ins) ResetIn(id);
}

void Agent::Respond(uint64_t id, const json& ok) {
  // fileRead's {"data": <base64>} is the bulk of a download: write the reply
  // around the base64 (which needs no escaping) instead of running the JSON
  // serialiser over it byte by byte — that was the agent's main cost. The
  // daemon recognises exactly this shape.
  if (ok.is_object() && ok.size() == 1 && ok.begin().key() == "data" && ok.begin()->is_string()) {
    const auto& data = ok.begin()->get_ref<const std::string&>();
    std::string payload = "{\"id\":" + std::to_string(id) + ",\"ok\":{\"data\":\"";
    if (IsBase64Text(data) && payload.size() + data.size() + 3 <= link::kMaxFramePayload) {
      payload.reserve(payload.size() + data.size() + 3);
      payload += data;
      payload += "\"}}";
      link::AppendFrame(out_, FrameType::kControl, 0, payload);
      UpdateCongestion();
      return;
    }
  }
  if (!SendControl(json{{"id", id}, {"ok", ok}})) {
    // Every request is answered: one that does not fit a frame fails.
    RespondErr(id, Error{E2BIG, "reply too large for one message"});
  }
}

void Agent::RespondErr(uint64_t id, const Error& err) {
  SendControl(json{{"id", id}, {"err", {{"errno", err.code}, {"message", err.message}}}});
}

bool Agent::SendControl(const json& msg) {
  std::string payload = DumpJson(msg);
  if (payload.size() > link::kMaxFramePayload) {
    Log("dropping oversized control message (%zu bytes)", payload.size());
    return false;
  }
  link::AppendFrame(out_, FrameType::kControl, 0, payload);
  UpdateCongestion();
  return true;
}

// ---------------------------------------------------------------------------
// Filesystem ops

bool Agent::ChannelInUse(uint32_t ch) const {
  return ins_.contains(ch) || outs_.contains(ch) || file_outs_.contains(ch) || file_ins_.contains(ch);
}

Result<uint32_t> Agent::ClaimChannel(const json& msg) {
  auto ch = fs::Params(msg).Int("channel", 1, std::numeric_limits<uint32_t>::max());
  if (!ch) return std::unexpected(ch.error());
  auto channel = static_cast<uint32_t>(*ch);
  if (ChannelInUse(channel)) {
    return std::unexpected(Error{EBUSY, "channel " + std::to_string(channel) + " is in use"});
  }
  return channel;
}

void Agent::HandleFs(uint64_t id, const std::string& op, json&& msg) {
  auto cred = fs::ParseCred(msg);
  if (!cred) return RespondErr(id, cred.error());
  if (op == "readFile" || op == "readTextFile" || op == "walk" || op == "expandGlob") {
    return StartFileOut(id, op, std::move(msg), std::move(*cred));
  }
  if (op == "writeFile" || op == "writeTextFile") return StartFileIn(id, std::move(msg), std::move(*cred));

  // One-reply ops: run on a worker with the caller's credentials, reply on
  // the loop. Only shared_ptrs cross to the worker; `this` is used only by
  // the closure posted back, which runs on the loop.
  auto job = [this, queue = loop_queue_, files = files_, id, op, msg = std::move(msg),
              cred = std::move(*cred)] {
    Result<json> result = Guarded([&]() -> Result<json> {
      fs::CredScope scope(cred);
      if (op == "open" || op == "create") return files->Open(op, msg, cred);
      if (fs::IsHandleOp(op)) return files->Run(op, msg);
      return fs::RunPathOp(op, msg, cred);
    });
    queue->Post([this, id, result = std::move(result)] {
      if (result) {
        Respond(id, *result);
      } else {
        RespondErr(id, result.error());
      }
    });
  };
  if (op == "fileLock" || op == "open" || op == "create") {
    // flock may wait for another holder indefinitely, and open() of a FIFO
    // for a peer (Deno semantics): never on the pool.
    if (!pool_->Dedicated(std::move(job))) {
      RespondErr(id, Error{EAGAIN, "too many blocking operations in progress"});
    }
    return;
  }
  if (!pool_->Submit(std::move(job))) {
    RespondErr(id, Error{EAGAIN, "too many filesystem operations queued"});
  }
}

void Agent::StartFileOut(uint64_t id, const std::string& op, json&& msg, fs::Cred&& cred) {
  auto channel = ClaimChannel(msg);
  if (!channel) return RespondErr(id, channel.error());
  bool is_read = op == "readFile" || op == "readTextFile";
  int64_t max_bytes = -1;
  if (is_read) {
    auto mb = fs::Params(msg).OptInt("maxBytes", 0, std::numeric_limits<int64_t>::max());
    if (!mb) return RespondErr(id, mb.error());
    max_bytes = mb->value_or(-1);
  }
  uint32_t ch = *channel;
  auto queue = loop_queue_;
  auto stream = std::make_shared<fs::OutStream>([this, queue, ch] {
    queue->Post([this, ch] { file_outs_ready_.push_back(ch); });
  });
  FileOut& fo = file_outs_[ch];
  fo.stream = stream;
  fo.request_id = id;
  fo.reply_size = is_read;
  auto job = [this, queue, stream, ch, op, is_read, max_bytes, msg = std::move(msg), cred = std::move(cred)] {
    Result<uint64_t> result = Guarded([&]() -> Result<uint64_t> {
      fs::CredScope scope(cred);
      if (is_read) return fs::ReadFileToStream(msg, cred, max_bytes, *stream);
      // One JSON document per line; Push() blocks while the queue is full,
      // so a walk never runs ahead of the daemon by more than that bound.
      auto sink = [&](const fs::WalkEntry& e) {
        std::string line = DumpJson(fs::WalkEntryJson(e));
        line += '\n';
        return stream->Push(line);
      };
      Status st = op == "walk" ? fs::Walk(msg, cred, sink) : fs::ExpandGlob(msg, cred, sink);
      if (!st) return std::unexpected(st.error());
      if (stream->cancelled()) return std::unexpected(Error{ECANCELED, op + ": cancelled"});
      return 0;
    });
    queue->Post([this, ch, result = std::move(result)] { OnFileOutDone(ch, result); });
  };
  if (!pool_->Dedicated(std::move(job))) {
    file_outs_.erase(ch);
    RespondErr(id, Error{EAGAIN, "too many transfers in progress"});
  }
}

void Agent::OnFileOutDone(uint32_t channel, Result<uint64_t> result) {
  auto it = file_outs_.find(channel);
  if (it == file_outs_.end()) return;
  FileOut& fo = it->second;
  fo.done = true;
  if (result) {
    fo.size = *result;
  } else {
    fo.error = result.error();
  }
  file_outs_ready_.push_back(channel);
}

void Agent::PumpFileOuts() {
  std::vector<uint32_t> ready;
  ready.swap(file_outs_ready_);
  std::deque<std::string> chunks;
  for (size_t i = 0; i < ready.size(); ++i) {
    uint32_t ch = ready[i];
    if (congested_) {
      // Resume with the rest once the link drains.
      file_outs_ready_.insert(file_outs_ready_.end(), ready.begin() + i, ready.end());
      return;
    }
    auto it = file_outs_.find(ch);
    if (it == file_outs_.end()) continue;
    FileOut& fo = it->second;
    chunks.clear();
    bool empty = false;
    // After a RESET the queue is just drained (and dropped).
    size_t taken = fo.stream->Take(chunks, fo.reset ? UINT64_MAX : fo.credit, &empty);
    if (!fo.reset) fo.credit -= taken;
    if (!fo.reset) {
      for (const std::string& c : chunks) link::AppendFrame(out_, FrameType::kData, ch, c);
    }
    UpdateCongestion();
    // Without credit the rest waits for the next WINDOW (which re-queues us).
    if (!fo.done || !empty) continue;
    // The worker posted its result after its last Push, so nothing more
    // can be queued: end the stream, then answer.
    uint64_t id = fo.request_id;
    if (fo.reset) {
      RespondErr(id, Error{ECANCELED, "channel " + std::to_string(ch) + " was reset"});
    } else {
      link::AppendFrame(out_, FrameType::kEof, ch, "");
      if (fo.error) {
        RespondErr(id, *fo.error);
      } else if (fo.reply_size) {
        Respond(id, json{{"size", fo.size}});
      } else {
        Respond(id, nullptr);
      }
    }
    file_outs_.erase(it);
    UpdateCongestion();
  }
}

void Agent::StartFileIn(uint64_t id, json&& msg, fs::Cred&& cred) {
  auto channel = ClaimChannel(msg);
  if (!channel) return RespondErr(id, channel.error());
  uint32_t ch = *channel;
  auto queue = loop_queue_;
  auto stream = std::make_shared<fs::InStream>([this, queue, ch] {
    queue->Post([this, ch] { OnFileInProgress(ch); });
  });
  // Registered before the worker starts: DATA that follows the request is
  // queued (within the window) even if the file is not open yet.
  FileIn& fi = file_ins_[ch];
  fi.stream = stream;
  fi.request_id = id;
  auto job = [this, queue, stream, ch, msg = std::move(msg), cred = std::move(cred)] {
    Status result = Guarded([&]() -> Status {
      fs::CredScope scope(cred);
      return fs::WriteFileFromStream(msg, cred, *stream);
    });
    queue->Post([this, ch, result = std::move(result)] { OnFileInDone(ch, result); });
  };
  if (!pool_->Dedicated(std::move(job))) {
    file_ins_.erase(ch);
    link::AppendFrame(out_, FrameType::kReset, ch, "");
    RespondErr(id, Error{EAGAIN, "too many transfers in progress"});
  }
}

void Agent::OnFileInProgress(uint32_t channel) {
  auto it = file_ins_.find(channel);
  if (it == file_ins_.end()) return;
  FileIn& fi = it->second;
  bool idle = false;
  fi.unreported += fi.stream->TakeConsumed(&idle);
  if (fi.eof || fi.reset || fi.unreported == 0) return;
  if (fi.unreported >= kWindowBatch || idle) {
    auto credit = static_cast<uint32_t>(fi.unreported);
    link::AppendWindow(out_, channel, credit);
    fi.window += credit;
    fi.unreported = 0;
    UpdateCongestion();
  }
}

void Agent::OnFileInDone(uint32_t channel, Status result) {
  auto it = file_ins_.find(channel);
  if (it == file_ins_.end()) return;
  uint64_t id = it->second.request_id;
  bool reset = it->second.reset;
  file_ins_.erase(it);
  if (result) return Respond(id, nullptr);
  // Tell the daemon to stop sending; it already knows if it reset.
  if (!reset) link::AppendFrame(out_, FrameType::kReset, channel, "");
  if (reset && result.error().code == ECANCELED) {
    RespondErr(id, Error{ECANCELED, "channel " + std::to_string(channel) + " was reset"});
  } else {
    RespondErr(id, result.error());
  }
  UpdateCongestion();
}

// ---------------------------------------------------------------------------
// Processes

void Agent::OnSignal() {
  signalfd_siginfo si;
  bool child = false;
  while (true) {
    ssize_t n = ::read(signal_fd_.get(), &si, sizeof si);
    if (n != sizeof si) break;  // EAGAIN: drained
    if (si.ssi_signo == SIGCHLD) {
      child = true;
    } else {
      Log("signal %u: shutting down", si.ssi_signo);
      done_ = true;
    }
  }
  // SIGCHLD coalesces: one notification may stand for many children.
  if (child) Reap();
}

void Agent::Reap() {
  while (true) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) return;  // 0: none exited; ECHILD: no children
    auto it = procs_.find(pid);
    if (it == procs_.end()) continue;  // an orphan reparented to us: reaped silently
    if (it->second.exec) ResolveExec(pid, /*child_gone=*/true);
    it = procs_.find(pid);
    if (it->second.started) {
      int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
      int code = sig != 0 ? 128 + sig : WEXITSTATUS(status);
      json ev{{"event", "exit"}, {"pid", pid}, {"code", code}, {"signal", sig}};
      if (sig == SIGKILL && !oom_events_.empty() && OomKills() > it->second.oom_kills_at_spawn) {
        ev["oom"] = true;
      }
      SendControl(ev);
    }
    procs_.erase(it);
  }
}

void Agent::OnExecStatus(pid_t pid) { ResolveExec(pid, /*child_gone=*/false); }

uint64_t Agent::OomKills() const {
  if (oom_events_.empty()) return 0;
  UniqueFd fd(::open(oom_events_.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return 0;
  char buf[512];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return 0;
  buf[n] = '\0';
  // "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n..."
  const char* at = std::strstr(buf, "oom_kill ");
  return at ? std::strtoull(at + 9, nullptr, 10) : 0;
}

void Agent::ResolveExec(pid_t pid, bool child_gone) {
  auto it = procs_.find(pid);
  if (it == procs_.end() || !it->second.exec) return;
  Process& proc = it->second;
  std::optional<Status> verdict = PollExec(*proc.exec);
  if (!verdict) {
    if (!child_gone) return;  // still between fork and exec
    // Dead without closing the pipe cannot happen; never leave the request
    // unanswered if it somehow does.
    verdict = Status(FailMsg("spawn '" + proc.exec->argv0 + "': child vanished"));
    verdict->error().code = EIO;
  }
  Unwatch(proc.exec->status.get());
  proc.exec.reset();

  if (*verdict) {
    proc.started = true;
    Respond(proc.request_id, json{{"pid", pid}});
    if (uint32_t c = proc.channels[0]; c != 0 && ins_.contains(c)) {
      ins_[c].active = true;
      FlushIn(c);
    }
    for (uint32_t c : {proc.channels[1], proc.channels[2]}) {
      if (auto o = outs_.find(c); c != 0 && o != outs_.end()) {
        o->second.active = true;
        UpdateOutWatch(c, o->second);
      }
    }
  } else {
    RespondErr(proc.request_id, verdict->error());
    // The process never ran: its channels never existed for the daemon.
    for (uint32_t c : proc.channels) {
      if (c != 0 && ins_.contains(c) && !ins_[c].active) CloseIn(c);
      if (c != 0 && outs_.contains(c) && !outs_[c].active) CloseOut(c);
    }
  }
}

void Agent::Shutdown() {
  // Workers blocked on a stream wake up and end; one stuck in the kernel
  // (flock, a hung disk) is detached and dies with the process.
  for (auto& [ch, fo] : file_outs_) fo.stream->Cancel();
  for (auto& [ch, fi] : file_ins_) fi.stream->Cancel();
  for (const auto& [pid, proc] : procs_) KillGroup(pid, SIGKILL);
  // As PID 1 everything in the sandbox is ours, including daemons that left
  // their process group; kill(-1) spares only the caller.
  if (getpid() == 1) kill(-1, SIGKILL);
  // Reap what we killed so the processes are really gone when we exit, but
  // bounded: one stuck in uninterruptible sleep must not keep us here.
  int64_t deadline = NowMs() + kShutdownReapMs;
  while (NowMs() < deadline) {
    pid_t pid = waitpid(-1, nullptr, WNOHANG);
    if (pid > 0) continue;
    if (pid < 0 && errno != EINTR) break;  // ECHILD: all reaped
    timespec ts{0, 5 * 1000 * 1000};
    nanosleep(&ts, nullptr);
  }
}

// ---------------------------------------------------------------------------
// Channels

void Agent::OnOutReadable(uint32_t id) {
  auto it = outs_.find(id);
  if (it == outs_.end()) return;  // stale event for a channel closed in this batch
  OutChannel& ch = it->second;
  if (!ch.active || ch.credit == 0 || congested_) {
    UpdateOutWatch(id, ch);
    return;
  }
  char buf[link::kMaxDataChunk];
  size_t want = std::min<size_t>(ch.credit, sizeof buf);
  ssize_t n = ::read(ch.fd.get(), buf, want);
  if (n > 0) {
    link::AppendFrame(out_, FrameType::kData, id, std::string_view(buf, n));
    ch.credit -= static_cast<uint32_t>(n);
    UpdateOutWatch(id, ch);
    UpdateCongestion();
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  // A pty master reads EIO once every slave fd is closed and the output is
  // drained (the kernel hands out buffered output first): its normal end.
  if (n < 0 && !(ch.terminal != 0 && errno == EIO)) {
    Log("channel %u: read: %s", id, strerror(errno));
  }
  link::AppendFrame(out_, FrameType::kEof, id, "");
  CloseOut(id);
  UpdateCongestion();
}

void Agent::OnInEvent(uint32_t id, uint32_t events) {
  auto it = ins_.find(id);
  if (it == ins_.end()) return;
  InChannel& ch = it->second;
  if ((events & (EPOLLERR | EPOLLHUP)) && ch.off == ch.buf.size()) {
    // The process closed its stdin (or exited): EPOLLERR on a pipe,
    // EPOLLHUP on a pty master once no slave fd is left. Nothing to write
    // that would reveal EPIPE, so tell the daemon now instead of at its
    // next write.
    ResetIn(id);
    return;
  }
  FlushIn(id);
}

void Agent::FlushIn(uint32_t id) {
  auto it = ins_.find(id);
  if (it == ins_.end()) return;
  InChannel& ch = it->second;
  while (ch.off < ch.buf.size()) {
    ssize_t n = ::write(ch.fd.get(), ch.buf.data() + ch.off, ch.buf.size() - ch.off);
    if (n > 0) {
      ch.off += n;
      ch.unreported += static_cast<uint32_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0 && errno != EPIPE && !(ch.terminal != 0 && errno == EIO)) {
      Log("channel %u: write: %s", id, strerror(errno));
    }
    // EPIPE (EIO for a pty): the process closed its stdin; the bytes can
    // never be delivered.
    ResetIn(id);
    return;
  }
  if (ch.off == ch.buf.size()) {
    std::string().swap(ch.buf);  // idle channels hold no memory
    ch.off = 0;
  }
  if (ch.eof && ch.buf.empty()) {
    CloseIn(id);  // the child sees EOF
    return;
  }
  if (ch.unreported > 0 && (ch.unreported >= kWindowBatch || ch.buf.empty())) {
    link::AppendWindow(out_, id, ch.unreported);
    ch.window += ch.unreported;
    ch.unreported = 0;
    UpdateCongestion();
  }
  UpdateInWatch(id, ch);
}

void Agent::ResetIn(uint32_t id) {
  link::AppendFrame(out_, FrameType::kReset, id, "");
  UpdateCongestion();
  CloseIn(id);
}

void Agent::CloseIn(uint32_t id) {
  auto it = ins_.find(id);
  if (it == ins_.end()) return;
  if (it->second.watched) Unwatch(it->second.fd.get());
  ins_.erase(it);
}

void Agent::CloseOut(uint32_t id) {
  auto it = outs_.find(id);
  if (it == outs_.end()) return;
  if (it->second.watched) Unwatch(it->second.fd.get());
  outs_.erase(it);
}

void Agent::UpdateOutWatch(uint32_t id, OutChannel& ch) {
  // Not polling at all (rather than polling with no events) when paused: a
  // pipe whose writer exited reports EPOLLHUP regardless, which would spin.
  bool want = ch.active && ch.credit > 0 && !congested_;
  if (want == ch.watched) return;
  if (want) {
    ch.watched = Watch(ch.fd.get(), Key(Tag::kOut, id), EPOLLIN);
    if (!ch.watched) Log("channel %u: epoll add: %s", id, strerror(errno));
  } else {
    Unwatch(ch.fd.get());
    ch.watched = false;
  }
}

void Agent::UpdateInWatch(uint32_t id, InChannel& ch) {
  // Always watched while active: with no events requested, EPOLLERR still
  // tells us when the process stops reading.
  uint32_t events = ch.off < ch.buf.size() ? uint32_t{EPOLLOUT} : 0u;
  if (!ch.active) return;
  if (!ch.watched) {
    ch.watched = Watch(ch.fd.get(), Key(Tag::kIn, id), events);
    if (!ch.watched) Log("channel %u: epoll add: %s", id, strerror(errno));
    ch.events = events;
    return;
  }
  if (events == ch.events) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = Key(Tag::kIn, id);
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, ch.fd.get(), &ev) == 0) ch.events = events;
}

// ---------------------------------------------------------------------------
// Link output

void Agent::FlushLink() {
  while (out_off_ < out_.size()) {
    ssize_t n = ::write(link_.get(), out_.data() + out_off_, out_.size() - out_off_);
    if (n > 0) {
      out_off_ += n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    Log("agent link write: %s", n < 0 ? strerror(errno) : "wrote nothing");
    done_ = true;
    return;
  }
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
    if (out_.capacity() > kKeepCapacity) out_.shrink_to_fit();
  } else if (out_off_ >= kKeepCapacity && out_off_ >= out_.size() / 2) {
    out_.erase(0, out_off_);
    out_off_ = 0;
  }
  UpdateCongestion();
  UpdateLinkWatch();
}

void Agent::UpdateLinkWatch() {
  uint32_t events = 0;
  if (Backlog() < kLinkInputPause) events |= EPOLLIN;
  if (Backlog() > 0) events |= EPOLLOUT;
  if (events == link_events_) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = Key(Tag::kLink, 0);
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, link_.get(), &ev) == 0) link_events_ = events;
}

void Agent::UpdateCongestion() {
  bool congested = Backlog() >= kLinkHighWater;
  if (congested == congested_) return;
  congested_ = congested;
  for (auto& [id, ch] : outs_) UpdateOutWatch(id, ch);
}

bool Agent::Watch(int fd, uint64_t key, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  return epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) == 0;
}

void Agent::Unwatch(int fd) { epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

}  // namespace sandboxd::agent

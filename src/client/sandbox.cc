#include "client/sandbox.h"

#include <atomic>

#include <boost/beast/http.hpp>

#include "client/connection.h"

namespace sandboxd::client {

namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// Client stream ids come from one process-wide counter (WIRE.md §3.1).
std::atomic<std::int64_t> g_next_client_stream_id{0};

constexpr auto kKeepalive = std::chrono::seconds(2);
constexpr auto kCloseTimeout = std::chrono::seconds(30);

}  // namespace

std::int64_t NextClientStreamId() { return g_next_client_stream_id.fetch_add(1); }

Result<std::shared_ptr<Connection>> Connection::Open(
    const Client& client, const std::string& target,
    const std::vector<std::pair<std::string, std::string>>& headers, std::string* sandbox_id) {
  const Endpoint& ep = client.endpoint();
  if (ep.scheme != "http") {
    return Fail(kUnsupported, "only http:// endpoints are supported (got " + ep.scheme + ")");
  }
  std::shared_ptr<Connection> c(new Connection());
  tcp::resolver resolver(c->ioc_);
  beast::error_code ec;
  auto results = resolver.resolve(ep.host, ep.port, ec);
  if (ec) return Fail(kConnectionFailed, "resolving " + ep.host + ": " + ec.message());

  auto& tcp_layer = beast::get_lowest_layer(c->ws_);
  tcp_layer.expires_after(client.options().request_timeout);
  bool connected = false, finished = false;
  tcp_layer.async_connect(results, [&](beast::error_code e, const tcp::endpoint&) {
    ec = e;
    connected = !e;
    finished = true;
  });
  while (!finished) c->ioc_.run_one();
  if (!connected) {
    std::string what = ec == beast::error::timeout ? std::string("timed out") : ec.message();
    return Fail(kConnectionFailed, "cannot connect to " + ep.Origin() + ": " + what);
  }

  // Small request frames back to back (spawn, then processWait): without
  // TCP_NODELAY, Nagle + delayed ACK add ~40 ms to such round trips.
  tcp_layer.socket().set_option(tcp::no_delay(true), ec);
  c->ws_.set_option(websocket::stream_base::decorator([&headers, &client](websocket::request_type& req) {
    for (const auto& [k, v] : client.AuthHeaders()) req.set(k, v);
    for (const auto& [k, v] : headers) req.set(k, v);
  }));
  websocket::response_type res;
  bool handshaken = false;
  tcp_layer.expires_after(client.options().handshake_timeout);
  c->ws_.async_handshake(res, ep.HostHeader(), target, [&](beast::error_code e) {
    ec = e;
    handshaken = true;
  });
  while (!handshaken) c->ioc_.run_one();
  // Drop the decorator: it references locals.
  c->ws_.set_option(websocket::stream_base::decorator([](websocket::request_type&) {}));
  if (ec) {
    if (res.result_int() != 0 && res.result_int() != 101) {
      return Fail(DecodeHttpError(static_cast<int>(res.result_int()), res.body()));
    }
    std::string what = ec == beast::error::timeout ? std::string("timed out") : ec.message();
    return Fail(kConnectionFailed, "WebSocket upgrade to " + ep.Origin() + target + " failed: " + what);
  }
  if (auto it = res.find("x-deno-sandbox-id"); it != res.end()) {
    *sandbox_id = std::string(it->value());
  } else {
    return Fail(kProtocolError, "upgrade response lacks x-deno-sandbox-id");
  }
  tcp_layer.expires_never();
  c->ws_.text(true);
  c->ws_.read_message_max(128 * 1024 * 1024);
  c->Start();
  return c;
}

void Connection::Start() {
  ioc_.restart();
  ReadNext();
  ScheduleKeepalive();
  thread_ = std::thread([this] { ioc_.run(); });
  io_thread_id_ = thread_.get_id();
}

void Connection::Shutdown() {
  if (!thread_.joinable()) return;
  if (OnIoThread()) {  // destroyed from a callback: cannot join ourselves
    guard_.reset();
    ioc_.stop();
    thread_.detach();
    return;
  }
  (void)Close();
}

Status Connection::Close() {
  if (!thread_.joinable()) return {};
  if (OnIoThread()) return Fail(kInvalidArgument, "Close() called from an output callback");
  Post([this] { StartClose(); });
  bool ok = WaitClosed(std::chrono::duration_cast<std::chrono::milliseconds>(kCloseTimeout));
  if (!ok) {
    Post([this] {
      beast::error_code ignored;
      beast::get_lowest_layer(ws_).socket().close(ignored);
      MarkClosed(Error::Make(kConnectionClosed, "close handshake timed out"));
    });
    WaitClosed(std::chrono::seconds(5));
  }
  guard_.reset();
  ioc_.stop();
  thread_.join();
  // The I/O thread is gone: make sure nobody can wait for it any more.
  MarkClosed(Error::Make(kConnectionClosed, "connection closed by client"));
  if (!ok) return Fail(kTimeout, "close handshake timed out");
  return {};
}

void Connection::StartClose() {
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
  }
  close_requested_ = true;
  if (!writing_) WriteNext();
}

void Connection::Enqueue(std::string text, std::function<void(Status)> done) {
  std::optional<Error> err;
  {
    std::lock_guard lock(mu_);
    if (closed_) err = close_error_;
  }
  if (!err && close_requested_) err = Error::Make(kConnectionClosed, "connection is closing");
  if (err) {
    if (done) done(Fail(*err));
    return;
  }
  writes_.push_back({std::move(text), std::move(done)});
  if (!writing_) WriteNext();
}

void Connection::WriteNext() {
  if (writes_.empty()) {
    if (close_requested_ && !close_sent_) {
      close_sent_ = true;
      writing_ = true;
      ws_.async_close(websocket::close_code::normal, [this](beast::error_code ec) {
        writing_ = false;
        MarkClosed(ec ? Error::Make(kConnectionClosed, "connection closed: " + ec.message())
                      : Error::Make(kConnectionClosed, "connection closed by client"));
        beast::error_code ignored;
        beast::get_lowest_layer(ws_).socket().close(ignored);
      });
    }
    return;
  }
  writing_ = true;
  ws_.async_write(asio::buffer(writes_.front().text), [this](beast::error_code ec, std::size_t) {
    writing_ = false;
    Outgoing done = std::move(writes_.front());
    writes_.pop_front();
    if (ec) {
      Error e = Error::Make(kConnectionClosed, "write failed: " + ec.message());
      if (done.done) done.done(Fail(e));
      for (auto& w : writes_) {
        if (w.done) w.done(Fail(e));
      }
      writes_.clear();
      MarkClosed(e);
      return;
    }
    if (done.done) done.done({});
    WriteNext();
  });
}

void Connection::ReadNext() {
  ws_.async_read(read_buf_, [this](beast::error_code ec, std::size_t) {
    if (ec) {
      std::string why;
      if (ec == websocket::error::closed) {
        auto reason = ws_.reason();
        why = "connection closed by server (code " + std::to_string(reason.code) +
              (reason.reason.empty() ? std::string()
                                        : ": " + std::string(reason.reason.data(), reason.reason.size())) + ")";
      } else {
        why = "connection lost: " + ec.message();
      }
      MarkClosed(Error::Make(kConnectionClosed, why));
      beast::error_code ignored;
      ping_timer_.cancel();
      if (ec != websocket::error::closed) beast::get_lowest_layer(ws_).socket().close(ignored);
      return;
    }
    std::string text = beast::buffers_to_string(read_buf_.data());
    read_buf_.consume(read_buf_.size());
    HandleMessage(text);
    ReadNext();
  });
}

void Connection::ScheduleKeepalive() {
  ping_timer_.expires_after(kKeepalive);
  ping_timer_.async_wait([this](beast::error_code ec) {
    if (ec) return;
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
    }
    if (!close_requested_) Enqueue("ping", nullptr);
    ScheduleKeepalive();
  });
}

void Connection::MarkClosed(Error why) {
  std::vector<std::shared_ptr<Slot>> callbacks;
  std::vector<std::pair<std::int64_t, StreamSink>> sinks;
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
    close_error_ = why;
    for (auto& [id, slot] : pending_) {
      if (slot->done) {
        callbacks.push_back(slot);
      } else {
        slot->result = Fail(why);
      }
    }
    pending_.clear();
    for (auto& weak : processes_) {
      if (auto p = weak.lock()) {
        p->stdout_done = p->stderr_done = true;
        if (!p->status) p->status = Fail(why.Wrap("waiting for process"));
      }
    }
    for (auto& [sid, s] : in_streams_) {
      if (s.sink) sinks.emplace_back(sid, s.sink);
    }
    in_streams_.clear();
  }
  ping_timer_.cancel();
  cv_.notify_all();
  for (auto& slot : callbacks) slot->done(Fail(why));
  for (auto& [sid, sink] : sinks) sink(StreamNotification{StreamEvent::kError, sid, {}, why});
}

void Connection::HandleMessage(std::string_view text) {
  if (text == "pong" || text == "ping") return;
  json msg = ParseServerMessage(text);
  if (!msg.is_object()) return;  // not JSON: ignore (the SDK would close with 4000)
  auto id = msg.find("id");
  if (id != msg.end() && !msg.contains("method")) {
    if (!id->is_number_integer()) return;
    std::shared_ptr<Slot> slot;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(id->get<std::int64_t>());
      if (it == pending_.end()) return;
      slot = it->second;
      pending_.erase(it);
      if (!slot->done) slot->result = DecodeRpcResponse(msg);
    }
    if (slot->done) {
      slot->done(DecodeRpcResponse(msg));
    } else {
      cv_.notify_all();
    }
    return;
  }
  auto n = ParseStreamNotification(msg);
  if (n && *n) HandleStream(std::move(**n));
  // Other notifications (e.g. deno watcher restarts) are ignored.
}

void Connection::HandleStream(StreamNotification n) {
  std::shared_ptr<ProcessState> owner;
  bool is_stdout = true;
  if (n.event == StreamEvent::kCancel) {  // server cancels one of our streams
    std::lock_guard lock(mu_);
    cancelled_out_.insert(n.stream_id);
    auto it = stdin_owners_.find(n.stream_id);
    if (it != stdin_owners_.end()) {
      if (auto p = it->second.lock()) p->stdin_cancelled = true;
      stdin_owners_.erase(it);
    }
    return;
  }
  {
    std::unique_lock lock(mu_);
    auto it = in_streams_.find(n.stream_id);
    if (it == in_streams_.end()) {
      // Lenient: data without start is parked too (the SDK would drop it).
      it = in_streams_.emplace(n.stream_id, InStream{}).first;
    }
    InStream& s = it->second;
    if (s.sink) {
      StreamSink sink = s.sink;
      bool last = n.event == StreamEvent::kEnd || n.event == StreamEvent::kError;
      if (last) in_streams_.erase(it);
      lock.unlock();
      sink(n);
      return;
    }
    if (!s.owner) {
      switch (n.event) {
        case StreamEvent::kEnqueue:
          if (!n.data.empty()) s.buffered.push_back(std::move(n.data));
          break;
        case StreamEvent::kEnd:
        case StreamEvent::kError:
          s.ended = true;
          s.error = n.error;
          s.failed = n.event == StreamEvent::kError;
          break;
        default:
          break;
      }
      return;
    }
    owner = s.owner;
    is_stdout = s.is_stdout;
    if (n.event == StreamEvent::kEnd || n.event == StreamEvent::kError) in_streams_.erase(it);
  }
  if (n.event == StreamEvent::kEnqueue) {
    if (!n.data.empty()) Deliver(owner, is_stdout, std::move(n.data));
  } else if (n.event == StreamEvent::kEnd || n.event == StreamEvent::kError) {
    FinishStream(owner, is_stdout);
  }
}

void Connection::Deliver(const std::shared_ptr<ProcessState>& p, bool is_stdout, std::string chunk) {
  const OutputCallback& cb = is_stdout ? p->on_stdout : p->on_stderr;
  if (cb) {
    cb(chunk);
    return;
  }
  std::lock_guard lock(mu_);
  (is_stdout ? p->stdout_buf : p->stderr_buf) += chunk;
}

void Connection::FinishStream(const std::shared_ptr<ProcessState>& p, bool is_stdout) {
  {
    std::lock_guard lock(mu_);
    (is_stdout ? p->stdout_done : p->stderr_done) = true;
  }
  cv_.notify_all();
}

void Connection::AttachProcess(std::shared_ptr<ProcessState> proc) {
  Post([this, proc] {
    struct Flush {
      bool is_stdout;
      std::deque<std::string> chunks;
      bool ended;
    };
    std::vector<Flush> flushes;
    {
      std::lock_guard lock(mu_);
      if (closed_) return;  // MarkClosed already finished the process
      processes_.push_back(proc);
      if (proc->stdin_id) stdin_owners_[*proc->stdin_id] = proc;
      for (auto [sid, is_stdout] : {std::pair{proc->stdout_id, true}, std::pair{proc->stderr_id, false}}) {
        if (!sid) continue;
        InStream& s = in_streams_[*sid];
        Flush f{is_stdout, std::move(s.buffered), s.ended};
        s.buffered.clear();
        if (s.ended) {
          in_streams_.erase(*sid);
        } else {
          s.owner = proc;
          s.is_stdout = is_stdout;
        }
        flushes.push_back(std::move(f));
      }
    }
    for (auto& f : flushes) {
      for (auto& chunk : f.chunks) Deliver(proc, f.is_stdout, std::move(chunk));
      if (f.ended) FinishStream(proc, f.is_stdout);
    }
    CallAsync("processWait", json{{"pid", proc->pid}}, [this, proc](Result<json> r) {
      {
        std::lock_guard lock(mu_);
        if (!proc->status) {
          if (r) {
            proc->status = DecodeProcessStatus(*r);
          } else {
            proc->status = Fail(r.error());
          }
        }
      }
      cv_.notify_all();
    });
  });
}

void Connection::CallAsync(std::string_view method, json params, Completion done) {
  auto slot = std::make_shared<Slot>();
  slot->done = std::move(done);
  std::int64_t id;
  {
    std::unique_lock lock(mu_);
    if (closed_) {
      Error e = close_error_;
      lock.unlock();
      slot->done(Fail(e));
      return;
    }
    id = next_id_++;
    pending_[id] = slot;
  }
  std::string text = MakeRequest(id, method, params);
  auto send = [this, text = std::move(text), id]() mutable {
    Enqueue(std::move(text), [this, id](Status s) {
      if (s) return;
      std::shared_ptr<Slot> slot;
      {
        std::lock_guard lock(mu_);
        auto it = pending_.find(id);
        if (it == pending_.end()) return;
        slot = it->second;
        pending_.erase(it);
      }
      slot->done(Fail(s.error()));
    });
  };
  if (OnIoThread()) {
    send();
  } else {
    Post(std::move(send));
  }
}

Result<json> Connection::Call(std::string_view method, json params) {
  if (OnIoThread()) return Fail(kInvalidArgument, "blocking call from an output callback");
  auto slot = std::make_shared<Slot>();
  std::int64_t id;
  {
    std::lock_guard lock(mu_);
    if (closed_) return Fail(close_error_);
    id = next_id_++;
    pending_[id] = slot;
  }
  std::string text = MakeRequest(id, method, params);
  Post([this, text = std::move(text), id, slot]() mutable {
    Enqueue(std::move(text), [this, id, slot](Status s) {
      if (s) return;
      {
        std::lock_guard lock(mu_);
        pending_.erase(id);
        if (!slot->result) slot->result = Fail(s.error());
      }
      cv_.notify_all();
    });
  });
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return slot->result.has_value(); });
  return std::move(*slot->result);
}

Status Connection::SendAndWait(std::string text) {
  if (OnIoThread()) return Fail(kInvalidArgument, "blocking call from an output callback");
  struct Done {
    std::optional<Status> status;
  };
  auto d = std::make_shared<Done>();
  {
    std::lock_guard lock(mu_);
    if (closed_) return Fail(close_error_);
  }
  Post([this, text = std::move(text), d]() mutable {
    Enqueue(std::move(text), [this, d](Status s) {
      {
        std::lock_guard lock(mu_);
        d->status = std::move(s);
      }
      cv_.notify_all();
    });
  });
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return d->status.has_value() || closed_; });
  if (d->status) return *d->status;
  return Fail(close_error_);
}

void Connection::SendAsync(std::string text, std::function<void(Status)> done) {
  Post([this, text = std::move(text), done = std::move(done)]() mutable { Enqueue(std::move(text), std::move(done)); });
}

void Connection::AttachSink(std::int64_t stream_id, StreamSink sink) {
  Post([this, stream_id, sink = std::move(sink)] {
    std::deque<std::string> buffered;
    bool ended = false;
    std::optional<Error> error;
    {
      std::lock_guard lock(mu_);
      if (closed_) {
        ended = true;
        error = close_error_;
      } else {
        InStream& s = in_streams_[stream_id];
        buffered = std::move(s.buffered);
        ended = s.ended;
        error = s.error;
        if (s.failed && !error) error = Error::Make(kRpcError, "stream failed (no error object)");
        if (ended) {
          in_streams_.erase(stream_id);
        } else {
          s.buffered.clear();
          s.sink = sink;
        }
      }
    }
    for (auto& chunk : buffered) {
      StreamNotification n{StreamEvent::kEnqueue, stream_id, std::move(chunk), std::nullopt};
      sink(n);
    }
    if (ended) {
      StreamNotification n{error ? StreamEvent::kError : StreamEvent::kEnd, stream_id, {}, error};
      sink(n);
    }
  });
}

bool Connection::OutStreamCancelled(std::int64_t stream_id) {
  std::lock_guard lock(mu_);
  return cancelled_out_.count(stream_id) > 0;
}

// ---------------------------------------------------------------------------
// Process

std::int64_t Process::pid() const { return state_->pid; }

Status Process::WriteStdin(std::string_view data) {
  if (!state_->stdin_id) return Fail(kInvalidArgument, "stdin is not piped");
  {
    std::lock_guard lock(conn_->mu());
    if (state_->stdin_closed) return Fail(kInvalidArgument, "stdin already closed");
    if (state_->stdin_cancelled) return Fail(kConnectionClosed, "the process no longer reads stdin");
  }
  if (data.empty()) return {};
  // Keep frames small (WIRE.md §2.9).
  constexpr size_t kChunk = 64 * 1024;
  for (size_t off = 0; off < data.size(); off += kChunk) {
    auto s = conn_->SendAndWait(
        MakeStreamNotification(StreamEvent::kEnqueue, *state_->stdin_id, data.substr(off, kChunk)));
    if (!s) return s;
  }
  return {};
}

Status Process::CloseStdin() {
  if (!state_->stdin_id) return {};
  {
    std::lock_guard lock(conn_->mu());
    if (state_->stdin_closed || state_->stdin_cancelled) return {};
    state_->stdin_closed = true;
  }
  return conn_->SendAndWait(MakeStreamNotification(StreamEvent::kEnd, *state_->stdin_id));
}

Result<ProcessStatus> Process::Wait() {
  if (conn_->OnIoThread()) return Fail(kInvalidArgument, "Wait() called from an output callback");
  auto& s = *state_;
  conn_->WaitUntil([&] { return s.status.has_value() && s.stdout_done && s.stderr_done; }, std::nullopt);
  std::lock_guard lock(conn_->mu());
  return *s.status;
}

Result<ProcessStatus> Process::WaitFor(std::chrono::milliseconds timeout) {
  if (conn_->OnIoThread()) return Fail(kInvalidArgument, "WaitFor() called from an output callback");
  auto& s = *state_;
  bool ok = conn_->WaitUntil([&] { return s.status.has_value() && s.stdout_done && s.stderr_done; },
                             std::chrono::steady_clock::now() + timeout);
  if (!ok) return Fail(kTimeout, "process " + std::to_string(s.pid) + " still running");
  std::lock_guard lock(conn_->mu());
  return *s.status;
}

Status Process::Kill(std::string_view signal) {
  json params = {{"pid", state_->pid}};
  if (!signal.empty()) params["signal"] = signal;
  auto r = conn_->Call("processKill", std::move(params));
  if (!r) return std::unexpected(r.error());
  return {};
}

std::string Process::TakeStdout() {
  std::lock_guard lock(conn_->mu());
  return std::exchange(state_->stdout_buf, {});
}

std::string Process::TakeStderr() {
  std::lock_guard lock(conn_->mu());
  return std::exchange(state_->stderr_buf, {});
}

// ---------------------------------------------------------------------------
// Sandbox

Sandbox::Sandbox(Sandbox&&) noexcept = default;
Sandbox& Sandbox::operator=(Sandbox&& other) noexcept {
  if (this != &other) {
    if (conn_) (void)conn_->Close();
    client_ = std::move(other.client_);
    id_ = std::move(other.id_);
    conn_ = std::move(other.conn_);
  }
  return *this;
}
Sandbox::~Sandbox() {
  if (conn_) (void)conn_->Close();
}

Result<Sandbox> Sandbox::Create(const Client& client, const CreateOptions& options) {
  SandboxConfig config;
  auto timeout = ParseTimeout(options.timeout);
  if (!timeout) return std::unexpected(timeout.error());
  if (*timeout) config.stop_at_ms = NowMs() + (*timeout)->count();
  config.memory_mb = options.memory_mb;
  config.labels = options.labels;
  config.allow_net = options.allow_net;
  for (size_t i = 0; i < options.secrets.size(); ++i) {
    for (size_t k = 0; k < i; ++k) {
      // The header is a JSON object: a repeated name would silently keep one value.
      if (options.secrets[k].name == options.secrets[i].name) {
        return Fail(kInvalidArgument, "secret " + options.secrets[i].name + " is given more than once");
      }
    }
  }
  config.secrets = options.secrets;
  config.region = options.region;
  config.isolation = options.isolation;
  auto header = EncodeConfigHeader(BuildConfigJson(config));
  if (!header) return std::unexpected(header.error());
  std::string id;
  auto conn = Connection::Open(client, "/api/v3/sandboxes/create", {{"x-deno-sandbox-config", *header}}, &id);
  if (!conn) return std::unexpected(conn.error().Wrap("creating sandbox"));
  Sandbox sandbox(client, std::move(id), std::move(*conn));
  if (!options.env.empty()) {
    // In parallel, like the SDK.
    struct Pending {
      size_t left;
      std::optional<Error> error;
    };
    auto pending = std::make_shared<Pending>(Pending{options.env.size(), std::nullopt});
    auto* c = sandbox.conn_.get();
    for (const auto& [k, v] : options.env) {
      c->CallAsync("envSet", json{{"key", k}, {"value", v}}, [c, pending](Result<json> r) {
        {
          std::lock_guard lock(c->mu());
          if (!r && !pending->error) pending->error = r.error();
          --pending->left;
        }
        c->Notify();
      });
    }
    c->WaitUntil([&] { return pending->left == 0; }, std::nullopt);
    if (pending->error) {
      Error e = pending->error->Wrap("setting sandbox environment");
      (void)sandbox.Close();
      return Fail(std::move(e));
    }
  }
  return sandbox;
}

Result<Sandbox> Sandbox::Connect(const Client& client, std::string_view id) {
  if (!IsValidSandboxId(id)) return Fail(kInvalidArgument, "invalid sandbox id '" + std::string(id) + "'");
  std::string got;
  auto conn = Connection::Open(client, "/api/v3/sandbox/" + std::string(id) + "/connect", {}, &got);
  if (!conn) return std::unexpected(conn.error().Wrap("connecting to " + std::string(id)));
  return Sandbox(client, got.empty() ? std::string(id) : got, std::move(*conn));
}

bool Sandbox::closed() const { return !conn_ || conn_->closed(); }

Result<json> Sandbox::Call(std::string_view method, json params) {
  if (!conn_) return Fail(kConnectionClosed, "sandbox was moved from");
  return conn_->Call(method, std::move(params));
}

Result<Process> Sandbox::Spawn(std::string_view command, const std::vector<std::string>& args,
                               SpawnOptions options) {
  if (!conn_) return Fail(kConnectionClosed, "sandbox was moved from");
  auto state = std::make_shared<ProcessState>();
  json params = {{"command", command}};
  if (!args.empty()) params["args"] = args;
  if (!options.env.empty()) {
    json env = json::object();
    for (const auto& [k, v] : options.env) env[k] = v;
    params["env"] = std::move(env);
  }
  if (options.cwd) params["cwd"] = *options.cwd;
  if (options.stdin_mode == Stdio::kPiped) {
    state->stdin_id = NextClientStreamId();
    params["stdinStreamId"] = *state->stdin_id;
    auto s = conn_->SendAndWait(MakeStreamNotification(StreamEvent::kStart, *state->stdin_id));
    if (!s) return std::unexpected(s.error());
  }
  params["stdout"] = options.stdout_mode == Stdio::kPiped ? "piped" : "null";
  params["stderr"] = options.stderr_mode == Stdio::kPiped ? "piped" : "null";
  state->on_stdout = std::move(options.on_stdout);
  state->on_stderr = std::move(options.on_stderr);
  auto r = conn_->Call("spawn", std::move(params));
  if (!r) return std::unexpected(r.error().Wrap("spawn " + std::string(command)));
  if (!r->is_object() || !r->contains("pid") || !(*r)["pid"].is_number_integer()) {
    return Fail(kProtocolError, "spawn: malformed result " + r->dump());
  }
  state->pid = (*r)["pid"].get<std::int64_t>();
  if (auto it = r->find("stdoutStreamId"); it != r->end() && it->is_number_integer()) {
    state->stdout_id = it->get<std::int64_t>();
    state->stdout_done = false;
  }
  if (auto it = r->find("stderrStreamId"); it != r->end() && it->is_number_integer()) {
    state->stderr_id = it->get<std::int64_t>();
    state->stderr_done = false;
  }
  conn_->AttachProcess(state);
  return Process(conn_, state);
}

Status Sandbox::EnvSet(std::string_view key, std::string_view value) {
  auto r = Call("envSet", json{{"key", key}, {"value", value}});
  if (!r) return std::unexpected(r.error());
  return {};
}

Result<std::optional<std::string>> Sandbox::EnvGet(std::string_view key) {
  auto r = Call("envGet", json{{"key", key}});
  if (!r) return std::unexpected(r.error());
  if (r->is_string()) return std::optional<std::string>(r->get<std::string>());
  return std::optional<std::string>();
}

Status Sandbox::Kill() {
  if (!conn_) return Fail(kConnectionClosed, "sandbox was moved from");
  auto s = client_.Kill(id_);
  if (!s) return s;
  if (!conn_->WaitClosed(std::chrono::seconds(30))) {
    return Fail(kTimeout, "sandbox " + id_ + " killed but the server did not close the connection");
  }
  return conn_->Close();
}

Status Sandbox::Close() {
  if (!conn_) return {};
  return conn_->Close();
}

}  // namespace sandboxd::client

#include "daemon/api/ws_session.h"

#include <spdlog/spdlog.h>

#include <csignal>

#include "daemon/api/fast_path.h"
#include "daemon/api/rpc_params.h"
#include "daemon/api/wire.h"

#include "common/base64.h"
#include "common/signals.h"
#include "daemon/core/config.h"
#include "daemon/ingress/expose_api.h"

namespace sandboxd::api {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
using nlohmann::json;

namespace {
constexpr size_t kMaxMessage = 64u << 20;          // larger client messages: close 1009
constexpr size_t kSendHighWater = 4u << 20;        // stop granting agent credit above this
constexpr size_t kMaxUnclaimed = 16u << 20;        // client stream data nobody claimed yet
constexpr size_t kMaxIncomingStreams = 1024;
constexpr size_t kLinkPauseBytes = 8u << 20;       // stop reading the socket while stdin backs up

// Environment names and values must survive the trip into execve.
bool ValidEnvKey(std::string_view k) {
  return !k.empty() && k.size() <= 4096 && k.find('=') == std::string_view::npos &&
         k.find('\0') == std::string_view::npos;
}
bool ValidEnvValue(std::string_view v) { return v.size() <= (1u << 20) && v.find('\0') == std::string_view::npos; }

}  // namespace

WsSession::WsSession(beast::tcp_stream&& stream, std::shared_ptr<core::Sandbox> sb)
    : ws_(std::move(stream)), sb_(std::move(sb)), resume_timer_(ws_.get_executor()) {}

WsSession::~WsSession() {
  if (attached_ && sb_) sb_->Detach(this);
}

void WsSession::Accept(Request req) {
  beast::get_lowest_layer(ws_).expires_never();
  websocket::stream_base::timeout t{};
  t.handshake_timeout = std::chrono::seconds(30);
  t.idle_timeout = std::chrono::seconds(60);  // the SDK pings every 2 s; 60 s of silence is a dead peer
  t.keep_alive_pings = true;
  ws_.set_option(t);
  ws_.read_message_max(0);  // enforced in ReadNext
  std::string id = sb_->id();
  ws_.set_option(websocket::stream_base::decorator([id](websocket::response_type& res) {
    res.set("x-deno-sandbox-id", id);
    res.set(beast::http::field::server, "sandboxd");
  }));
  sb_->Attach(this);
  attached_ = true;
  auto self = shared_from_this();
  ws_.async_accept(req, [this, self](beast::error_code ec) {
    if (ec) {
      Teardown();
      return;
    }
    ws_.text(true);
    // One frame per message: Beast's default splits writes into 4 KiB frames,
    // and the SDK's `ws` refuses messages of more than 16384 fragments (which
    // broke readFile above ~48 MiB); fewer frames are cheaper for both sides.
    ws_.auto_fragment(false);
    ReadNext();
  });
}

void WsSession::ReadNext() {
  if (closing_ || torn_down_) return;
  if (sb_ && sb_->running() && sb_->link().PendingBytes() > kLinkPauseBytes) {
    // Back-pressure for stdin: the agent's process is not consuming; stop
    // reading the socket (TCP pushes back on the client) and look again soon.
    resume_timer_.expires_after(std::chrono::milliseconds(5));
    auto self = shared_from_this();
    resume_timer_.async_wait([this, self](beast::error_code ec) {
      if (!ec) ReadNext();
    });
    return;
  }
  auto self = shared_from_this();
  reading_ = true;
  // Frames are read piecewise and the message size is enforced here rather
  // than through read_message_max: Boost 1.74's teardown after its own
  // "message too big" failure resets the connection before the client can
  // read the 1009 close frame. Closing through async_close drains the rest of
  // the oversized message and completes the close handshake properly.
  ws_.async_read_some(rbuf_, 1 << 20, [this, self](beast::error_code ec, size_t) {
    reading_ = false;
    if (ec) {
      if (ec != websocket::error::closed) spdlog::debug("ws {}: read ended: {}", sb_->id(), ec.message());
      Teardown();
      return;
    }
    if (rbuf_.size() > kMaxMessage) {
      rbuf_.consume(rbuf_.size());
      CloseWith(1009, "message too big");
      return;
    }
    if (ws_.is_message_done()) {
      std::string text = beast::buffers_to_string(rbuf_.data());
      rbuf_.consume(rbuf_.size());
      OnMessage(text);
    }
    ReadNext();
  });
}

void WsSession::OnMessage(std::string_view text) {
  if (closing_) return;
  if (text == "ping") {  // the SDK's keepalive; not JSON (WIRE.md §2.1)
    Send("pong");
    return;
  }
  if (auto chunk = ParseStreamEnqueue(text)) return OnClientChunk(chunk->stream_id, chunk->base64);
  json msg = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (msg.is_discarded()) return CloseWith(4000, "Invalid JSON");
  auto jsonrpc = msg.is_object() ? msg.find("jsonrpc") : msg.end();
  if (!msg.is_object() || jsonrpc == msg.end() || *jsonrpc != "2.0" || !msg.contains("method") ||
      !msg["method"].is_string()) {
    return CloseWith(4001, "Invalid message");
  }
  const std::string& method = msg["method"].get_ref<const std::string&>();
  json params = json::object();
  if (auto p = msg.find("params"); p != msg.end() && !p->is_null()) params = *p;
  auto id = msg.find("id");
  if (id == msg.end()) {
    if (params.is_object()) HandleNotification(method, params);
    return;
  }
  if (!id->is_number_integer()) return CloseWith(4001, "Invalid message");
  int64_t rid = id->get<int64_t>();
  if (!params.is_object()) return ReplyRpcError(rid, -32602, "Invalid params: params must be an object");
  HandleRequest(rid, method, params);
}

void WsSession::HandleRequest(int64_t id, const std::string& method, const json& p) {
  using Handler = void (WsSession::*)(int64_t, const json&);
  static const std::map<std::string, Handler, std::less<>> kMethods = {
      {"spawn", &WsSession::Spawn},           {"processWait", &WsSession::ProcessWait},
      {"processKill", &WsSession::ProcessKill}, {"envGet", &WsSession::EnvGet},
      {"envSet", &WsSession::EnvSet},         {"envDelete", &WsSession::EnvDelete},
      {"envToObject", &WsSession::EnvToObject}, {"fetch", &WsSession::Fetch},
  };
  if (method == "abort") {
    if (IsIntKey(p, "abortId")) {
      auto it = aborts_.find(p["abortId"].get<int64_t>());
      if (it != aborts_.end()) {
        auto cancel = std::move(it->second);
        aborts_.erase(it);
        cancel();
      }
    }
    return ReplyOk(id, nullptr);  // also for unknown or finished operations (WIRE.md §4.1)
  }
  if (method == "exposeHttp") {  // second step of sandbox.exposeHttp (WIRE.md §4.7)
    if (!sb_->running()) return ReplyAppError(id, ErrorObject("Error", "", "the sandbox is stopping"));
    auto r = ingress::ExposeHttpRpc(sb_->exposures(), sb_->id(), sb_->init_pid(), p);
    if (r) return ReplyOk(id, nullptr);
    if (r.error().invalid_params) return ReplyRpcError(id, -32602, r.error().message);
    return ReplyAppError(id, r.error().err ? ErrorObjectFromErrno(r.error().err, r.error().message)
                                           : ErrorObject("Error", "", r.error().message));
  }
  auto it = kMethods.find(method);
  if (it != kMethods.end()) {
    if (!sb_->running()) return ReplyAppError(id, ErrorObject("Error", "", "the sandbox is stopping"));
    return (this->*(it->second))(id, p);
  }
  if (HandleFsRequest(id, method, p)) return;
  ReplyRpcError(id, -32601, "Method not found");
}

// ---------------------------------------------------------------- streams

void WsSession::HandleNotification(const std::string& method, const json& p) {
  if (!IsIntKey(p, "streamId")) return;
  int64_t sid = p["streamId"].get<int64_t>();
  if (method == "$sandbox.stream.start") {
    if (incoming_.size() >= kMaxIncomingStreams) return CloseWith(1008, "too many open streams");
    incoming_.try_emplace(sid);
    return;
  }
  if (method == "$sandbox.stream.cancel") {  // the client no longer wants one of our streams
    if (auto f = fetches_.find(sid); f != fetches_.end()) {
      auto call = std::move(f->second);
      fetches_.erase(f);
      call->Cancel();
      return;
    }
    auto it = outgoing_.find(sid);
    if (it == outgoing_.end()) return;
    Outgoing o = it->second;
    outgoing_.erase(it);
    if (sb_->running()) sb_->link().ResetInbound(o.channel);
    sb_->OutputClosed(o.pid);
    return;
  }
  auto it = incoming_.find(sid);
  if (it == incoming_.end()) return;  // unknown client stream: ignore (WIRE.md §3.2)
  Incoming& in = it->second;
  if (method == "$sandbox.stream.enqueue") {
    if (auto data = OptString(p, "data")) OnClientChunk(sid, *data);
    return;
  }
  if (method == "$sandbox.stream.end" || method == "$sandbox.stream.error") {
    bool failed = method == "$sandbox.stream.error";
    json err = failed ? p.value("error", json(nullptr)) : json(nullptr);
    if (in.on_done) {
      auto on_done = std::move(in.on_done);
      incoming_.erase(it);
      return on_done(failed);
    }
    if (!in.channel) {
      in.ended = true;
      if (failed) in.error = err;
      return;
    }
    auto on_error = std::move(in.on_error);
    uint32_t ch = *in.channel;
    incoming_.erase(it);
    if (failed && on_error) return on_error(err);
    if (sb_->running()) sb_->link().WriteEof(ch);  // a process's stdin sees EOF either way
  }
}

void WsSession::OnClientChunk(int64_t sid, std::string_view base64) {
  auto it = incoming_.find(sid);
  if (it == incoming_.end()) return;  // unknown client stream: ignore (WIRE.md §3.2)
  Incoming& in = it->second;
  auto bytes = Base64Decode(base64);
  if (!bytes) return CloseWith(1007, "stream data is not base64");
  if (bytes->empty()) return;
  if (in.channel) {
    if (sb_->running()) sb_->link().Write(*in.channel, *bytes);
    return;
  }
  if (in.on_chunk) return in.on_chunk(std::move(*bytes));
  unclaimed_bytes_ += bytes->size();
  if (unclaimed_bytes_ > kMaxUnclaimed) return CloseWith(1008, "too much unclaimed stream data");
  in.bytes += bytes->size();
  in.chunks.push_back(std::move(*bytes));
}

void WsSession::ClaimIncoming(int64_t sid, uint32_t ch, std::function<void()> on_reset,
                              std::function<void(const json&)> on_error) {
  auto& link = sb_->link();
  link.OpenOutbound(ch, std::move(on_reset));
  auto it = incoming_.find(sid);
  if (it == incoming_.end()) {  // vanished (cancelled) before it was claimed
    link.WriteEof(ch);
    return;
  }
  if (it->second.error && on_error) {  // failed before anyone claimed it
    json err = std::move(*it->second.error);
    unclaimed_bytes_ -= it->second.bytes;
    incoming_.erase(it);
    on_error(err);
    return;
  }
  it->second.on_error = std::move(on_error);
  for (auto& c : it->second.chunks) link.Write(ch, c);
  unclaimed_bytes_ -= it->second.bytes;
  if (it->second.ended) {
    link.WriteEof(ch);
    incoming_.erase(it);
    return;
  }
  it->second.chunks.clear();
  it->second.bytes = 0;
  it->second.channel = ch;
}

void WsSession::ForwardOutput(int64_t stream_id, std::string_view data) {
  Notify("$sandbox.stream.enqueue",
         {{"streamId", stream_id}, {"data", Base64Encode(data)}});
}

void WsSession::ReleaseCredit() {
  if (deferred_credit_.empty() || out_bytes_ > kSendHighWater / 2 || !sb_->running()) return;
  auto credits = std::move(deferred_credit_);
  deferred_credit_.clear();
  for (auto [ch, n] : credits) sb_->link().Consumed(ch, n);
}

// ---------------------------------------------------------------- processes

void WsSession::Spawn(int64_t id, const json& p) {
  auto command = OptString(p, "command");
  if (!command || command->empty()) return ReplyRpcError(id, -32602, "Invalid params: command must be a string");
  std::vector<std::string> argv{*command};
  if (auto a = p.find("args"); a != p.end() && !a->is_null()) {
    if (!a->is_array()) return ReplyRpcError(id, -32602, "Invalid params: args must be an array of strings");
    for (const auto& s : *a) {
      if (!s.is_string() || s.get_ref<const std::string&>().find('\0') != std::string::npos) {
        return ReplyRpcError(id, -32602, "Invalid params: args must be an array of strings");
      }
      argv.push_back(s.get<std::string>());
    }
  }
  std::map<std::string, std::string> extra_env;
  if (auto e = p.find("env"); e != p.end() && !e->is_null()) {
    if (!e->is_object()) return ReplyRpcError(id, -32602, "Invalid params: env must be an object");
    for (const auto& [k, v] : e->items()) {
      if (!v.is_string() || !ValidEnvKey(k) || !ValidEnvValue(v.get_ref<const std::string&>())) {
        return ReplyRpcError(id, -32602, "Invalid params: env entry '" + k + "' is invalid");
      }
      extra_env[k] = v.get<std::string>();
    }
  }
  bool clear_env = p.value("clearEnv", false);
  std::string cwd = OptString(p, "cwd").value_or("/home/app");
  auto stdio = [&](const char* key) -> std::optional<bool> {  // piped?
    auto s = OptString(p, key).value_or("piped");
    if (s == "piped" || s == "inherit") return true;
    if (s == "null") return false;
    return std::nullopt;
  };
  auto out_piped = stdio("stdout");
  auto err_piped = stdio("stderr");
  if (!out_piped || !err_piped) return ReplyRpcError(id, -32602, "Invalid params: stdout/stderr must be piped or null");

  std::optional<int64_t> stdin_sid;
  if (IsIntKey(p, "stdinStreamId")) {
    stdin_sid = p["stdinStreamId"].get<int64_t>();
    auto it = incoming_.find(*stdin_sid);
    if (it == incoming_.end() || it->second.channel) {
      return ReplyAppError(id, ErrorObject("TypeError", "", "stdin stream " + std::to_string(*stdin_sid) +
                                                                " was not started or is already in use"));
    }
  }

  auto& link = sb_->link();
  uint32_t out_ch = *out_piped ? link.NewChannel() : 0;
  uint32_t err_ch = *err_piped ? link.NewChannel() : 0;
  uint32_t in_ch = stdin_sid ? link.NewChannel() : 0;
  int64_t out_sid = out_ch ? NextServerStreamId() : 0;
  int64_t err_sid = err_ch ? NextServerStreamId() : 0;

  // Sinks exist before the agent can produce output. They hold the session
  // weakly: output of a process whose client went away is drained and dropped
  // so the process never blocks on a full pipe.
  std::weak_ptr<WsSession> weak_self = weak_from_this();
  std::weak_ptr<core::Sandbox> weak_sb = sb_;
  auto pid_box = std::make_shared<int64_t>(0);
  auto make_sink = [&](uint32_t ch, int64_t sid) {
    core::AgentLink::Sink sink;
    sink.on_data = [weak_self, weak_sb, ch, sid](std::string_view data) {
      auto self = weak_self.lock();
      if (self && !self->torn_down_ && !self->closing_ && self->outgoing_.count(sid)) {
        self->ForwardOutput(sid, data);
        if (self->out_bytes_ < kSendHighWater) {
          self->sb_->link().Consumed(ch, static_cast<uint32_t>(data.size()));
        } else {
          self->deferred_credit_.emplace_back(ch, static_cast<uint32_t>(data.size()));
        }
      } else if (auto sb = weak_sb.lock(); sb && sb->running()) {
        sb->link().Consumed(ch, static_cast<uint32_t>(data.size()));
      }
    };
    sink.on_eof = [weak_self, weak_sb, sid, pid_box] {
      auto self = weak_self.lock();
      if (self && self->outgoing_.erase(sid) && !self->torn_down_ && !self->closing_) {
        self->Notify("$sandbox.stream.end", {{"streamId", sid}});
      }
      if (auto sb = weak_sb.lock(); sb && *pid_box) sb->OutputClosed(*pid_box);
    };
    link.OpenInbound(ch, std::move(sink));
  };
  if (out_ch) make_sink(out_ch, out_sid);
  if (err_ch) make_sink(err_ch, err_sid);

  json req = {{"argv", argv},        {"env", sb_->ProcessEnv(extra_env, clear_env)},
              {"cwd", cwd},          {"uid", 1000},
              {"gid", 1000},         {"stdin", in_ch},
              {"stdout", out_ch},    {"stderr", err_ch}};
  auto self = shared_from_this();
  link.Call("spawn", std::move(req),
            [this, self, id, out_ch, err_ch, in_ch, out_sid, err_sid, stdin_sid, pid_box](Result<json> r) {
              if (torn_down_ || !sb_->running()) {
                if (r && r->is_object() && r->contains("pid") && sb_->running()) {
                  // The client left while we spawned: the process runs on unobserved.
                  sb_->RegisterProcess((*r)["pid"].get<int64_t>(), 0);
                }
                if (!torn_down_) ReplyAppError(id, ErrorObject("Error", "", "the sandbox is stopping"));
                return;
              }
              auto& link = sb_->link();
              if (!r || !r->is_object() || !(*r)["pid"].is_number_integer()) {
                if (out_ch) link.ResetInbound(out_ch);
                if (err_ch) link.ResetInbound(err_ch);
                if (!r) return ReplyAppError(id, ErrorObjectFromErrno(r.error().code, r.error().message));
                return ReplyAppError(id, ErrorObject("Error", "", "the sandbox agent sent a malformed reply"));
              }
              int64_t pid = (*r)["pid"].get<int64_t>();
              *pid_box = pid;
              sb_->RegisterProcess(pid, (out_ch ? 1 : 0) + (err_ch ? 1 : 0));
              if (out_ch) {
                outgoing_[out_sid] = Outgoing{out_ch, pid};
                Notify("$sandbox.stream.start", {{"streamId", out_sid}});
              }
              if (err_ch) {
                outgoing_[err_sid] = Outgoing{err_ch, pid};
                Notify("$sandbox.stream.start", {{"streamId", err_sid}});
              }
              if (stdin_sid) {
                int64_t sid = *stdin_sid;
                std::weak_ptr<WsSession> weak = weak_from_this();
                ClaimIncoming(sid, in_ch, [weak, sid] {
                  // The process closed its stdin: tell the client to stop sending.
                  auto s = weak.lock();
                  if (!s || s->torn_down_ || s->closing_) return;
                  s->incoming_.erase(sid);
                  s->Notify("$sandbox.stream.cancel", {{"streamId", sid}, {"reason", nullptr}});
                });
              }
              json ok = {{"pid", pid},
                         {"stdoutStreamId", out_ch ? json(out_sid) : json(nullptr)},
                         {"stderrStreamId", err_ch ? json(err_sid) : json(nullptr)}};
              ReplyOk(id, std::move(ok));
            });
}

void WsSession::ProcessWait(int64_t id, const json& p) {
  if (!IsIntKey(p, "pid")) return ReplyRpcError(id, -32602, "Invalid params: pid must be an integer");
  std::weak_ptr<WsSession> weak = weak_from_this();
  sb_->Wait(p["pid"].get<int64_t>(), [weak, id](Result<core::ExitStatus> r) {
    auto self = weak.lock();
    if (!self || self->torn_down_) return;
    if (r) return self->ReplyOk(id, ProcessStatusJson(*r));
    if (r.error().code == ESRCH) return self->ReplyAppError(id, ErrorObject("TypeError", "ENOENT", r.error().message));
    self->ReplyAppError(id, ErrorObject("Error", "", r.error().message));
  });
}

void WsSession::ProcessKill(int64_t id, const json& p) {
  if (!IsIntKey(p, "pid")) return ReplyRpcError(id, -32602, "Invalid params: pid must be an integer");
  std::string name = OptString(p, "signal").value_or("SIGTERM");
  auto signo = SignalNumber(name);
  if (!signo) return ReplyAppError(id, ErrorObject("TypeError", "EINVAL", "unsupported signal '" + name + "'"));
  std::weak_ptr<WsSession> weak = weak_from_this();
  sb_->Kill(p["pid"].get<int64_t>(), *signo, [weak, id](Status st) {
    auto self = weak.lock();
    if (!self || self->torn_down_) return;
    if (st) return self->ReplyOk(id, nullptr);
    if (st.error().code == ESRCH) {
      return self->ReplyAppError(id, ErrorObject("TypeError", "ENOENT", st.error().message));
    }
    self->ReplyAppError(id, ErrorObjectFromErrno(st.error().code, st.error().message));
  });
}

// ---------------------------------------------------------------- env

void WsSession::EnvGet(int64_t id, const json& p) {
  auto key = OptString(p, "key");
  if (!key) return ReplyRpcError(id, -32602, "Invalid params: key must be a string");
  auto it = sb_->env().find(*key);
  ReplyOk(id, it == sb_->env().end() ? json(nullptr) : json(it->second));
}

void WsSession::EnvSet(int64_t id, const json& p) {
  auto key = OptString(p, "key");
  auto value = OptString(p, "value");
  if (!key || !value) return ReplyRpcError(id, -32602, "Invalid params: key and value must be strings");
  if (!ValidEnvKey(*key) || !ValidEnvValue(*value)) {
    return ReplyAppError(id, ErrorObject("TypeError", "EINVAL", "invalid environment variable '" + *key + "'"));
  }
  if (sb_->env().size() >= 4096 && !sb_->env().count(*key)) {
    return ReplyAppError(id, ErrorObject("RangeError", "", "too many environment variables"));
  }
  sb_->env()[*key] = *value;
  ReplyOk(id, nullptr);
}

void WsSession::EnvDelete(int64_t id, const json& p) {
  auto key = OptString(p, "key");
  if (!key) return ReplyRpcError(id, -32602, "Invalid params: key must be a string");
  sb_->env().erase(*key);
  ReplyOk(id, nullptr);
}

void WsSession::EnvToObject(int64_t id, const json&) { ReplyOk(id, json(sb_->env())); }

// ---------------------------------------------------------------- output

void WsSession::ReplyOk(int64_t id, json value) {
  Send(Dump(json{{"jsonrpc", "2.0"}, {"id", id}, {"result", {{"ok", std::move(value)}}}}));
}

void WsSession::ReplyAppError(int64_t id, json error_object) {
  Send(Dump(json{{"jsonrpc", "2.0"}, {"id", id}, {"result", {{"error", std::move(error_object)}}}}));
}

void WsSession::ReplyRpcError(int64_t id, int code, const std::string& message) {
  Send(Dump(json{{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", message}}}}));
}

void WsSession::Notify(const char* method, json params) {
  Send(Dump(json{{"jsonrpc", "2.0"}, {"method", method}, {"params", std::move(params)}}));
}

void WsSession::Send(std::string text) {
  if (closing_ || torn_down_) return;
  out_bytes_ += text.size();
  outq_.push_back(OutMsg{std::move(text), std::nullopt});
  DoWrite();
}

void WsSession::CloseWith(uint16_t code, const std::string& reason) {
  if (closing_ || torn_down_) return;
  closing_ = true;
  websocket::close_reason cr(static_cast<websocket::close_code>(code), reason);
  outq_.push_back(OutMsg{{}, cr});
  DoWrite();
}

void WsSession::CloseFromServer(uint16_t code, const std::string& reason) { CloseWith(code, reason); }

void WsSession::DoWrite() {
  if (writing_ || outq_.empty() || torn_down_) return;
  writing_ = true;
  auto self = shared_from_this();
  OutMsg& m = outq_.front();
  if (m.close) {
    ws_.async_close(*m.close, [this, self](beast::error_code) {
      writing_ = false;
      outq_.clear();
      // A pending read completes when the client answers the close (or the
      // connection dies) and tears down there; without one, tear down now.
      if (!reading_) Teardown();
    });
    return;
  }
  ws_.async_write(boost::asio::buffer(m.text), [this, self](beast::error_code ec, size_t) {
    writing_ = false;
    if (outq_.empty()) return;
    out_bytes_ -= outq_.front().text.size();
    outq_.pop_front();
    if (ec) {
      Teardown();
      return;
    }
    ReleaseCredit();
    if (!on_drain_.empty() && out_bytes_ <= kSendHighWater / 2) {
      auto fns = std::move(on_drain_);
      on_drain_.clear();
      for (auto& fn : fns) fn();
    }
    DoWrite();
  });
}

void WsSession::WhenDrained(std::function<void()> fn) {
  if (out_bytes_ <= kSendHighWater / 2) return fn();
  on_drain_.push_back(std::move(fn));
}

void WsSession::CollectIncoming(int64_t sid, std::function<void(std::string)> on_chunk,
                                std::function<void(bool failed)> on_done) {
  auto it = incoming_.find(sid);
  if (it == incoming_.end()) return on_done(false);  // never started, or cancelled: empty
  Incoming& in = it->second;
  for (auto& c : in.chunks) on_chunk(std::move(c));
  unclaimed_bytes_ -= in.bytes;
  in.chunks.clear();
  in.bytes = 0;
  if (in.ended) {
    bool failed = in.error.has_value();
    incoming_.erase(it);
    return on_done(failed);
  }
  in.on_chunk = std::move(on_chunk);
  in.on_done = std::move(on_done);
}

void WsSession::Teardown() {
  if (torn_down_) return;
  torn_down_ = true;
  resume_timer_.cancel();
  beast::error_code ec;
  beast::get_lowest_layer(ws_).socket().close(ec);
  if (sb_ && sb_->running()) {
    auto& link = sb_->link();
    for (auto& [sid, in] : incoming_) {
      if (in.channel) link.WriteEof(*in.channel);  // client gone: the process sees EOF on stdin
    }
    for (auto [ch, n] : deferred_credit_) link.Consumed(ch, n);
  }
  CloseHandles();
  for (auto& [sid, f] : fetches_) f->Cancel();
  for (auto& [n, f] : pending_fetches_) f->Cancel();
  fetches_.clear();
  pending_fetches_.clear();
  on_drain_.clear();
  aborts_.clear();
  incoming_.clear();
  deferred_credit_.clear();
  outgoing_.clear();
  outq_.clear();
  out_bytes_ = 0;
  if (attached_) {
    attached_ = false;
    sb_->Detach(this);
  }
}

}  // namespace sandboxd::api

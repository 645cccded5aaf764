// Filesystem methods of WIRE.md §4.2–§4.4, served by the agent
// (docs/agent-link.md "Filesystem ops"). The daemon validates what it must
// (handles, sizes, stream ids), adds the sandbox user's credentials and moves
// bulk data over agent channels; the agent builds the `ok` values.
#include <spdlog/spdlog.h>

#include "common/base64.h"
#include "daemon/api/fast_path.h"
#include "daemon/api/rpc_params.h"
#include "daemon/api/wire.h"
#include "daemon/api/ws_session.h"

namespace sandboxd::api {

using nlohmann::json;

namespace {

constexpr int kAppUid = 1000;
constexpr int kAppGid = 1000;
constexpr const char* kAppHome = "/home/app";
// readFile answers in one message; the SDK's WebSocket takes at most 100 MiB,
// and base64 adds a third.
constexpr uint64_t kMaxInlineRead = 64ull << 20;
constexpr size_t kMaxFileWriteChunk = 512 * 1024;
constexpr size_t kMaxHandlesPerConnection = 256;

// Ops forwarded as they are (params in, `ok` out).
const std::set<std::string, std::less<>> kForwarded = {
    "readDir", "remove",     "mkdir",       "rename",      "stat",         "lstat",      "chmod",
    "chown",   "copyFile",   "link",        "symlink",     "readLink",     "realPath",   "truncate",
    "umask",   "utime",      "makeTempDir", "makeTempFile", "fileRead",    "fileSeek",   "fileStat",
    "fileSync", "fileSyncData", "fileTruncate", "fileUtime", "fileUnlock", "fileClose",  "open",
    "create",  "fileLock"};

bool UsesHandle(std::string_view method) { return method.starts_with("file"); }

json AbortError() {
  json e = ErrorObject("DOMException", "", "The signal has been aborted");
  e["name"] = "AbortError";
  return e;
}

void AddCredentials(json& p) {
  p["uid"] = kAppUid;
  p["gid"] = kAppGid;
  p["cwd"] = kAppHome;
}

}  // namespace

bool WsSession::HandleFsRequest(int64_t id, const std::string& method, const json& params) {
  bool known = kForwarded.count(method) || method == "readFile" || method == "readTextFile" ||
               method == "writeFile" || method == "writeTextFile" || method == "walk" ||
               method == "expandGlob" || method == "fileWrite";
  if (!known) return false;
  if (!sb_->running()) {
    ReplyAppError(id, ErrorObject("Error", "", "the sandbox is stopping"));
    return true;
  }
  if (UsesHandle(method)) {
    if (!IsIntKey(params, "fileHandleId")) {
      ReplyRpcError(id, -32602, "Invalid params: fileHandleId must be an integer");
      return true;
    }
    if (!handles_.count(params["fileHandleId"].get<int64_t>())) {
      ReplyAppError(id, ErrorObject("BadResource", "EBADF", "Bad resource ID"));
      return true;
    }
  }
  if ((method == "open" || method == "create") && handles_.size() >= kMaxHandlesPerConnection) {
    ReplyAppError(id, ErrorObjectFromErrno(EMFILE, "Too many open files on this connection"));
    return true;
  }
  if (method == "readFile" || method == "readTextFile") {
    FsReadFile(id, method, params);
  } else if (method == "writeFile" || method == "writeTextFile") {
    FsWriteFile(id, method, params);
  } else if (method == "walk" || method == "expandGlob") {
    FsWalk(id, method, params);
  } else if (method == "fileWrite") {
    FsFileWrite(id, params);
  } else {
    // A lock may be held by another handle for as long as it likes.
    FsForward(id, method, params,
              method == "fileLock" ? core::AgentLink::kNoDeadline : std::chrono::milliseconds(0));
  }
  return true;
}

void WsSession::ReplyAgentResult(int64_t id, const Result<json>& r) {
  if (r) return ReplyOk(id, *r);
  ReplyAppError(id, ErrorObjectFromErrno(r.error().code, r.error().message));
}

void WsSession::FsForward(int64_t id, const std::string& method, json p, std::chrono::milliseconds timeout) {
  // The SDK sends fileClose at most once; forget the handle now so a racing
  // call on it is refused here rather than reaching a reused agent id.
  if (method == "fileClose") handles_.erase(p["fileHandleId"].get<int64_t>());
  if (method == "chown") {
    // chown's target ids travel as owner/group: uid/gid carry the credentials.
    p["owner"] = p.value("uid", json(nullptr));
    p["group"] = p.value("gid", json(nullptr));
  }
  AddCredentials(p);
  std::weak_ptr<WsSession> weak = weak_from_this();
  sb_->link().Call(
      method, std::move(p),
      [weak, id, method](Result<json> r) {
        auto self = weak.lock();
        if (!self || self->torn_down_) {
          // The connection is gone: do not leak a handle it just opened.
          if (r && (method == "open" || method == "create") && r->is_object() && self && self->sb_->running()) {
            json close = {{"fileHandleId", (*r)["fileHandleId"]}};
            AddCredentials(close);
            self->sb_->link().Call("fileClose", std::move(close), [](Result<json>) {});
          }
          return;
        }
        if (r && (method == "open" || method == "create")) {
          auto h = r->is_object() ? r->find("fileHandleId") : r->end();
          if (h == r->end() || !h->is_number_integer()) {
            return self->ReplyAppError(id, ErrorObject("Error", "", "the sandbox agent sent a malformed reply"));
          }
          self->handles_.insert(h->get<int64_t>());
        }
        if (r && method == "fileRead" && r->is_object() && r->contains("data") && (*r)["data"].is_string() &&
            IsBase64Text((*r)["data"].get_ref<const std::string&>())) {
          // The bulk of a download: compose the reply around the base64
          // instead of serialising it byte by byte (no escaping needed).
          const auto& data = (*r)["data"].get_ref<const std::string&>();
          std::string text = R"({"jsonrpc":"2.0","id":)" + std::to_string(id) + R"(,"result":{"ok":{"data":")";
          text.reserve(text.size() + data.size() + 8);
          text += data;
          text += R"("}}})";
          return self->Send(std::move(text));
        }
        self->ReplyAgentResult(id, r);
      },
      timeout);
}

void WsSession::CloseHandles() {
  if (!sb_ || !sb_->running()) {
    handles_.clear();
    return;
  }
  for (int64_t h : handles_) {
    json p = {{"fileHandleId", h}};
    AddCredentials(p);
    sb_->link().Call("fileClose", std::move(p), [](Result<json>) {});
  }
  handles_.clear();
}

void WsSession::FsReadFile(int64_t id, const std::string& method, json p) {
  auto& link = sb_->link();
  uint32_t ch = link.NewChannel();
  struct State {
    std::string data;
    bool done = false;  // replied (or aborted)
  };
  auto st = std::make_shared<State>();
  std::weak_ptr<core::Sandbox> weak_sb = sb_;
  link.OpenInbound(ch, {[st, weak_sb, ch](std::string_view d) {
                          st->data.append(d);
                          if (auto sb = weak_sb.lock(); sb && sb->running()) {
                            sb->link().Consumed(ch, static_cast<uint32_t>(d.size()));
                          }
                        },
                        [] {}});
  std::optional<int64_t> abort_id;
  if (IsIntKey(p, "abortId")) abort_id = p["abortId"].get<int64_t>();
  if (abort_id) {
    std::weak_ptr<WsSession> weak = weak_from_this();
    aborts_[*abort_id] = [weak, st, ch, id] {
      auto self = weak.lock();
      if (!self || st->done) return;
      st->done = true;
      if (self->sb_->running()) self->sb_->link().ResetInbound(ch);
      self->ReplyAppError(id, AbortError());
    };
  }
  bool text = method == "readTextFile";
  p["channel"] = ch;
  p["maxBytes"] = kMaxInlineRead;
  AddCredentials(p);
  std::weak_ptr<WsSession> weak = weak_from_this();
  link.Call(
      method, std::move(p),
      [weak, st, ch, id, text, abort_id](Result<json> r) {
        auto self = weak.lock();
        if (!self || self->torn_down_ || st->done) return;
        st->done = true;
        if (abort_id) self->aborts_.erase(*abort_id);
        if (self->sb_->running()) self->sb_->link().ResetInbound(ch);  // forget the sink if still open
        if (!r) return self->ReplyAgentResult(id, r);
        if (st->data.size() > kMaxInlineRead) {
          return self->ReplyAppError(id, ErrorObjectFromErrno(EFBIG, "file too large to read at once"));
        }
        if (text) return self->ReplyOk(id, json(std::move(st->data)));
        // Up to 64 MiB: compose the reply around the base64 rather than
        // building a JSON value and serialising it (two more copies).
        std::string b64 = Base64Encode(st->data);
        std::string().swap(st->data);
        std::string reply = R"({"jsonrpc":"2.0","id":)" + std::to_string(id) + R"(,"result":{"ok":")";
        reply.reserve(reply.size() + b64.size() + 4);
        reply += b64;
        std::string().swap(b64);
        reply += R"("}})";
        self->Send(std::move(reply));
      },
      core::AgentLink::kNoDeadline);
}

void WsSession::FsWriteFile(int64_t id, const std::string& method, json p) {
  bool text = method == "writeTextFile";
  std::optional<int64_t> stream_id;
  std::string content;
  if (IsIntKey(p, "contentStreamId")) {
    stream_id = p["contentStreamId"].get<int64_t>();
    auto it = incoming_.find(*stream_id);
    if (it == incoming_.end() || it->second.channel) {
      return ReplyAppError(id, ErrorObject("TypeError", "", "content stream " + std::to_string(*stream_id) +
                                                                " was not started or is already in use"));
    }
  } else if (auto c = OptString(p, "content")) {
    if (text) {
      content = std::move(*c);
    } else {
      auto bytes = Base64Decode(*c);
      if (!bytes) return ReplyRpcError(id, -32602, "Invalid params: content must be base64");
      content = std::move(*bytes);
    }
  } else {
    return ReplyRpcError(id, -32602, "Invalid params: content or contentStreamId is required");
  }
  p.erase("content");
  p.erase("contentStreamId");

  auto& link = sb_->link();
  uint32_t ch = link.NewChannel();
  auto done = std::make_shared<bool>(false);
  std::optional<int64_t> abort_id;
  if (IsIntKey(p, "abortId")) abort_id = p["abortId"].get<int64_t>();
  std::weak_ptr<WsSession> weak = weak_from_this();
  if (abort_id) {
    aborts_[*abort_id] = [weak, done, ch, id, stream_id] {
      auto self = weak.lock();
      if (!self || *done) return;
      *done = true;
      if (stream_id) {
        self->incoming_.erase(*stream_id);
        self->Notify("$sandbox.stream.cancel", {{"streamId", *stream_id}, {"reason", AbortError()}});
      }
      if (self->sb_->running()) self->sb_->link().AbortOutbound(ch);
      self->ReplyAppError(id, AbortError());
    };
  }
  p["channel"] = ch;
  AddCredentials(p);
  // Send the op first so the agent knows the channel before data arrives.
  link.Call(
      method, std::move(p),
      [weak, done, id, abort_id, stream_id](Result<json> r) {
        auto self = weak.lock();
        if (!self || self->torn_down_ || *done) return;
        *done = true;
        if (abort_id) self->aborts_.erase(*abort_id);
        if (!r && stream_id && self->incoming_.count(*stream_id)) {
          // The write failed early: stop the client's stream.
          self->incoming_.erase(*stream_id);
          self->Notify("$sandbox.stream.cancel", {{"streamId", *stream_id}, {"reason", nullptr}});
        }
        self->ReplyAgentResult(id, r);
      },
      core::AgentLink::kNoDeadline);
  if (stream_id) {
    // A failed write is reported by the reply; a failed source (the client's
    // stream.error) aborts the write and fails the request (WIRE.md §3.2).
    ClaimIncoming(*stream_id, ch, [] {}, [weak, done, ch, id, abort_id](const json& err) {
      auto self = weak.lock();
      if (!self || *done) return;
      *done = true;
      if (abort_id) self->aborts_.erase(*abort_id);
      if (self->sb_->running()) self->sb_->link().AbortOutbound(ch);
      json e = err.is_object() && err.contains("constructorName") && err["constructorName"].is_string() &&
                       err.contains("message") && err["message"].is_string()
                   ? err
                   : ErrorObject("Error", "", "the content stream failed");
      self->ReplyAppError(id, e);
    });
  } else {
    link.OpenOutbound(ch, [] {});
    link.Write(ch, content);
    link.WriteEof(ch);
  }
}

void WsSession::FsWalk(int64_t id, const std::string& method, json p) {
  auto& link = sb_->link();
  uint32_t ch = link.NewChannel();
  int64_t sid = NextServerStreamId();
  // One WalkEntry per line from the agent; one entry per enqueue to the client
  // (WIRE.md §3.5). A line is bounded so a hostile agent cannot grow it forever.
  auto partial = std::make_shared<std::string>();
  std::weak_ptr<WsSession> weak = weak_from_this();
  std::weak_ptr<core::Sandbox> weak_sb = sb_;
  outgoing_[sid] = Outgoing{ch, 0};
  link.OpenInbound(ch, {[weak, weak_sb, ch, sid, partial](std::string_view d) {
                          auto self = weak.lock();
                          bool live = self && !self->torn_down_ && !self->closing_ && self->outgoing_.count(sid);
                          if (live) {
                            partial->append(d);
                            size_t start = 0;
                            for (size_t nl; (nl = partial->find('\n', start)) != std::string::npos; start = nl + 1) {
                              if (nl > start) {
                                self->ForwardOutput(sid, std::string_view(*partial).substr(start, nl - start));
                              }
                            }
                            partial->erase(0, start);
                            if (partial->size() > (64u << 10)) partial->clear();
                          }
                          auto sb = weak_sb.lock();
                          if (!sb || !sb->running()) return;
                          if (live && self->out_bytes_ >= 4u << 20) {
                            self->deferred_credit_.emplace_back(ch, static_cast<uint32_t>(d.size()));
                          } else {
                            sb->link().Consumed(ch, static_cast<uint32_t>(d.size()));
                          }
                        },
                        [] {}});
  p["channel"] = ch;
  AddCredentials(p);
  Notify("$sandbox.stream.start", {{"streamId", sid}});
  ReplyOk(id, {{"streamId", sid}});
  link.Call(
      method, std::move(p),
      [weak, sid](Result<json> r) {
        auto self = weak.lock();
        if (!self || self->torn_down_ || !self->outgoing_.erase(sid)) return;
        if (r) {
          self->Notify("$sandbox.stream.end", {{"streamId", sid}});
        } else {
          self->Notify("$sandbox.stream.error",
                       {{"streamId", sid}, {"error", ErrorObjectFromErrno(r.error().code, r.error().message)}});
        }
      },
      core::AgentLink::kNoDeadline);
}

void WsSession::FsFileWrite(int64_t id, const json& p) {
  auto data = OptString(p, "data");
  if (!data) return ReplyRpcError(id, -32602, "Invalid params: data must be base64");
  auto bytes = Base64Decode(*data);
  if (!bytes) return ReplyRpcError(id, -32602, "Invalid params: data must be base64");
  // The agent takes at most 512 KiB per fileWrite: send the pieces in order
  // and answer with the total once all are written.
  struct State {
    std::string bytes;
    size_t off = 0;
    int64_t handle = 0;
  };
  auto st = std::make_shared<State>();
  st->bytes = std::move(*bytes);
  st->handle = p["fileHandleId"].get<int64_t>();
  std::weak_ptr<WsSession> weak = weak_from_this();
  // Each piece's reply sends the next. The chain owns itself through the
  // pending call's callback only, so it is freed when it ends (no cycle).
  auto step = std::make_shared<std::function<void()>>();
  std::weak_ptr<std::function<void()>> weak_step = step;
  *step = [weak, st, id, weak_step] {
    auto self = weak.lock();
    auto next = weak_step.lock();
    if (!self || self->torn_down_ || !self->sb_->running() || !next) return;
    size_t n = std::min(kMaxFileWriteChunk, st->bytes.size() - st->off);
    json req = {{"fileHandleId", st->handle}, {"data", Base64Encode(std::string_view(st->bytes).substr(st->off, n))}};
    AddCredentials(req);
    self->sb_->link().Call("fileWrite", std::move(req), [weak, st, id, next, n](Result<json> r) {
      auto self = weak.lock();
      if (!self || self->torn_down_) return;
      if (!r) return self->ReplyAgentResult(id, r);
      if (!r->is_object() || !(*r)["bytesWritten"].is_number_integer()) {
        return self->ReplyAppError(id, ErrorObject("Error", "", "the sandbox agent sent a malformed reply"));
      }
      auto written = (*r)["bytesWritten"].get<int64_t>();
      st->off += static_cast<size_t>(std::clamp<int64_t>(written, 0, static_cast<int64_t>(n)));
      if (st->off >= st->bytes.size() || written <= 0) return self->ReplyOk(id, {{"bytesWritten", st->off}});
      (*next)();
    });
  };
  (*step)();
}

}  // namespace sandboxd::api

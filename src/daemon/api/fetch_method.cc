// `fetch` (WIRE.md §4.7): an HTTP request made from the sandbox's network,
// so allowNet, the internal-address rules and secret substitution apply to
// it exactly as to the sandbox's own processes (src/daemon/net/sandbox_fetch.h).
// The request body is a client stream (buffered: a redirect may resend it);
// the response body is a server stream, paced by the WebSocket's send queue.
#include <boost/beast/http/status.hpp>

#include "common/base64.h"
#include "daemon/api/rpc_params.h"
#include "daemon/api/wire.h"
#include "daemon/api/ws_session.h"

namespace sandboxd::api {

using json = nlohmann::json;

namespace {
constexpr size_t kMaxFetchBody = 64u << 20;  // request bodies are buffered

json AbortErrorObject() {
  return {{"constructorName", "DOMException"}, {"name", "AbortError"}, {"message", "The signal has been aborted"}};
}
}  // namespace

void WsSession::Fetch(int64_t id, const json& p) {
  auto url = OptString(p, "url");
  auto method = OptString(p, "method").value_or("GET");
  if (!url) return ReplyRpcError(id, -32602, "Invalid params: url must be a string");
  if (method.empty() || method.size() > 32 ||
      method.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-") != std::string::npos) {
    return ReplyRpcError(id, -32602, "Invalid params: method must be an HTTP method token");
  }
  net::FetchRequest req;
  req.url = *url;
  req.method = method;
  if (auto h = p.find("headers"); h != p.end() && !h->is_null()) {
    if (!h->is_array()) return ReplyRpcError(id, -32602, "Invalid params: headers must be [[name, value], ...]");
    for (const auto& kv : *h) {
      if (!kv.is_array() || kv.size() != 2 || !kv[0].is_string() || !kv[1].is_string()) {
        return ReplyRpcError(id, -32602, "Invalid params: headers must be [[name, value], ...]");
      }
      const auto& k = kv[0].get_ref<const std::string&>();
      const auto& v = kv[1].get_ref<const std::string&>();
      if (k.empty() || k.find_first_of(" :\r\n\t") != std::string::npos || v.find_first_of("\r\n") != std::string::npos ||
          k.find('\0') != std::string::npos || v.find('\0') != std::string::npos) {
        return ReplyRpcError(id, -32602, "Invalid params: bad header " + k);
      }
      req.headers.emplace_back(k, v);
    }
  }
  auto redirect = OptString(p, "redirect").value_or("follow");
  if (redirect != "follow" && redirect != "manual" && redirect != "error") {
    return ReplyRpcError(id, -32602, "Invalid params: redirect must be follow, manual or error");
  }
  req.follow_redirects = redirect == "follow";
  if (IsIntKey(p, "pid")) {
    return ReplyAppError(id, ErrorObject("TypeError", "", "fetch to a Deno process is not supported by this server"));
  }
  auto* network = sb_->net();
  if (!network) {
    return ReplyAppError(id, ErrorObject("TypeError", "", "this server runs sandboxes without outbound networking"));
  }

  // Collect the body (if any), then start the request.
  struct State {
    net::FetchRequest req;
    bool done = false;  // replied (or aborted)
    bool too_big = false;
    std::optional<int64_t> abort_id;
    uint64_t key = 0;
  };
  auto st = std::make_shared<State>();
  st->req = std::move(req);
  st->key = next_fetch_++;
  if (IsIntKey(p, "abortId")) st->abort_id = p["abortId"].get<int64_t>();
  std::weak_ptr<WsSession> weak = weak_from_this();
  if (st->abort_id) {
    aborts_[*st->abort_id] = [weak, st, id] {
      auto self = weak.lock();
      if (!self || st->done) return;
      st->done = true;
      if (auto it = self->pending_fetches_.find(st->key); it != self->pending_fetches_.end()) {
        auto call = std::move(it->second);
        self->pending_fetches_.erase(it);
        call->Cancel();
      }
      self->ReplyAppError(id, AbortErrorObject());
    };
  }

  auto start = [weak, st, id] {
    auto self = weak.lock();
    if (!self || st->done || self->torn_down_) return;
    if (st->too_big) {
      st->done = true;
      return self->ReplyAppError(id, ErrorObject("TypeError", "", "fetch request bodies are limited to 64 MiB"));
    }
    auto* n = self->sb_->net();
    if (!n || !self->sb_->running()) {
      st->done = true;
      return self->ReplyAppError(id, ErrorObject("Error", "", "the sandbox is stopping"));
    }
    net::FetchTarget target{n->netns_fd(), n->gateway_ip(), n->FetchTlsContext(), {}};
    if (!n->guest_tap().empty()) {
      // A microVM: its address is the guest's, so the daemon cannot open a
      // socket with it; the proxy adopts the connection as the sandbox's.
      target.connect = [svc = &n->service(), ip = n->sandbox_ip_u32(),
                        id = self->sb_->id()](const boost::asio::ip::tcp::endpoint& ep) {
        return svc->ConnectAsSandbox(ip, id, ep);
      };
    }
    net::FetchSink sink;
    auto sid = std::make_shared<int64_t>(0);
    sink.on_head = [weak, st, id, sid](Result<net::FetchHead> head) {
      auto self = weak.lock();
      if (!self) return;
      auto call = self->pending_fetches_.extract(st->key);
      if (st->done) return;  // aborted
      st->done = true;
      if (st->abort_id) self->aborts_.erase(*st->abort_id);
      if (!head) {
        if (head.error().code == ECANCELED) return self->ReplyAppError(id, AbortErrorObject());
        return self->ReplyAppError(id, ErrorObject("TypeError", "", "error sending request for url (" +
                                                                      st->req.url + "): " + head.error().message));
      }
      json headers = json::array();
      for (auto& [k, v] : head->headers) headers.push_back({k, v});
      json ok = {{"status", head->status},
                 {"statusText", head->status_text},
                 {"headers", std::move(headers)},
                 {"bodyStreamId", nullptr}};
      if (head->has_body) {
        *sid = NextServerStreamId();
        ok["bodyStreamId"] = *sid;
        self->Notify("$sandbox.stream.start", {{"streamId", *sid}});  // before any data (WIRE.md §3.3)
        if (!call.empty()) self->fetches_[*sid] = std::move(call.mapped());
      }
      self->ReplyOk(id, std::move(ok));
    };
    sink.on_data = [weak, sid](std::string_view data, std::function<void()> resume) {
      auto self = weak.lock();
      if (!self || self->torn_down_ || self->closing_ || !self->fetches_.count(*sid)) return;
      self->ForwardOutput(*sid, data);
      self->WhenDrained(std::move(resume));
    };
    sink.on_end = [weak, sid](Status s) {
      auto self = weak.lock();
      if (!self || self->torn_down_ || self->closing_ || !self->fetches_.erase(*sid)) return;
      if (s) return self->Notify("$sandbox.stream.end", {{"streamId", *sid}});
      self->Notify("$sandbox.stream.error",
                   {{"streamId", *sid}, {"error", ErrorObject("TypeError", "", s.error().message)}});
    };
    auto call = net::StartFetch(self->ws_.get_executor(), target,
                                std::move(st->req), std::move(sink));
    if (!st->done) self->pending_fetches_[st->key] = std::move(call);
  };

  if (IsIntKey(p, "bodyStreamId")) {
    auto size = std::make_shared<size_t>(0);
    CollectIncoming(
        p["bodyStreamId"].get<int64_t>(),
        [st, size](std::string chunk) {
          *size += chunk.size();
          if (*size > kMaxFetchBody) {
            st->too_big = true;
            st->req.body.clear();
            return;
          }
          if (!st->too_big) st->req.body += chunk;
        },
        [weak, st, id, start](bool failed) {
          auto self = weak.lock();
          if (!self || st->done) return;
          if (failed) {
            st->done = true;
            return self->ReplyAppError(id, ErrorObject("TypeError", "", "the request body stream failed"));
          }
          start();
        });
    return;
  }
  start();
}

}  // namespace sandboxd::api

#include "daemon/api/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include "daemon/api/wire.h"
#include "daemon/api/ws_session.h"
#include "daemon/core/ids.h"
#include "daemon/ingress/expose_api.h"

namespace sandboxd::api {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = boost::asio::ip::tcp;
using nlohmann::json;

std::optional<std::string> Authenticator::OrgFor(std::string_view authorization) {
  constexpr std::string_view kBearer = "Bearer ";
  if (!authorization.starts_with(kBearer)) return std::nullopt;
  std::string token(authorization.substr(kBearer.size()));
  if (token.empty() || token.size() > 512) return std::nullopt;
  std::string hash = core::HashToken(token);
  if (auto it = cache_.find(hash); it != cache_.end()) return it->second;
  auto org = store_.LookupToken(token);
  if (!org || !*org) return std::nullopt;
  cache_[hash] = **org;
  return **org;
}

namespace {

constexpr size_t kHeaderLimit = 64 * 1024;  // config headers with secrets can be several KiB
constexpr size_t kBodyLimit = 1 << 20;

std::string UrlDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string UrlEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> ParseQuery(std::string_view q) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (part.empty()) continue;
    auto eq = part.find('=');
    out.emplace_back(UrlDecode(part.substr(0, eq)),
                     eq == std::string_view::npos ? std::string() : UrlDecode(part.substr(eq + 1)));
  }
  return out;
}

// Splits "/api/v3/sandbox/ID/connect" into segments.
std::vector<std::string_view> Segments(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
  }
  return out;
}

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket s, core::Manager& mgr, Authenticator& auth, const HttpServer::ExposeSshFn& expose_ssh,
              const std::optional<ingress::Naming>& ingress_naming)
      : stream_(std::move(s)), mgr_(mgr), auth_(auth), expose_ssh_(expose_ssh), ingress_naming_(ingress_naming) {}

  void Run() { ReadRequest(); }

 private:
  using Request = http::request<http::string_body>;
  using Response = http::response<http::string_body>;

  void ReadRequest() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(kBodyLimit);
    stream_.expires_after(std::chrono::seconds(60));
    auto self = shared_from_this();
    http::async_read(stream_, buf_, *parser_, [this, self](beast::error_code ec, size_t) {
      if (ec) {
        if (ec != http::error::end_of_stream && ec != beast::error::timeout && ec != boost::asio::error::eof) {
          // Malformed or oversized request: answer once, then close.
          SendError(core::ApiError{400, "BAD_REQUEST", "malformed HTTP request: " + ec.message()}, false);
        }
        return;
      }
      Request req = parser_->release();
      if (websocket::is_upgrade(req)) return HandleUpgrade(std::move(req));
      HandleRest(std::move(req));
    });
  }

  void Send(Response res) {
    res.set(http::field::server, "sandboxd");
    res.prepare_payload();
    bool keep = res.keep_alive();
    auto sp = std::make_shared<Response>(std::move(res));
    auto self = shared_from_this();
    http::async_write(stream_, *sp, [this, self, sp, keep](beast::error_code ec, size_t) {
      if (ec || !keep) {
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        return;
      }
      ReadRequest();
    });
  }

  void SendJson(http::status status, const std::string& body, bool keep_alive,
                const std::string& link = std::string()) {
    Response res{status, 11};
    res.set(http::field::content_type, "application/json");
    if (!link.empty()) res.set(http::field::link, link);
    res.keep_alive(keep_alive);
    res.body() = body;
    Send(std::move(res));
  }

  void SendError(const core::ApiError& e, bool keep_alive) {
    SendJson(static_cast<http::status>(e.status), ApiErrorBody(e), keep_alive);
  }

  std::optional<std::string> Authenticate(const Request& req) {
    auto org = auth_.OrgFor(req[http::field::authorization]);
    if (!org) return std::nullopt;
    // A configured org (X-Deno-Org) must be the token's own.
    auto hdr = req["X-Deno-Org"];
    if (!hdr.empty() && hdr != *org) return std::nullopt;
    return org;
  }

  void HandleUpgrade(Request req) {
    auto segs = Segments(std::string_view(req.target().data(), req.target().size()).substr(
        0, std::string_view(req.target().data(), req.target().size()).find('?')));
    bool is_create = segs.size() == 4 && segs[0] == "api" && segs[1] == "v3" && segs[2] == "sandboxes" &&
                     segs[3] == "create";
    bool is_connect = segs.size() == 5 && segs[0] == "api" && segs[1] == "v3" && segs[2] == "sandbox" &&
                      segs[4] == "connect";
    if (!is_create && !is_connect) return SendError({404, "NOT_FOUND", "no such endpoint"}, false);
    auto org = Authenticate(req);
    if (!org) return SendError(core::ApiError::InvalidToken(), false);

    if (is_connect) {
      std::string id(segs[3]);
      if (!core::IsValidSandboxId(id)) return SendError(core::ApiError::NotFound("invalid sandbox id"), false);
      auto sb = mgr_.FindRunning(*org, id);
      if (!sb) return SendError(sb.error(), false);
      std::make_shared<WsSession>(std::move(stream_), std::move(*sb))->Accept(std::move(req));
      return;
    }

    auto hdr = req["x-deno-sandbox-config"];
    if (hdr.empty()) return SendError(core::ApiError::InvalidConfig("missing x-deno-sandbox-config header"), false);
    auto cfg = core::ParseCreateConfigHeader(std::string_view(hdr.data(), hdr.size()), mgr_.Limits());
    if (!cfg) return SendError(cfg.error(), false);
    stream_.expires_never();  // the upgrade is held open while the sandbox starts
    auto self = shared_from_this();
    auto sreq = std::make_shared<Request>(std::move(req));
    mgr_.Create(*org, std::move(*cfg), [this, self, sreq](core::ApiResult<std::shared_ptr<core::Sandbox>> sb) {
      if (!sb) return SendError(sb.error(), false);
      std::make_shared<WsSession>(std::move(stream_), std::move(*sb))->Accept(std::move(*sreq));
    });
  }

  void HandleRest(Request req) {
    std::string_view target(req.target().data(), req.target().size());
    auto qpos = target.find('?');
    auto segs = Segments(target.substr(0, qpos));
    std::string_view query = qpos == std::string_view::npos ? std::string_view() : target.substr(qpos + 1);
    bool keep = req.keep_alive();

    if (segs.size() == 1 && segs[0] == "healthz") return SendJson(http::status::ok, R"({"ok":true})", keep);
    if (segs.size() < 3 || segs[0] != "api") return SendError({404, "NOT_FOUND", "no such endpoint"}, keep);

    auto org = Authenticate(req);
    if (!org) return SendError(core::ApiError::InvalidToken(), keep);

    // GET /api/v2/sandboxes (npm SDK) and /api/v3/sandboxes (Python SDK).
    if (segs.size() == 3 && (segs[1] == "v2" || segs[1] == "v3") && segs[2] == "sandboxes") {
      if (req.method() != http::verb::get) return SendError({405, "METHOD_NOT_ALLOWED", "use GET"}, keep);
      return List(req, std::string(segs[1]), query, *org, keep);
    }
    // /api/v3/sandbox/{id} (npm SDK) and /api/v3/sandboxes/{id} (Python SDK).
    if (segs.size() == 4 && segs[1] == "v3" && (segs[2] == "sandbox" || segs[2] == "sandboxes")) {
      std::string id(segs[3]);
      if (req.method() == http::verb::delete_) {
        auto r = mgr_.Kill(*org, id, "killed by the API");
        if (!r) return SendError(r.error(), keep);
        return SendJson(http::status::ok, "{}", keep);
      }
      if (req.method() == http::verb::patch) {
        json body = json::parse(req.body(), nullptr, false);
        if (body.is_discarded() || !body.is_object() || !body.contains("stop_at_ms") ||
            !body["stop_at_ms"].is_number_integer()) {
          return SendError(core::ApiError::InvalidConfig("body must be {\"stop_at_ms\": <ms since epoch>}"), keep);
        }
        auto r = mgr_.Extend(*org, id, body["stop_at_ms"].get<int64_t>());
        if (!r) return SendError(r.error(), keep);
        return SendJson(http::status::ok, json{{"stop_at_ms", *r}}.dump(), keep);
      }
      return SendError({405, "METHOD_NOT_ALLOWED", "use DELETE or PATCH"}, keep);
    }
    // POST /api/v3/sandbox/{id}/expose/http (WIRE.md §5.1); the RPC exposeHttp follows.
    if (segs.size() == 6 && segs[1] == "v3" && (segs[2] == "sandbox" || segs[2] == "sandboxes") &&
        segs[4] == "expose" && segs[5] == "http") {
      if (req.method() != http::verb::post) return SendError({405, "METHOD_NOT_ALLOWED", "use POST"}, keep);
      auto sb = mgr_.FindRunning(*org, std::string(segs[3]));
      if (!sb) return SendError(sb.error(), keep);
      auto r = ingress::ExposeHttpRest((*sb)->exposures(), (*sb)->id(), (*sb)->init_pid(), ingress_naming_, req.body());
      if (!r) return SendError(r.error(), keep);
      return SendJson(http::status::ok, r->dump(), keep);
    }
    // Our own extension: /api/v3/sandboxes/{id}/network — the egress policy
    // of a running sandbox (GET) and replacing its allowNet list (PUT).
    if (segs.size() == 5 && segs[1] == "v3" && (segs[2] == "sandbox" || segs[2] == "sandboxes") &&
        segs[4] == "network") {
      std::string id(segs[3]);
      if (req.method() == http::verb::put) {
        json body = json::parse(req.body(), nullptr, false);
        if (body.is_discarded() || !body.is_object() || !body.contains("allowNet") || !body["allowNet"].is_array()) {
          return SendError(core::ApiError::InvalidConfig("body must be {\"allowNet\": [host pattern, ...]}"), keep);
        }
        std::vector<std::string> hosts;
        for (const auto& h : body["allowNet"]) {
          if (!h.is_string()) return SendError(core::ApiError::InvalidConfig("allowNet entries must be strings"), keep);
          hosts.push_back(h.get<std::string>());
        }
        auto r = mgr_.SetAllowNet(*org, id, hosts);
        if (!r) return SendError(r.error(), keep);
      } else if (req.method() != http::verb::get) {
        return SendError({405, "METHOD_NOT_ALLOWED", "use GET or PUT"}, keep);
      }
      auto sb = mgr_.FindRunning(*org, id);
      if (!sb) return SendError(sb.error(), keep);
      return SendJson(http::status::ok, NetworkJson(**sb).dump(), keep);
    }
    // POST /api/v3/sandbox/{id}/expose/ssh (WIRE.md §5.1).
    if (segs.size() == 6 && segs[1] == "v3" && (segs[2] == "sandbox" || segs[2] == "sandboxes") &&
        segs[4] == "expose" && segs[5] == "ssh") {
      if (req.method() != http::verb::post) return SendError({405, "METHOD_NOT_ALLOWED", "use POST"}, keep);
      if (!expose_ssh_) {
        return SendError({409, "SSH_DISABLED", "this server runs without an SSH gateway (start it with --ssh-listen)"},
                         keep);
      }
      auto r = expose_ssh_(*org, std::string(segs[3]));
      if (!r) return SendError(r.error(), keep);
      return SendJson(http::status::ok, r->dump(), keep);
    }
    return SendError({404, "NOT_FOUND", "no such endpoint"}, keep);
  }

  static json NetworkJson(const core::Sandbox& sb) {
    auto* n = sb.net();
    if (!n) return json{{"enabled", false}, {"allowNet", json::array()}};
    auto policy = n->policy();
    const auto& st = *n->stats();
    json secrets = json::array();
    for (const auto& s : policy->secrets()) secrets.push_back({{"name", s.name}, {"hosts", s.hosts.ToStrings()}});
    return json{{"enabled", true},
                {"address", n->sandbox_ip()},
                {"allowNet", policy->allow_net()},
                {"secrets", secrets},
                {"stats",
                 {{"connectionsAllowed", st.connections_allowed.load()},
                  {"connectionsDenied", st.connections_denied.load()},
                  {"requestsSubstituted", st.requests_substituted.load()},
                  {"requestsRefused", st.requests_refused.load()},
                  {"dnsQueries", st.dns_queries.load()}}}};
  }

  void List(const Request& req, const std::string& version, std::string_view query, const std::string& org,
            bool keep) {
    core::ListQuery q;
    q.org = org;
    std::string label_query;
    for (auto& [k, v] : ParseQuery(query)) {
      if (k.starts_with("labels[") && k.ends_with("]")) {
        std::string key = k.substr(7, k.size() - 8);
        label_query += "&" + UrlEncode(k) + "=" + UrlEncode(v);
        q.labels[key] = v;
      } else if (k == "limit") {
        int n = std::atoi(v.c_str());
        if (n < 1 || n > 1000) return SendError({400, "INVALID_QUERY", "limit must be 1..1000"}, keep);
        q.limit = static_cast<size_t>(n);
      } else if (k == "cursor") {
        q.cursor = v;
      }
    }
    auto page = mgr_.List(q);
    if (!page) return SendError(page.error(), keep);
    json arr = json::array();
    for (const auto& r : page->items) {
      bool running = r.state == "running" || r.state == "creating";
      json item = {{"id", r.id},
                   {"createdAt", IsoTime(r.created_ms)},
                   {"stoppedAt", r.stopped_ms ? json(IsoTime(*r.stopped_ms)) : json(nullptr)},
                   {"region", r.region},
                   {"status", running ? "running" : "stopped"},
                   {"labels", r.labels}};
      if (r.stop_at_ms) item["stopAt"] = IsoTime(*r.stop_at_ms);
      if (!r.error.empty()) item["error"] = r.error;
      arr.push_back(std::move(item));
    }
    std::string link;
    if (!page->next_cursor.empty()) {
      std::string host(req[http::field::host]);
      link = "<http://" + host + "/api/" + version + "/sandboxes?cursor=" + UrlEncode(page->next_cursor) +
             "&limit=" + std::to_string(q.limit) + label_query + ">; rel=\"next\"";
    }
    SendJson(http::status::ok, Dump(arr), keep, link);
  }

  beast::tcp_stream stream_;
  core::Manager& mgr_;
  Authenticator& auth_;
  const HttpServer::ExposeSshFn& expose_ssh_;
  const std::optional<ingress::Naming>& ingress_naming_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

}  // namespace

HttpServer::HttpServer(boost::asio::io_context& io, core::Manager& mgr, core::Store& store)
    : io_(io), mgr_(mgr), auth_(store), acceptor_(io) {}

Result<tcp::endpoint> HttpServer::Listen(const std::string& host, uint16_t port) {
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(host, ec);
  if (ec) return FailMsg("invalid listen address '" + host + "'");
  tcp::endpoint ep(addr, port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) return FailMsg("listening on " + host + ":" + std::to_string(port) + ": " + ec.message());
  AcceptNext();
  return acceptor_.local_endpoint();
}

void HttpServer::Stop() {
  boost::system::error_code ec;
  acceptor_.close(ec);
}

void HttpServer::AcceptNext() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (!ec) {
      boost::system::error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);
      std::make_shared<HttpSession>(std::move(s), mgr_, auth_, expose_ssh_, ingress_naming_)->Run();
    }
    AcceptNext();
  });
}

}  // namespace sandboxd::api

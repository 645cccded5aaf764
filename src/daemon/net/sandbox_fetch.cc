#include "daemon/net/sandbox_fetch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <optional>

#include "common/fd.h"
#include "daemon/net/netns.h"

namespace sandboxd::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr int kMaxRedirects = 20;  // as browsers and the WHATWG fetch spec
constexpr auto kTimeout = std::chrono::seconds(60);
constexpr size_t kChunk = 64 * 1024;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsRedirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// Headers the client may not set: we frame the message and name the host.
bool IsConnectionHeader(std::string_view name) {
  return name == "host" || name == "content-length" || name == "transfer-encoding" || name == "connection" ||
         name == "keep-alive" || name == "upgrade" || name == "te" || name == "trailer" ||
         name == "proxy-connection";
}

class Fetch : public FetchCall, public std::enable_shared_from_this<Fetch> {
 public:
  Fetch(asio::any_io_executor io, const FetchTarget& t, FetchRequest req, FetchSink sink)
      : io_(io),
        gateway_(t.gateway_ip),
        tls_ctx_(t.tls),
        connect_(t.connect),
        req_(std::move(req)),
        sink_(std::move(sink)) {
    if (!connect_) netns_ = UniqueFd(::fcntl(t.netns_fd, F_DUPFD_CLOEXEC, 0));
    url_ = req_.url;
  }

  void Start() { Hop(); }

  void Cancel() override {
    if (finished_) return;
    cancelled_ = true;
    CloseStreams();
  }

 private:
  void Hop() {
    auto u = ParseHttpUrl(url_);
    if (!u) return FailHead(u.error().message);
    url_parts_ = *u;
    if (!netns_ && !connect_) return FailHead("the sandbox's network is gone");
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(u->host, ec);
    tcp::endpoint ep;
    if (!ec && addr.is_v6()) return FailHead("IPv6 destinations are not supported from a sandbox");
    // A name: dial any address; the firewall sends the connection to the
    // proxy, which decides by the TLS server name or the Host header.
    ep = tcp::endpoint(ec ? asio::ip::address(asio::ip::address_v4(gateway_)) : addr, u->port);
    if (connect_) {
      // Already connected (to the proxy, as the sandbox): go on at once.
      auto conn = connect_(ep);
      if (!conn) return FailHead(conn.error().message);
      tcp::socket sock(io_);
      const int raw = conn->Release();
      sock.assign(tcp::v4(), raw, ec);
      if (ec) {
        ::close(raw);
        return FailHead("socket: " + ec.message());
      }
      plain_.emplace(std::move(sock));
      plain_->expires_after(kTimeout);
      auto self = shared_from_this();
      return asio::post(io_, [self] {
        if (self->finished_) return;
        if (self->cancelled_) return self->FailHead("the request was aborted");
        if (!self->url_parts_.tls) return self->SendRequest(*self->plain_);
        self->Handshake();
      });
    }
    auto fd = SocketInNetns(netns_.get(), AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (!fd) return FailHead("cannot open a socket in the sandbox's network: " + fd.error().message);
    tcp::socket sock(io_);
    sock.assign(tcp::v4(), fd->Release(), ec);
    if (ec) return FailHead("socket: " + ec.message());
    plain_.emplace(std::move(sock));
    plain_->expires_after(kTimeout);
    plain_->async_connect(ep, [self = shared_from_this()](beast::error_code cec) {
      if (cec) return self->FailHead(self->Why("connect", cec));
      if (!self->url_parts_.tls) return self->SendRequest(*self->plain_);
      self->Handshake();
    });
  }

  void Handshake() {
    tls_.emplace(std::move(*plain_), *tls_ctx_);
    plain_.reset();
    SSL* ssl = tls_->native_handle();
    boost::system::error_code ec;
    (void)asio::ip::make_address(url_parts_.host, ec);
    if (ec) {
      SSL_set_tlsext_host_name(ssl, url_parts_.host.c_str());
      SSL_set1_host(ssl, url_parts_.host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), url_parts_.host.c_str());
    }
    SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
    tls_->async_handshake(asio::ssl::stream_base::client, [self = shared_from_this()](beast::error_code hec) {
      if (hec) return self->FailHead(self->Why("TLS handshake", hec));
      self->SendRequest(*self->tls_);
    });
  }

  template <class Stream>
  void SendRequest(Stream& s) {
    auto& r = out_.emplace();
    r.version(11);
    r.method_string(req_.method);
    r.target(url_parts_.target);
    bool default_port = url_parts_.port == (url_parts_.tls ? 443 : 80);
    std::string host = url_parts_.host.find(':') != std::string::npos ? "[" + url_parts_.host + "]" : url_parts_.host;
    r.set(http::field::host, default_port ? host : host + ":" + std::to_string(url_parts_.port));
    for (const auto& [k, v] : req_.headers) {
      if (!IsConnectionHeader(Lower(k))) r.insert(k, v);
    }
    r.set(http::field::connection, "close");
    r.body() = req_.body;
    if (!req_.body.empty() || (req_.method != "GET" && req_.method != "HEAD")) r.prepare_payload();
    http::async_write(s, r, [self = shared_from_this(), &s](beast::error_code ec, size_t) {
      if (ec) return self->FailHead(self->Why("sending the request", ec));
      self->ReadHead(s);
    });
  }

  template <class Stream>
  void ReadHead(Stream& s) {
    parser_.emplace();
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());  // boost::none means 0 in 1.74
    http::async_read_header(s, buf_, *parser_, [self = shared_from_this(), &s](beast::error_code ec, size_t) {
      if (ec) return self->FailHead(self->Why("reading the response", ec));
      self->OnHead(s);
    });
  }

  template <class Stream>
  void OnHead(Stream& s) {
    const auto& res = parser_->get();
    int status = static_cast<int>(res.result_int());
    if (req_.follow_redirects && IsRedirect(status)) {
      auto loc = res.find(http::field::location);
      if (loc != res.end()) return Redirect(status, std::string(loc->value()));
    }
    if (status < 200 || status > 599) return FailHead("upstream answered with status " + std::to_string(status));
    FetchHead head;
    head.status = status;
    head.status_text = std::string(res.reason());
    for (const auto& f : res) head.headers.emplace_back(Lower(f.name_string()), std::string(f.value()));
    head.has_body = !(status == 204 || status == 205 || status == 304 || req_.method == "HEAD");
    head.url = url_;
    head_sent_ = true;
    auto on_head = std::move(sink_.on_head);
    bool body = head.has_body;
    on_head(std::move(head));
    if (!body || cancelled_) return Finish({});
    ReadBody(s);
  }

  template <class Stream>
  void ReadBody(Stream& s) {
    if (parser_->is_done()) return Finish({});
    chunk_.resize(kChunk);
    parser_->get().body().data = chunk_.data();
    parser_->get().body().size = chunk_.size();
    if (plain_) plain_->expires_after(kTimeout);
    if (tls_) beast::get_lowest_layer(*tls_).expires_after(kTimeout);
    http::async_read_some(s, buf_, *parser_, [self = shared_from_this(), &s](beast::error_code ec, size_t) {
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return self->Finish(FailMsg(self->Why("reading the body", ec)));
      size_t n = self->chunk_.size() - self->parser_->get().body().size;
      if (n == 0) return self->ReadBody(s);
      std::weak_ptr<Fetch> weak = self;
      self->sink_.on_data(std::string_view(self->chunk_.data(), n), [weak, &s] {
        auto me = weak.lock();
        if (!me || me->finished_) return;
        asio::post(me->io_, [me, &s] {
          if (!me->finished_) me->ReadBody(s);
        });
      });
    });
  }

  void Redirect(int status, const std::string& location) {
    if (++redirects_ > kMaxRedirects) return FailHead("too many redirects");
    auto next = ResolveLocation(url_, location);
    if (!next) return FailHead("bad redirect location: " + next.error().message);
    // WHATWG fetch: 303 turns anything but HEAD into GET; 301/302 turn POST
    // into GET; the body goes with the method.
    if ((status == 303 && req_.method != "HEAD") || ((status == 301 || status == 302) && req_.method == "POST")) {
      req_.method = "GET";
      req_.body.clear();
      std::erase_if(req_.headers, [](const auto& h) {
        auto n = Lower(h.first);
        return n == "content-type" || n == "content-encoding" || n == "content-language" || n == "content-location";
      });
    }
    auto from = ParseHttpUrl(url_);
    auto to = ParseHttpUrl(*next);
    if (from && to && (from->host != to->host || from->port != to->port || from->tls != to->tls)) {
      // A credential meant for one origin does not follow to another.
      std::erase_if(req_.headers, [](const auto& h) {
        auto n = Lower(h.first);
        return n == "authorization" || n == "cookie" || n == "proxy-authorization";
      });
    }
    CloseStreams();
    url_ = *next;
    buf_.clear();
    Hop();
  }

  std::string Why(const char* what, const beast::error_code& ec) {
    if (cancelled_) return "the request was aborted";
    if (ec == beast::error::timeout) return std::string(what) + ": timed out";
    if (ec == asio::error::connection_refused || ec == asio::error::connection_reset ||
        ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
      return std::string(what) + ": the connection was refused or reset (is " + url_parts_.host +
             " in the sandbox's allowNet?)";
    }
    return std::string(what) + ": " + ec.message();
  }

  void FailHead(const std::string& msg) {
    if (head_sent_) return Finish(FailMsg(msg));
    finished_ = true;
    CloseStreams();
    auto on_head = std::move(sink_.on_head);
    if (on_head) on_head(std::unexpected(Error{cancelled_ ? ECANCELED : 0, msg}));
  }

  void Finish(Status st) {
    if (finished_) return;
    finished_ = true;
    CloseStreams();
    auto on_end = std::move(sink_.on_end);
    if (on_end) on_end(cancelled_ ? FailMsg("the request was aborted") : st);
  }

  void CloseStreams() {
    boost::system::error_code ec;
    if (plain_) plain_->socket().close(ec);
    if (tls_) beast::get_lowest_layer(*tls_).socket().close(ec);
  }

  asio::any_io_executor io_;
  UniqueFd netns_;
  uint32_t gateway_;
  std::shared_ptr<asio::ssl::context> tls_ctx_;
  std::function<Result<UniqueFd>(const tcp::endpoint&)> connect_;
  FetchRequest req_;
  FetchSink sink_;
  std::string url_;
  ParsedUrl url_parts_;
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  std::optional<http::request<http::string_body>> out_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  beast::flat_buffer buf_;
  std::string chunk_;
  int redirects_ = 0;
  bool head_sent_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
};

}  // namespace

Result<ParsedUrl> ParseHttpUrl(std::string_view url) {
  ParsedUrl out;
  auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return FailMsg("invalid URL: " + std::string(url));
  std::string scheme = Lower(url.substr(0, scheme_end));
  if (scheme == "https") {
    out.tls = true;
  } else if (scheme != "http") {
    return FailMsg("unsupported URL scheme \"" + scheme + "\" (only http and https)");
  }
  std::string_view rest = url.substr(scheme_end + 3);
  size_t auth_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, auth_end);
  std::string_view tail = auth_end == std::string_view::npos ? std::string_view() : rest.substr(auth_end);
  if (authority.find('@') != std::string_view::npos) return FailMsg("URLs with credentials are not supported");
  std::string_view hostpart = authority, portpart;
  if (!authority.empty() && authority[0] == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return FailMsg("invalid URL host: " + std::string(authority));
    hostpart = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return FailMsg("invalid URL host: " + std::string(authority));
      portpart = after.substr(1);
    }
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    hostpart = authority.substr(0, colon);
    portpart = authority.substr(colon + 1);
  }
  if (hostpart.empty()) return FailMsg("URL without a host: " + std::string(url));
  out.host = Lower(hostpart);
  out.port = out.tls ? 443 : 80;
  if (!portpart.empty()) {
    unsigned v = 0;
    for (char c : portpart) {
      if (c < '0' || c > '9' || (v = v * 10 + static_cast<unsigned>(c - '0')) > 65535) {
        return FailMsg("invalid URL port: " + std::string(portpart));
      }
    }
    if (v == 0) return FailMsg("invalid URL port: 0");
    out.port = static_cast<uint16_t>(v);
  }
  if (auto hash = tail.find('#'); hash != std::string_view::npos) tail = tail.substr(0, hash);
  out.target = tail.empty() || tail[0] != '/' ? "/" + std::string(tail) : std::string(tail);
  for (char c : out.target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return FailMsg("invalid character in URL path");
  }
  return out;
}

Result<std::string> ResolveLocation(std::string_view base, std::string_view location) {
  if (location.find("://") != std::string_view::npos) {
    SBX_TRY(ParseHttpUrl(location));
    return std::string(location);
  }
  auto b = ParseHttpUrl(base);
  if (!b) return std::unexpected(b.error());
  std::string origin = std::string(base.substr(0, base.find("://") + 3));
  size_t auth_end = base.find_first_of("/?#", origin.size());
  origin = std::string(base.substr(0, auth_end));
  if (location.starts_with("//")) return std::string(b->tls ? "https:" : "http:") + std::string(location);
  if (location.starts_with("/")) return origin + std::string(location);
  // Relative path: replace the last segment of the base path.
  std::string path = b->target.substr(0, b->target.find('?'));
  path = path.substr(0, path.rfind('/') + 1);
  return origin + path + std::string(location);
}

std::shared_ptr<FetchCall> StartFetch(asio::any_io_executor io, const FetchTarget& target, FetchRequest req,
                                      FetchSink sink) {
  auto f = std::make_shared<Fetch>(io, target, std::move(req), std::move(sink));
  f->Start();
  return f;
}

}  // namespace sandboxd::net

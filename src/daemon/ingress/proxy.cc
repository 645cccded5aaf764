#include "daemon/ingress/proxy.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <limits>
#include <vector>

#include "daemon/ingress/pid_port.h"
#include "daemon/net/http_util.h"
#include "daemon/net/firewall.h"
#include "daemon/net/netns.h"

namespace sandboxd::ingress {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

// Per-read sizes, and so per-connection memory: a kept-alive connection holds
// two 16 KiB read buffers, and two more while bodies flow (a TLS record is
// 16 KiB; loopback reads of that size keep the copy overhead small).
constexpr size_t kBodyChunk = 16 * 1024;
constexpr uint32_t kHeaderLimit = 64 * 1024;
// Boost 1.74's parser treats an empty body limit as "over the limit" for a
// Content-Length; the largest value means none.
constexpr uint64_t kNoBodyLimit = std::numeric_limits<uint64_t>::max();

using net::http_util::IsHopByHop;
using net::http_util::ReasonText;
using net::http_util::Trim;

// Whether `name` is listed in a Connection header value (so hop-by-hop).
bool ListedIn(std::string_view connection, std::string_view name) {
  for (auto const& t : http::token_list(connection)) {
    if (beast::iequals(t, name)) return true;
  }
  return false;
}

std::string HostOnly(std::string_view authority) {
  std::string h(authority.substr(0, authority.find(':')));
  for (char& c : h) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (h.ends_with('.')) h.pop_back();
  return h;
}

// How a message body leaves the proxy.
enum class Framing {
  kNone,     // no body
  kLength,   // Content-Length, as received
  kChunked,  // (re-)chunked
  kEof,      // delimited by closing the connection (responses to HTTP/1.0 clients)
};

// One upstream connection with what reads from it use. Handlers hold it, so
// a connection dropped with operations pending keeps their buffers alive;
// `conn != up_` in a handler means the connection was dropped meanwhile.
struct Conn {
  beast::tcp_stream s;
  beast::flat_buffer buf;
  std::optional<http::response_parser<http::buffer_body>> res;
  std::vector<char> body;  // the body parser's buffer, allocated for the first body
  HostRoute key;
  explicit Conn(beast::tcp_stream&& stream) : s(std::move(stream)) {}
  bool reused = false;
  bool timed_out = false;  // the response deadline closed it
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(net::AnyStream down, beast::flat_buffer already, std::string client_ip,
          std::shared_ptr<const ProxyEnv> env)
      : down_(std::move(down)),
        down_buf_(std::move(already)),
        client_ip_(std::move(client_ip)),
        env_(std::move(env)),
        ex_(down_.get_executor()),
        timer_(ex_) {
    down_buf_.reserve(kBodyChunk);
  }

  void Start() { ReadRequest(true); }

 private:
  enum class ReqBody { kNone, kPumping, kDone, kFailed };

  // ---- request head --------------------------------------------------------

  void ReadRequest(bool first) {
    if (down_buf_.size() != 0) return ReadRequestHeader();
    // The next request's first bytes under the keep-alive timeout; then the
    // head gets its own deadline.
    down_.ExpiresAfter(first ? env_->header_timeout : env_->idle_timeout);
    down_.async_read_some(down_buf_.prepare(4096),
                          [self = shared_from_this()](error_code ec, size_t n) {
                            if (ec) return self->Finish();  // closed or idle: nobody to answer
                            self->down_buf_.commit(n);
                            self->ReadRequestHeader();
                          });
  }

  void ReadRequestHeader() {
    req_.emplace();
    req_->header_limit(kHeaderLimit);
    req_->body_limit(kNoBodyLimit);
    down_.ExpiresAfter(env_->header_timeout);
    http::async_read_header(
        down_, down_buf_, *req_,
        [self = shared_from_this()](error_code ec, size_t) { self->OnRequestHeader(ec); });
  }

  void OnRequestHeader(error_code ec) {
    if (ec) {
      if (ec == http::error::header_limit)
        return Refuse(431, "BAD_REQUEST", "request header too large");
      if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
          ec != http::error::end_of_stream && ec != http::error::partial_message) {
        return Refuse(400, "BAD_REQUEST", "malformed request");
      }
      return Finish();
    }
    // Not eager (here, nor for responses): an eager parser that has a
    // chunk's data but not yet the next chunk's header asks for more input
    // before it hands the data over, which would hold back the latest event
    // of an event stream until the next one.
    auto& req = req_->get();
    // Per-exchange state.
    req_state_ = ReqBody::kNone;
    res_started_ = false;
    res_done_ = false;
    close_after_ = false;
    up_keep_ = true;
    retried_ = false;

    if (req.version() != 10 && req.version() != 11) {
      return Refuse(505, "BAD_REQUEST", "only HTTP/1.0 and HTTP/1.1 are served");
    }
    client_http10_ = req.version() == 10;
    client_close_ = client_http10_ || !req_->keep_alive();
    head_ = req.method() == http::verb::head;
    if (req.method() == http::verb::connect)
      return Refuse(405, "BAD_REQUEST", "CONNECT is not supported");
    if (req.count(http::field::host) != 1)
      return Refuse(400, "BAD_REQUEST", "exactly one Host header is required");
    host_header_ = std::string(Trim(req[http::field::host]));
    auto route = ParseIngressHost(host_header_, env_->domain);
    if (!route) {
      return Refuse(404, "UNKNOWN_HOST",
                    "'" + host_header_ +
                        "' names no sandbox service (expected <sandbox id>-<port>." + env_->domain +
                        ")");
    }
    route_ = *route;

    // Origin form as is; absolute form (allowed by RFC 9112) only for this
    // very Host, and sent on in origin form.
    std::string_view target = req.target();
    target_ = std::string(target);
    if (!target.starts_with('/') && !(target == "*" && req.method() == http::verb::options)) {
      size_t scheme = target.find("://");
      std::string_view rest =
          scheme == std::string_view::npos ? std::string_view() : target.substr(scheme + 3);
      std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
      if (rest.empty() || HostOnly(authority) != HostOnly(host_header_)) {
        return Refuse(400, "BAD_REQUEST", "bad request target");
      }
      std::string_view path = rest.substr(authority.size());
      target_ = path.empty() || path[0] != '/' ? "/" + std::string(path) : std::string(path);
    }

    // Framing we can forward unambiguously.
    bool has_te = req.count(http::field::transfer_encoding) > 0;
    if (has_te && req.count(http::field::content_length) > 0) {
      return Refuse(400, "BAD_REQUEST", "both Content-Length and Transfer-Encoding");
    }
    if (has_te && (!req_->chunked() ||
                   !beast::iequals(Trim(req[http::field::transfer_encoding]), "chunked"))) {
      return Refuse(501, "BAD_REQUEST", "unsupported transfer-coding");
    }
    auto cl = req_->content_length();
    req_framing_ = req_->chunked()   ? Framing::kChunked
                   : (cl && *cl > 0) ? Framing::kLength
                                     : Framing::kNone;
    had_length_ = cl.has_value();
    upgrade_ = req_->upgrade();
    if (upgrade_ && req_framing_ != Framing::kNone) {
      return Refuse(400, "BAD_REQUEST", "a protocol upgrade request must not have a body");
    }
    BuildUpstreamHead();
    EnsureUpstream();
  }

  void BuildUpstreamHead() {
    auto& req = req_->get();
    std::string_view connection = req[http::field::connection];
    std::string xff;
    std::string& h = up_head_;
    h.clear();
    h.append(req.method_string()).append(" ").append(target_).append(" HTTP/1.1\r\n");
    for (auto const& f : req) {
      http::field name = f.name();
      if (name == http::field::upgrade && upgrade_) {
        // kept: the upgrade is relayed
      } else if (name == http::field::host) {
        // kept: the service sees the name it was reached by
      } else if (IsHopByHop(name) || name == http::field::content_length ||
                 ListedIn(connection, f.name_string())) {
        continue;
      } else if (beast::iequals(f.name_string(), "X-Forwarded-For")) {
        if (!xff.empty()) xff += ", ";
        xff += Trim(f.value());
        continue;
      } else if (beast::iequals(f.name_string(), "X-Forwarded-Proto") ||
                 beast::iequals(f.name_string(), "X-Forwarded-Host")) {
        continue;  // ours, not the client's
      }
      h.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
    }
    // The client's own chain (if any) with the address we saw appended, as
    // proxies do; Proto and Host are facts of this hop.
    if (!xff.empty()) xff += ", ";
    xff += client_ip_;
    h.append("X-Forwarded-For: ").append(xff).append("\r\n");
    h.append("X-Forwarded-Proto: ").append(down_.is_tls() ? "https" : "http").append("\r\n");
    h.append("X-Forwarded-Host: ").append(host_header_).append("\r\n");
    if (upgrade_) h.append("Connection: Upgrade\r\n");
    switch (req_framing_) {
      case Framing::kNone:
        if (had_length_) h.append("Content-Length: 0\r\n");
        break;
      case Framing::kLength:
        h.append("Content-Length: ").append(std::to_string(*req_->content_length())).append("\r\n");
        break;
      case Framing::kChunked:
        h.append("Transfer-Encoding: chunked\r\n");
        break;
      case Framing::kEof:
        break;
    }
    h.append("\r\n");
  }

  // ---- routing and connecting ------------------------------------------------

  void EnsureUpstream() {
    if (up_ && up_->key == route_) {
      up_->reused = true;
      return SendRequestHead();
    }
    CloseUpstream();
    uint64_t gen = ++route_gen_;
    if (!env_->route) return Refuse(500, "INTERNAL", "no router");
    auto ex = ex_;
    env_->route(route_, [self = shared_from_this(), ex, gen](RouteResult r) {
      asio::post(ex,
                 [self, gen, r = std::move(r)]() mutable { self->OnRouted(gen, std::move(r)); });
    });
  }

  void OnRouted(uint64_t gen, RouteResult r) {
    if (finished_ || gen != route_gen_) return;
    if (!r) return Refuse(r.error().status, r.error().code, r.error().message);
    upstream_ = std::move(*r);
    Dial();
  }

  void Dial() {
    Result<uint16_t> port = FailMsg("no dialer");
    if (env_->port_of) port = env_->port_of(upstream_);
    if (!port) {
      bool gone = port.error().code == ESRCH;
      return Refuse(502, gone ? "PROCESS_EXITED" : "NOT_LISTENING",
                    "sandbox " + upstream_.sandbox_id + ": " + port.error().message);
    }
    port_ = *port;
    Connect(0, {});
  }

  // Tries 127.0.0.1, then [::1] (a server bound to "localhost" may have
  // picked either). A guest (microVM): its address, then, when that is
  // refused, the guest agent's loopback relay (common/loopback_relay.h), which
  // reaches a server bound to the guest's 127.0.0.1.
  void Connect(int attempt, error_code first_error) {
    const uint32_t guest_ip = upstream_.handles ? upstream_.handles->guest_ip : 0;
    int family = attempt == 0 || guest_ip != 0 ? AF_INET : AF_INET6;
    Result<UniqueFd> fd = FailMsg("no dialer");
    if (env_->socket_for) fd = env_->socket_for(upstream_, family);
    if (!fd) {
      if (attempt == 0 && guest_ip == 0)
        return Connect(1, asio::error::address_family_not_supported);
      return ConnectFailed(first_error ? first_error : asio::error::address_family_not_supported);
    }
    error_code ec;
    tcp::socket sock(ex_);
    sock.assign(family == AF_INET ? tcp::v4() : tcp::v6(), fd->Release(), ec);
    if (ec) return Refuse(502, "UPSTREAM_UNREACHABLE", "socket: " + ec.message());
    auto stream = std::make_shared<beast::tcp_stream>(std::move(sock));
    stream->expires_after(env_->connect_timeout);
    const bool relay = guest_ip != 0 && attempt == 1;
    tcp::endpoint ep(guest_ip != 0       ? asio::ip::address(asio::ip::address_v4(guest_ip))
                     : family == AF_INET ? asio::ip::address(asio::ip::address_v4::loopback())
                                         : asio::ip::address(asio::ip::address_v6::loopback()),
                     relay ? env_->guest_relay_port : port_);
    uint64_t gen = route_gen_;
    stream->async_connect(ep, [self = shared_from_this(), stream, attempt, first_error, gen, relay,
                               guest_ip](error_code ec) {
      if (self->finished_ || gen != self->route_gen_) return;
      if (ec == beast::error::timeout) {
        return self->Refuse(502, "UPSTREAM_UNREACHABLE",
                            "sandbox " + self->upstream_.sandbox_id + ": connecting to port " +
                                std::to_string(self->port_) + " timed out");
      }
      if (ec) {
        // A guest's relay only for what its address refused.
        const bool retry = attempt == 0 && (guest_ip == 0 || ec == asio::error::connection_refused);
        if (retry) return self->Connect(1, ec);
        return self->ConnectFailed(first_error ? first_error : ec);
      }
      if (relay) return self->RelayHandshake(stream, gen);
      self->Connected(stream);
    });
  }

  // "<port>\r\n" to the guest's loopback relay; "+\r\n" means connected.
  void RelayHandshake(std::shared_ptr<beast::tcp_stream> stream, uint64_t gen) {
    auto line = std::make_shared<std::string>(std::to_string(port_) + "\r\n");
    auto reply = std::make_shared<std::string>();
    asio::async_write(*stream, asio::buffer(*line),
                      [self = shared_from_this(), stream, line, reply, gen](error_code ec, size_t) {
                        if (self->finished_ || gen != self->route_gen_) return;
                        if (ec) return self->ConnectFailed(asio::error::connection_refused);
                        // Nothing follows the reply line before the request is sent, so
                        // reading up to its end cannot take any of the response.
                        asio::async_read_until(
                            *stream, asio::dynamic_buffer(*reply, 256), "\n",
                            [self, stream, reply, gen](error_code ec, size_t n) {
                              if (self->finished_ || gen != self->route_gen_) return;
                              if (ec == beast::error::timeout) {
                                return self->Refuse(502, "UPSTREAM_UNREACHABLE",
                                                    "sandbox " + self->upstream_.sandbox_id +
                                                        ": connecting to port " +
                                                        std::to_string(self->port_) + " timed out");
                              }
                              if (ec || n != reply->size() || reply->front() != '+') {
                                return self->ConnectFailed(asio::error::connection_refused);
                              }
                              self->Connected(stream);
                            });
                      });
  }

  void Connected(const std::shared_ptr<beast::tcp_stream>& stream) {
    error_code ignored;
    stream->socket().set_option(tcp::no_delay(true), ignored);
    stream->expires_never();
    auto c = std::make_shared<Conn>(std::move(*stream));
    c->buf.reserve(kBodyChunk);
    c->key = route_;
    up_ = std::move(c);
    SendRequestHead();
  }

  void ConnectFailed(error_code ec) {
    std::string what = ec == asio::error::connection_refused
                           ? "nothing listens on port " + std::to_string(port_)
                           : "port " + std::to_string(port_) + ": " + ec.message();
    Refuse(502, "UPSTREAM_UNREACHABLE", "sandbox " + upstream_.sandbox_id + ": " + what);
  }

  void CloseUpstream() {
    timer_.cancel();
    if (up_) up_->s.close();
    up_.reset();
  }

  // A kept-alive upstream connection may have been closed by the service
  // just as we reused it: send again once, on a new connection, when
  // nothing of the request body or the response was consumed yet.
  bool Retryable(const std::shared_ptr<Conn>& c, error_code ec) const {
    if (!c->reused || retried_ || c->buf.size() != 0 || req_framing_ != Framing::kNone)
      return false;
    return ec == http::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
  }

  void Retry() {
    retried_ = true;
    CloseUpstream();
    ++route_gen_;
    Dial();
  }

  // ---- request: head and body ---------------------------------------------------

  void SendRequestHead() {
    auto c = up_;
    c->s.expires_after(env_->idle_timeout);
    asio::async_write(
        c->s, asio::buffer(up_head_), [self = shared_from_this(), c](error_code ec, size_t) {
          if (self->finished_ || c != self->up_) return;
          if (ec) {
            if (self->Retryable(c, ec)) return self->Retry();
            return self->Refuse(502, "UPSTREAM_CLOSED",
                                "sandbox " + self->upstream_.sandbox_id + ": the service on port " +
                                    std::to_string(self->port_) + " closed the connection");
          }
          if (self->req_framing_ != Framing::kNone) {
            self->req_state_ = ReqBody::kPumping;
            self->PumpRequestBody();
          } else {
            self->req_state_ = ReqBody::kDone;
            self->ArmResponseDeadline();
          }
          self->ReadResponseHeader();
        });
  }

  void PumpRequestBody() {
    if (req_body_.empty()) req_body_.resize(kBodyChunk);
    auto& body = req_->get().body();
    body.data = req_body_.data();
    body.size = req_body_.size();
    down_.ExpiresAfter(env_->idle_timeout);
    http::async_read_some(
        down_, down_buf_, *req_,
        [self = shared_from_this()](error_code ec, size_t) { self->OnRequestBodyRead(ec); });
  }

  void OnRequestBodyRead(error_code ec) {
    if (finished_ || refusing_) return;
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      // The client stopped sending its body (closed, timed out, or broke
      // the chunk framing): the exchange cannot complete.
      req_state_ = ReqBody::kFailed;
      bool malformed = ec.category() == http::make_error_code(http::error::bad_chunk).category() &&
                       ec != http::error::partial_message && ec != http::error::end_of_stream;
      if (malformed && !res_started_ && !interim_writing_) {
        return Refuse(400, "BAD_REQUEST", "malformed request body");
      }
      return Finish();
    }
    size_t n = req_body_.size() - req_->get().body().size;
    bool done = req_->is_done();
    req_out_.clear();
    if (req_framing_ == Framing::kChunked) {
      if (n > 0) {
        char hex[20];
        int k = std::snprintf(hex, sizeof hex, "%zx\r\n", n);
        req_out_.append(hex, static_cast<size_t>(k)).append(req_body_.data(), n).append("\r\n");
      }
      if (done) req_out_.append("0\r\n\r\n");
    } else {
      req_out_.append(req_body_.data(), n);
    }
    if (req_out_.empty()) return done ? RequestBodySent() : PumpRequestBody();
    auto c = up_;
    c->s.expires_after(env_->idle_timeout);
    asio::async_write(c->s, asio::buffer(req_out_),
                      [self = shared_from_this(), c, done](error_code ec, size_t) {
                        if (self->finished_ || self->refusing_ || c != self->up_) return;
                        if (ec) {
                          // The service stopped reading (it may have answered already, or
                          // be about to): stop reading the client, let the response decide.
                          self->req_state_ = ReqBody::kFailed;
                          self->close_after_ = true;
                          self->up_keep_ = false;
                          self->ArmResponseDeadline();
                          return self->ExchangeStep();
                        }
                        if (done) return self->RequestBodySent();
                        self->PumpRequestBody();
                      });
  }

  void RequestBodySent() {
    req_state_ = ReqBody::kDone;
    ArmResponseDeadline();
    ExchangeStep();
  }

  // ---- response -------------------------------------------------------------

  // The response deadline for requests with a body: it runs from when the
  // whole body is with the service (a slow upload is not the service being
  // slow). Requests without one use the stream's timer (ReadResponseHeader).
  void ArmResponseDeadline() {
    if (res_started_ || !up_ || req_framing_ == Framing::kNone) return;
    auto c = up_;
    timer_.expires_after(env_->response_timeout);
    timer_.async_wait([self = shared_from_this(), c](error_code ec) {
      if (ec || self->finished_ || c != self->up_ || self->res_started_) return;
      c->timed_out = true;
      c->s.close();  // the pending head read fails and answers 504
    });
  }

  void ReadResponseHeader() {
    auto c = up_;
    c->res.emplace();
    c->res->header_limit(kHeaderLimit);
    c->res->body_limit(kNoBodyLimit);
    if (head_) c->res->skip(true);
    // The deadline runs from when the whole request is with the service: for
    // a request without a body that is now (the stream's own timer);
    // otherwise ArmResponseDeadline starts it once the body is through.
    if (req_state_ == ReqBody::kDone) {
      c->s.expires_after(env_->response_timeout);
    } else {
      c->s.expires_never();
    }
    http::async_read_header(
        c->s, c->buf, *c->res,
        [self = shared_from_this(), c](error_code ec, size_t) { self->OnResponseHeader(c, ec); });
  }

  void OnResponseHeader(const std::shared_ptr<Conn>& c, error_code ec) {
    if (finished_ || refusing_ || c != up_) return;
    if (ec) {
      timer_.cancel();
      if (c->timed_out || ec == beast::error::timeout) {
        return Refuse(504, "UPSTREAM_TIMEOUT",
                      "sandbox " + upstream_.sandbox_id + ": the service on port " +
                          std::to_string(port_) + " did not answer within " +
                          std::to_string(env_->response_timeout.count() / 1000) + " s");
      }
      if (Retryable(c, ec)) return Retry();
      bool closed = ec == http::error::end_of_stream || ec == asio::error::eof ||
                    ec == asio::error::connection_reset;
      return Refuse(502, closed ? "UPSTREAM_CLOSED" : "BAD_UPSTREAM_RESPONSE",
                    "sandbox " + upstream_.sandbox_id + ": the service on port " +
                        std::to_string(port_) +
                        (closed ? " closed the connection without answering"
                                : " sent a malformed response (" + ec.message() + ")"));
    }
    auto& res = c->res->get();
    unsigned status = res.result_int();
    if (status == 101) {
      timer_.cancel();
      if (upgrade_) return StartTunnel(c);
      return Refuse(502, "BAD_UPSTREAM_RESPONSE", "unexpected protocol switch from the service");
    }
    if (status / 100 == 1) {  // interim (100 Continue, 103 Early Hints)
      if (client_http10_) return ReadResponseHeader();
      res_out_ =
          "HTTP/1.1 " + std::to_string(status) + " " + std::string(ReasonText(status)) + "\r\n";
      std::string_view connection = res[http::field::connection];
      for (auto const& f : res) {
        if (IsHopByHop(f.name()) || ListedIn(connection, f.name_string())) continue;
        res_out_.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
      }
      res_out_.append("\r\n");
      down_.ExpiresAfter(env_->idle_timeout);
      interim_writing_ = true;
      asio::async_write(down_, asio::buffer(res_out_),
                        [self = shared_from_this(), c](error_code ec, size_t) {
                          self->interim_writing_ = false;
                          if (self->finished_ || c != self->up_) return;
                          if (ec) return self->Finish();
                          self->ReadResponseHeader();
                        });
      return;
    }
    timer_.cancel();
    res_started_ = true;

    bool no_body = head_ || status == 204 || status == 304 || c->res->is_done();
    bool chunked_in = c->res->chunked();
    auto cl = c->res->content_length();
    bool eof_in = !no_body && !chunked_in && !cl;
    if (res.count(http::field::transfer_encoding) > 0 &&
        (!chunked_in || !beast::iequals(Trim(res[http::field::transfer_encoding]), "chunked"))) {
      return Refuse(502, "BAD_UPSTREAM_RESPONSE", "unsupported transfer-coding from the service");
    }
    if (no_body) {
      res_framing_ = Framing::kNone;
    } else if (cl) {
      res_framing_ = Framing::kLength;
    } else if (!client_http10_) {
      res_framing_ = Framing::kChunked;  // chunked, or close-delimited re-framed so the client
                                         // connection lives on
    } else {
      res_framing_ = Framing::kEof;
    }
    // Answered while the body still flows (or failed to): close after, the
    // connection would be out of step.
    if (client_close_ || res_framing_ == Framing::kEof || req_state_ != ReqBody::kDone)
      close_after_ = true;
    if (!c->res->keep_alive() || eof_in || upgrade_) up_keep_ = false;

    std::string_view connection = res[http::field::connection];
    std::string& h = res_out_;
    h.clear();
    h.append("HTTP/1.1 ").append(std::to_string(status)).append(" ");
    h.append(res.reason().empty() ? std::string_view(ReasonText(status)) : res.reason())
        .append("\r\n");
    for (auto const& f : res) {
      http::field name = f.name();
      if (name == http::field::content_length) {
        if (res_framing_ != Framing::kLength && res_framing_ != Framing::kNone) continue;
      } else if (name == http::field::transfer_encoding) {
        if (res_framing_ != Framing::kNone || client_http10_)
          continue;  // informative on a bodiless answer
      } else if (IsHopByHop(name) || ListedIn(connection, f.name_string())) {
        continue;
      }
      h.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
    }
    if (res_framing_ == Framing::kChunked) h.append("Transfer-Encoding: chunked\r\n");
    if (close_after_) h.append("Connection: close\r\n");
    h.append("\r\n");
    status_ = status;
    // Body bytes that came with the head leave with it: one write, one
    // segment, one wake-up of the client for a small response.
    bool done = res_framing_ == Framing::kNone;
    if (!done && c->buf.size() != 0) {
      auto took = TakeBuffered(c);
      if (!took) {
        res_started_ = false;
        return Refuse(502, "BAD_UPSTREAM_RESPONSE",
                      "sandbox " + upstream_.sandbox_id + ": the service sent a malformed body (" +
                          took.error().message() + ")");
      }
      done = *took;
    }
    down_.ExpiresAfter(env_->idle_timeout);
    asio::async_write(down_, asio::buffer(res_out_),
                      [self = shared_from_this(), c, done](error_code ec, size_t) {
                        if (self->finished_ || c != self->up_) return;
                        if (ec) return self->Finish();
                        if (done) return self->ResponseDone();
                        self->PumpResponseBody(c);
                      });
  }

  // Parses what is buffered of the response body (no I/O) and appends it,
  // framed, to res_out_. Returns whether the body is complete.
  std::expected<bool, error_code> TakeBuffered(const std::shared_ptr<Conn>& c) {
    if (c->body.empty()) c->body.resize(kBodyChunk);
    auto& body = c->res->get().body();
    body.data = c->body.data();
    body.size = c->body.size();
    while (c->buf.size() != 0 && !c->res->is_done() && body.size != 0) {
      error_code ec;
      size_t used = c->res->put(c->buf.data(), ec);
      c->buf.consume(used);
      if (ec == http::error::need_more || ec == http::error::need_buffer) break;
      if (ec) return std::unexpected(ec);
      if (used == 0) break;
    }
    bool done = c->res->is_done();
    AppendFramed(res_out_, c->body.data(), c->body.size() - body.size, done);
    return done;
  }

  // `n` body bytes as they go to the client (a chunk when re-chunking), and
  // the last-chunk when `done`.
  void AppendFramed(std::string& out, const char* data, size_t n, bool done) {
    if (res_framing_ == Framing::kChunked) {
      if (n > 0) {
        char hex[20];
        int k = std::snprintf(hex, sizeof hex, "%zx\r\n", n);
        out.append(hex, static_cast<size_t>(k)).append(data, n).append("\r\n");
      }
      if (done) out.append("0\r\n\r\n");
    } else {
      out.append(data, n);
    }
  }

  void PumpResponseBody(const std::shared_ptr<Conn>& c) {
    if (c->body.empty()) c->body.resize(kBodyChunk);
    auto& body = c->res->get().body();
    body.data = c->body.data();
    body.size = c->body.size();
    // No inactivity limit here: event streams and long polls may idle for
    // long; the service's connection ends with its sandbox, and the client
    // can always close.
    c->s.expires_never();
    http::async_read_some(
        c->s, c->buf, *c->res,
        [self = shared_from_this(), c](error_code ec, size_t) { self->OnResponseBodyRead(c, ec); });
  }

  void OnResponseBodyRead(const std::shared_ptr<Conn>& c, error_code ec) {
    if (finished_ || c != up_) return;
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      // The status line is out: truncation (closing) is all we can signal.
      spdlog::debug("ingress {}: response body from port {} ended early: {}", upstream_.sandbox_id,
                    port_, ec.message());
      return Finish();
    }
    size_t n = c->body.size() - c->res->get().body().size;
    bool done = c->res->is_done();
    res_out_.clear();
    AppendFramed(res_out_, c->body.data(), n, done);
    if (res_out_.empty()) return done ? ResponseDone() : PumpResponseBody(c);
    down_.ExpiresAfter(env_->idle_timeout);
    asio::async_write(down_, asio::buffer(res_out_),
                      [self = shared_from_this(), c, done](error_code ec, size_t) {
                        if (self->finished_ || c != self->up_) return;
                        if (ec) return self->Finish();
                        if (done) return self->ResponseDone();
                        self->PumpResponseBody(c);
                      });
  }

  void ResponseDone() {
    res_done_ = true;
    spdlog::debug("ingress {} {} {} → {}", host_header_, req_->get().method_string(), target_,
                  status_);
    ExchangeStep();
  }

  // Moves on once both the response and the request body are through.
  void ExchangeStep() {
    if (!res_done_) return;
    if (req_state_ == ReqBody::kPumping) {
      // Answered before the body was all sent: finish sending it (or fail
      // to), then close; the connection is out of step for reuse.
      close_after_ = true;
      up_keep_ = false;
      return;
    }
    if (!up_keep_) CloseUpstream();
    if (close_after_ || req_state_ == ReqBody::kFailed) return ShutdownDownstream();
    ReadRequest(false);
  }

  // ---- upgrade: bytes both ways after 101 ------------------------------------

  void StartTunnel(const std::shared_ptr<Conn>& c) {
    auto& res = c->res->get();
    std::string head = "HTTP/1.1 101 ";
    head.append(res.reason().empty() ? std::string_view("Switching Protocols") : res.reason())
        .append("\r\n");
    for (auto const& f : res)
      head.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
    head.append("\r\n");
    spdlog::debug("ingress {} {} {} → 101", host_header_, req_->get().method_string(), target_);
    down_.ExpiresNever();
    c->s.expires_never();
    // What the parsers read past the heads belongs to the new protocol.
    std::string to_client = head + beast::buffers_to_string(c->buf.data());
    std::string to_service = beast::buffers_to_string(down_buf_.data());
    c->buf.clear();
    down_buf_.clear();
    tunnel_up_ = std::make_shared<net::AnyStream>(std::move(c->s));
    auto to_down = std::make_shared<Pipe>(Pipe{tunnel_up_.get(), &down_, std::move(to_client)});
    auto to_up = std::make_shared<Pipe>(Pipe{&down_, tunnel_up_.get(), std::move(to_service)});
    tunnel_open_ = 2;
    Tunnel(c, to_down);
    Tunnel(c, to_up);
  }

  struct Pipe {
    net::AnyStream* from;
    net::AnyStream* to;
    std::string pending;  // to write before reading again
    std::vector<char> buf = std::vector<char>(kBodyChunk);
  };

  // `c` is held only to keep the upgraded connection's state alive.
  void Tunnel(const std::shared_ptr<Conn>& c, const std::shared_ptr<Pipe>& p) {
    if (!p->pending.empty()) {
      asio::async_write(*p->to, asio::buffer(p->pending),
                        [self = shared_from_this(), c, p](error_code ec, size_t) {
                          if (ec) return self->TunnelEnded();
                          p->pending.clear();
                          self->Tunnel(c, p);
                        });
      return;
    }
    p->from->async_read_some(asio::buffer(p->buf),
                             [self = shared_from_this(), c, p](error_code ec, size_t n) {
                               if (ec) return self->TunnelEnded();
                               asio::async_write(*p->to, asio::buffer(p->buf.data(), n),
                                                 [self, c, p](error_code ec, size_t) {
                                                   if (ec) return self->TunnelEnded();
                                                   self->Tunnel(c, p);
                                                 });
                             });
  }

  void TunnelEnded() {
    // Either direction ending ends both: the protocols on top have their
    // own close handshakes, already relayed by then.
    if (tunnel_up_) tunnel_up_->Close();
    down_.Close();
    if (--tunnel_open_ == 0) Finish();
  }

  // ---- endings ----------------------------------------------------------------

  // Answers with an error and closes the connection.
  void Refuse(unsigned status, std::string code, std::string message) {
    if (finished_ || refusing_) return;
    if (res_started_) return Finish();  // a status line is out already
    refusing_ = true;
    if (status >= 500) {
      spdlog::info("ingress {}: {} {} ({})", host_header_.empty() ? "-" : host_header_, status,
                   code, message);
    } else {
      spdlog::debug("ingress {}: {} {} ({})", host_header_.empty() ? "-" : host_header_, status,
                    code, message);
    }
    CloseUpstream();
    std::string body = "sandboxd ingress: " + message + "\n";
    err_out_ = "HTTP/1.1 " + std::to_string(status) + " " + ReasonText(status) +
               "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\nX-Sandboxd-Error: " + code +
               "\r\nConnection: close\r\n\r\n" + (head_ ? std::string() : body);
    bool reading = req_state_ == ReqBody::kPumping;  // a body read from the client is pending
    down_.ExpiresAfter(env_->idle_timeout);
    asio::async_write(down_, asio::buffer(err_out_),
                      [self = shared_from_this(), reading](error_code ec, size_t) {
                        if (ec || reading) return self->Finish();
                        self->ShutdownDownstream();
                      });
  }

  void ShutdownDownstream() {
    down_.Shutdown([self = shared_from_this()] { self->Finish(); });
  }

  void Finish() {
    if (finished_) return;
    finished_ = true;
    ++route_gen_;
    CloseUpstream();
    down_.Close();
  }

  net::AnyStream down_;
  beast::flat_buffer down_buf_;
  std::string client_ip_;
  std::shared_ptr<const ProxyEnv> env_;
  net::AnyStream::executor_type ex_;
  asio::steady_timer timer_;  // the response deadline
  std::shared_ptr<Conn> up_;
  std::shared_ptr<net::AnyStream> tunnel_up_;  // the upstream once upgraded
  Upstream upstream_;
  uint16_t port_ = 0;
  uint64_t route_gen_ = 0;  // invalidates routing and connect results of an earlier attempt
  bool finished_ = false;
  bool refusing_ = false;
  bool interim_writing_ = false;  // a 1xx goes to the client
  int tunnel_open_ = 0;
  std::vector<char> req_body_;
  std::string req_out_, res_out_, err_out_;

  // The current exchange.
  std::optional<http::request_parser<http::buffer_body>> req_;
  HostRoute route_;
  std::string host_header_, target_, up_head_;
  Framing req_framing_ = Framing::kNone, res_framing_ = Framing::kNone;
  ReqBody req_state_ = ReqBody::kNone;
  bool client_http10_ = false, client_close_ = false, head_ = false, upgrade_ = false,
       had_length_ = false;
  bool res_started_ = false, res_done_ = false, close_after_ = false, up_keep_ = true,
       retried_ = false;
  unsigned status_ = 0;
};

}  // namespace

void UseSandboxDialers(ProxyEnv& env) {
  env.port_of = [](const Upstream& u) -> Result<uint16_t> {
    if (u.target.port != 0) return u.target.port;
    // (A guest's {pid} was resolved to a port by the router.)
    if (!u.handles || !u.handles->proc) return FailMsg("no process handles");
    return ListeningPort(u.handles->proc.get(), u.target.pid);
  };
  env.socket_for = [](const Upstream& u, int family) -> Result<UniqueFd> {
    if (!u.handles) return FailMsg("no network namespace");
    // A guest: from the daemon's namespace over the sandbox's link, with the
    // mark the firewall lets the guest answer (firewall.h).
    if (u.handles->guest_ip != 0) return net::GuestDialSocket(family, SOCK_STREAM);
    return net::SocketInNetns(u.handles->netns.get(), family, SOCK_STREAM);
  };
}

void ServeConnection(net::AnyStream down, beast::flat_buffer already, std::string client_ip,
                     std::shared_ptr<const ProxyEnv> env) {
  auto s = std::make_shared<Session>(std::move(down), std::move(already), std::move(client_ip),
                                     std::move(env));
  s->Start();
}

}  // namespace sandboxd::ingress

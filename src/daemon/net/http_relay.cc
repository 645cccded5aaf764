#include "daemon/net/http_relay.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <limits>
#include <span>

#include "common/base64.h"
#include "daemon/net/http_util.h"
#include "daemon/net/replacer.h"
#include "daemon/net/sandbox_ca.h"

namespace sandboxd::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using Pairs = std::vector<std::pair<std::string, std::string>>;

namespace {

constexpr auto kShutdownGrace = std::chrono::seconds(2);
// A TLS record carries at most 16 KiB; gathering more per write_some only
// gets copied again on the next call.
constexpr size_t kCoalesceLimit = 16 * 1024;

// ---------------------------------------------------------------------------
// AnyStream implementations. Each keeps itself alive (shared_from_this in
// every handler) so an AnyStream may be dropped with operations pending.

class TcpImpl final : public AnyStream::Impl, public std::enable_shared_from_this<TcpImpl> {
 public:
  explicit TcpImpl(beast::tcp_stream s) : s_(std::move(s)) {}

  AnyStream::executor_type executor() override { return s_.get_executor(); }
  void ReadSome(asio::mutable_buffer b, AnyStream::IoHandler h) override {
    s_.async_read_some(b, [self = shared_from_this(), h = std::move(h)](
                              error_code ec, size_t n) mutable { h(ec, n); });
  }
  void WriteSome(const asio::const_buffer* b, size_t n, AnyStream::IoHandler h) override {
    std::copy(b, b + n, wb_.begin());
    s_.async_write_some(std::span<const asio::const_buffer>(wb_.data(), n),
                        [self = shared_from_this(), h = std::move(h)](
                            error_code ec, size_t n) mutable { h(ec, n); });
  }
  void Expire(std::optional<std::chrono::steady_clock::duration> d) override {
    if (d) {
      s_.expires_after(*d);
    } else {
      s_.expires_never();
    }
  }
  void Close() override { s_.close(); }
  void Shutdown(std::move_only_function<void()> done) override {
    error_code ec;
    s_.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    s_.expires_after(kShutdownGrace);
    Drain(std::move(done));
  }
  bool tls() const override { return false; }

 private:
  // Reads and drops what the peer still sends until it closes (or the
  // grace period ends), so unread data does not turn our close into a reset
  // that could destroy the response in flight.
  void Drain(std::move_only_function<void()> done) {
    drain_.resize(4096);
    s_.async_read_some(asio::buffer(drain_), [self = shared_from_this(), done = std::move(done)](
                                                 error_code ec, size_t) mutable {
      if (!ec) return self->Drain(std::move(done));
      self->s_.close();
      done();
    });
  }

  beast::tcp_stream s_;
  std::array<asio::const_buffer, AnyStream::kMaxWriteBuffers> wb_;
  std::vector<char> drain_;
};

class TlsImpl final : public AnyStream::Impl, public std::enable_shared_from_this<TlsImpl> {
 public:
  explicit TlsImpl(asio::ssl::stream<beast::tcp_stream> s) : s_(std::move(s)) {}

  AnyStream::executor_type executor() override { return s_.get_executor(); }
  void ReadSome(asio::mutable_buffer b, AnyStream::IoHandler h) override {
    s_.async_read_some(b, [self = shared_from_this(), h = std::move(h)](
                              error_code ec, size_t n) mutable { h(ec, n); });
  }
  void WriteSome(const asio::const_buffer* b, size_t n, AnyStream::IoHandler h) override {
    // ssl::stream writes only the first buffer of a sequence: gather small
    // pieces (headers, chunk framing) into one record instead of several.
    asio::const_buffer out = n ? b[0] : asio::const_buffer();
    if (n > 1 && b[0].size() < kCoalesceLimit) {
      gather_.clear();
      for (size_t i = 0; i < n && gather_.size() < kCoalesceLimit; ++i) {
        size_t take = std::min(b[i].size(), kCoalesceLimit - gather_.size());
        gather_.append(static_cast<const char*>(b[i].data()), take);
      }
      out = asio::buffer(gather_);
    }
    s_.async_write_some(out, [self = shared_from_this(), h = std::move(h)](
                                 error_code ec, size_t n) mutable { h(ec, n); });
  }
  void Expire(std::optional<std::chrono::steady_clock::duration> d) override {
    if (d) {
      beast::get_lowest_layer(s_).expires_after(*d);
    } else {
      beast::get_lowest_layer(s_).expires_never();
    }
  }
  void Close() override { beast::get_lowest_layer(s_).close(); }
  void Shutdown(std::move_only_function<void()> done) override {
    beast::get_lowest_layer(s_).expires_after(kShutdownGrace);
    s_.async_shutdown([self = shared_from_this(), done = std::move(done)](error_code) mutable {
      beast::get_lowest_layer(self->s_).close();
      done();
    });
  }
  bool tls() const override { return true; }

 private:
  asio::ssl::stream<beast::tcp_stream> s_;
  std::string gather_;
};

// ---------------------------------------------------------------------------
// Small HTTP helpers.

using http_util::IsHopByHop;
using http_util::ReasonText;
using http_util::Trim;

bool IsIdentityEncoding(std::string_view v) {
  v = Trim(v);
  return v.empty() || beast::iequals(v, "identity");
}

// "host", "host:port", "[v6]", "[v6]:port" → normalised host and port.
std::optional<RelayHost> ParseAuthority(std::string_view a, uint16_t default_port) {
  a = Trim(a);
  std::string_view host, port;
  if (a.starts_with('[')) {
    size_t close = a.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = a.substr(0, close + 1);
    std::string_view rest = a.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = rest.substr(1);
    }
  } else {
    size_t colon = a.find(':');
    if (colon != std::string_view::npos) {
      if (a.find(':', colon + 1) != std::string_view::npos) return std::nullopt;  // bare IPv6
      host = a.substr(0, colon);
      port = a.substr(colon + 1);
    } else {
      host = a;
    }
  }
  RelayHost out;
  out.host = NormalizeHostName(host);
  if (out.host.empty() || out.host.find('*') != std::string::npos) return std::nullopt;
  if (port.empty()) {
    out.port = default_port;
  } else {
    if (port.size() > 5) return std::nullopt;
    unsigned v = 0;
    for (char c : port) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (v == 0 || v > 65535) return std::nullopt;
    out.port = static_cast<uint16_t>(v);
  }
  return out;
}

// A value that may stand in a request target as it is.
bool TargetSafe(std::string_view v) {
  return std::all_of(v.begin(), v.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}
// A value that may stand in a header field value.
bool HeaderSafe(std::string_view v) {
  return v.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// Names listed in Connection (they are hop-by-hop too), lower case.
std::vector<std::string> ConnectionTokens(std::string_view v) {
  std::vector<std::string> out;
  for (auto const& t : http::token_list(v)) {
    std::string s(t);
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.push_back(std::move(s));
  }
  return out;
}

bool Listed(const std::vector<std::string>& tokens, std::string_view name) {
  return std::any_of(tokens.begin(), tokens.end(),
                     [&](const std::string& t) { return beast::iequals(t, name); });
}

// ---------------------------------------------------------------------------

// How a message body leaves the relay.
enum class Framing {
  kNone,      // no body
  kBuffered,  // read whole, substituted, sent with a new Content-Length (requests)
  kLength,    // same length as received (identity transform), streamed
  kChunked,   // re-chunked, streamed
  kEof,       // close-delimited (responses)
};

constexpr size_t kBodyChunk = 64 * 1024;
constexpr uint32_t kHeaderLimit = 64 * 1024;
// Boost 1.74's parser compares Content-Length with an empty optional limit
// as "over the limit"; the largest value means the same as none.
constexpr uint64_t kNoBodyLimit = std::numeric_limits<uint64_t>::max();

// Moves one message body from a parser to a stream, transformed (Replacer)
// and framed (as it came, or chunked), reading ahead while the previous
// batch is being written so both sides stay busy. Calls `done` once, when
// no operation of its own is pending any more.
enum class PumpEnd { kDone, kReadFailed, kWriteFailed, kRefused };

template <bool isRequest>
class BodyPump : public std::enable_shared_from_this<BodyPump<isRequest>> {
 public:
  using Parser = http::parser<isRequest, http::buffer_body>;
  struct Params {
    AnyStream* from = nullptr;
    beast::flat_buffer* from_buf = nullptr;
    Parser* parser = nullptr;
    AnyStream* to = nullptr;
    Replacer* rep = nullptr;    // null: bytes as they are
    bool chunked = false;       // else raw (Content-Length or close-delimited)
    size_t refuse_needles = 0;  // the rep's first pairs that must not be sent
    std::chrono::steady_clock::duration read_timeout{}, write_timeout{};
  };
  using Done = std::move_only_function<void(PumpEnd, error_code)>;

  BodyPump(Params p, std::vector<char>& buf, Done done)
      : p_(p), buf_(buf), done_(std::move(done)) {}
  void Start() { Step(); }

 private:
  // Reading stops while this much output waits for the writer.
  static constexpr size_t kMaxPending = 256 * 1024;

  void Step() {
    if (!ended_) {
      if (!writing_ && !next_.empty()) StartWrite();
      if (!reading_ && !read_all_ && next_.size() < kMaxPending) StartRead();
      if (read_all_ && !writing_ && next_.empty()) ended_ = true;
    }
    if (ended_ && !reading_ && !writing_ && done_) {
      auto d = std::move(done_);
      d(end_, ec_);
    }
  }

  void Fail(PumpEnd e, error_code ec) {
    if (!ended_) {
      ended_ = true;
      end_ = e;
      ec_ = ec;
    }
    // Do not wait for the other side (it may idle for a minute): the
    // relay ends or refuses the exchange now.
    if (reading_) p_.from->Close();
    if (writing_) p_.to->Close();
  }

  void StartRead() {
    reading_ = true;
    auto& body = p_.parser->get().body();
    body.data = buf_.data();
    body.size = buf_.size();
    p_.from->ExpiresAfter(p_.read_timeout);
    http::async_read_some(
        *p_.from, *p_.from_buf, *p_.parser,
        [self = this->shared_from_this()](error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(error_code ec) {
    reading_ = false;
    if (ended_) return Step();
    if (ec == http::error::need_buffer) ec = {};
    if (ec == asio::ssl::error::stream_truncated && p_.parser->need_eof()) {
      // A close-delimited body ended without close_notify: common, and
      // the only end such a body has.
      ec = {};
      p_.parser->put_eof(ec);
    }
    if (ec) {
      Fail(PumpEnd::kReadFailed, ec);
      return Step();
    }
    size_t n = buf_.size() - p_.parser->get().body().size;
    bool done = p_.parser->is_done();
    std::string_view data(buf_.data(), n);
    std::string& sink = p_.chunked ? scratch_ : next_;
    if (p_.chunked) scratch_.clear();
    size_t mark = next_.size();
    if (p_.rep) {
      p_.rep->Feed(data, sink);
      if (done) p_.rep->Finish(sink);
      size_t bad = 0;
      for (size_t i = 0; i < p_.refuse_needles; ++i) bad += p_.rep->replacements(i);
      if (bad > 0) {
        next_.resize(mark);
        Fail(PumpEnd::kRefused, {});
        return Step();
      }
    } else {
      sink.append(data);
    }
    if (p_.chunked) {
      if (!scratch_.empty()) {
        char hex[20];
        int k = std::snprintf(hex, sizeof hex, "%zx\r\n", scratch_.size());
        next_.append(hex, static_cast<size_t>(k)).append(scratch_).append("\r\n");
      }
      if (done) next_.append("0\r\n\r\n");
    }
    read_all_ = done;
    Step();
  }

  void StartWrite() {
    writing_ = true;
    cur_.swap(next_);
    next_.clear();
    p_.to->ExpiresAfter(p_.write_timeout);
    asio::async_write(*p_.to, asio::buffer(cur_),
                      [self = this->shared_from_this()](error_code ec, size_t) {
                        self->writing_ = false;
                        if (ec && !self->ended_) self->Fail(PumpEnd::kWriteFailed, ec);
                        self->Step();
                      });
  }

  Params p_;
  std::vector<char>& buf_;  // the parser's body buffer (the relay's)
  Done done_;
  std::string cur_, next_, scratch_;
  bool reading_ = false, writing_ = false, read_all_ = false, ended_ = false;
  PumpEnd end_ = PumpEnd::kDone;
  error_code ec_;
};

class Relay : public std::enable_shared_from_this<Relay> {
 public:
  Relay(AnyStream down, beast::flat_buffer buf, RelayOptions o, std::function<void()> done)
      : down_(std::move(down)),
        down_buf_(std::move(buf)),
        opts_(std::move(o)),
        done_(std::move(done)),
        timer_(down_.get_executor()),
        sni_(NormalizeHostName(opts_.sni)) {
    body_buf_.resize(kBodyChunk);
    // Beast sizes each read by the buffer's spare capacity (at least 512
    // bytes): without room, a body would move 512 bytes per read and write.
    down_buf_.reserve(kBodyChunk);
    up_buf_.reserve(kBodyChunk);
  }

  void Start() { ReadRequest(true); }

 private:
  // ---- request ------------------------------------------------------------

  void ReadRequest(bool first) {
    req_.reset();
    res_.reset();
    if (down_buf_.size() != 0) return ReadRequestHeader();
    // Wait for the next request's first bytes under the idle timeout, then
    // give the header its own (shorter) deadline.
    down_.ExpiresAfter(first ? opts_.header_timeout : opts_.idle_timeout);
    down_.async_read_some(down_buf_.prepare(4096),
                          [self = shared_from_this()](error_code ec, size_t n) {
                            if (ec)
                              return self->Finish();  // closed or idle: no request, nothing to say
                            self->down_buf_.commit(n);
                            self->ReadRequestHeader();
                          });
  }

  void ReadRequestHeader() {
    req_.emplace();
    req_->header_limit(kHeaderLimit);
    // No limit on streamed bodies; what is buffered is bounded by
    // max_buffered_body (the mode is chosen from Content-Length).
    req_->body_limit(kNoBodyLimit);
    ev_ = RelayEvent{};
    ev_sent_ = false;
    in_request_ = false;
    down_.ExpiresAfter(opts_.header_timeout);
    http::async_read_header(
        down_, down_buf_, *req_,
        [self = shared_from_this()](error_code ec, size_t) { self->OnRequestHeader(ec); });
  }

  void OnRequestHeader(error_code ec) {
    if (ec) {
      in_request_ = true;  // answered (and reported) as a request, if at all
      if (ec == http::error::header_limit)
        return Refuse(431, "request header too large", "request header too large");
      if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
          ec != http::error::end_of_stream && ec != http::error::partial_message) {
        return Refuse(400, "malformed request", "malformed request");
      }
      in_request_ = false;
      return Finish();  // closed, reset or timed out: nobody to answer
    }
    in_request_ = true;
    auto& req = req_->get();
    req_->eager(true);
    ev_.method = std::string(req.method_string());
    if (req.version() != 10 && req.version() != 11) {
      return Refuse(505, "HTTP version not supported", "only HTTP/1.0 and HTTP/1.1 are relayed");
    }
    client_http10_ = req.version() == 10;
    client_close_ = client_http10_ || !req_->keep_alive();
    head_ = req.method() == http::verb::head;
    if (req.method() == http::verb::connect) {
      return Refuse(405, "CONNECT is not supported", "CONNECT is not supported");
    }

    // Host: required, one, well-formed; for TLS, the name the handshake
    // was for.
    size_t hosts = req.count(http::field::host);
    std::optional<RelayHost> host;
    if (hosts > 1) return Refuse(400, "several Host headers", "several Host headers");
    if (hosts == 1) {
      host = ParseAuthority(req[http::field::host], opts_.port);
      if (!host) return Refuse(400, "bad Host header", "bad Host header");
    } else if (client_http10_ && opts_.downstream_tls && !sni_.empty()) {
      host = RelayHost{sni_, opts_.port};
    } else {
      return Refuse(400, "no Host header", "Host header required");
    }
    host_ = *host;
    ev_.host = host_.host;
    ev_.port = host_.port;

    std::string_view target = req.target();
    if (auto s = CheckTarget(target, req.method()); !s.empty()) return Refuse(400, s, s);

    if (opts_.downstream_tls && (host_.host != sni_ || host_.port != opts_.port)) {
      return Refuse(
          421, "Host does not match the TLS server name",
          "host " + host_.host + " does not match the TLS server name of this connection");
    }

    decision_ = opts_.decide ? opts_.decide(host_) : RequestDecision{};
    ev_.allowed = decision_.allowed;
    if (!decision_.allowed) {
      std::string why = decision_.deny_reason.empty() ? "not allowed" : decision_.deny_reason;
      return Refuse(
          403, "denied: " + why,
          "request to " + host_.host + ":" + std::to_string(host_.port) + " refused: " + why);
    }

    // Framing we can forward unambiguously.
    bool has_te = req.count(http::field::transfer_encoding) > 0;
    if (has_te && req.count(http::field::content_length) > 0) {
      return Refuse(400, "both Content-Length and Transfer-Encoding",
                    "both Content-Length and Transfer-Encoding");
    }
    if (has_te && (!req_->chunked() ||
                   !beast::iequals(Trim(req[http::field::transfer_encoding]), "chunked"))) {
      return Refuse(501, "unsupported transfer-coding", "unsupported transfer-coding");
    }

    const bool has_subs = !decision_.subs.empty();
    upgrade_ = req_->upgrade();
    if (upgrade_ && has_subs) {
      return Refuse(403, "upgrade to a host with secrets",
                    "protocol upgrade (WebSocket) to a host with secrets is not supported");
    }
    substitute_ = has_subs && opts_.downstream_tls;
    guard_plain_ = has_subs && !opts_.downstream_tls;
    redact_ = has_subs;

    // Needles: this host's placeholders first (to values when substituting,
    // else to themselves, to notice them), then every other placeholder of
    // the sandbox (to themselves: counted, sent on as they are).
    n_subs_ = decision_.subs.size();
    Pairs pairs, ident;
    for (const auto& s : decision_.subs) {
      pairs.emplace_back(s.placeholder, substitute_ ? s.value : s.placeholder);
      ident.emplace_back(s.placeholder, s.placeholder);
    }
    for (const auto& p : opts_.all_placeholders) {
      bool mine =
          std::any_of(decision_.subs.begin(), decision_.subs.end(),
                      [&](const Substitution& s) { return s.placeholder == p.placeholder; });
      if (mine) continue;
      pairs.emplace_back(p.placeholder, p.placeholder);
      ident.emplace_back(p.placeholder, p.placeholder);
    }

    if (auto refused = BuildUpstreamHead(pairs); refused) return;

    // Body.
    auto cl = req_->content_length();
    bool has_body = req_->chunked() || (cl && *cl > 0);
    had_length_ = cl.has_value();
    if (has_body && (substitute_ || guard_plain_) &&
        !IsIdentityEncoding(req[http::field::content_encoding])) {
      return Refuse(403, "compressed request body",
                    "compressed request body: cannot substitute secrets in it");
    }
    req_rep_.reset();
    abort_status_ = 0;
    if (!has_body) {
      req_framing_ = Framing::kNone;
    } else if (substitute_ && cl && *cl <= opts_.max_buffered_body) {
      req_framing_ = Framing::kBuffered;
      req_rep_.emplace(pairs);
    } else if (substitute_ && !cl) {
      req_framing_ = Framing::kChunked;
      req_rep_.emplace(pairs);
    } else if (substitute_) {
      // Too large to buffer, and the length would change: stream it as it
      // is, and fail closed if one of this host's placeholders shows up.
      req_framing_ = Framing::kLength;
      req_rep_.emplace(ident);
      abort_status_ = 502;
      abort_reason_ = "placeholder in a request body too large to substitute (over " +
                      std::to_string(opts_.max_buffered_body) + " bytes)";
    } else {
      req_framing_ = cl ? Framing::kLength : Framing::kChunked;
      if (!pairs.empty()) req_rep_.emplace(pairs);
      if (guard_plain_) {
        abort_status_ = 403;
        abort_reason_ = "secrets are only substituted over TLS";
      }
    }

    retried_ = false;
    bool expect = beast::iequals(Trim(req[http::field::expect]), "100-continue");
    if (has_body && expect && !client_http10_) {
      // We stripped Expect upstream; let the client send its body now.
      out_ = "HTTP/1.1 100 Continue\r\n\r\n";
      down_.ExpiresAfter(opts_.idle_timeout);
      asio::async_write(down_, asio::buffer(out_),
                        [self = shared_from_this()](error_code ec, size_t) {
                          if (ec) return self->Finish();
                          self->AfterRequestHeader();
                        });
      return;
    }
    AfterRequestHeader();
  }

  // "" when the request target is acceptable, else why not.
  std::string CheckTarget(std::string_view target, http::verb method) {
    if (target.starts_with('/')) return {};
    if (target == "*" && method == http::verb::options) return {};
    std::string_view rest;
    if (target.size() > 7 && beast::iequals(target.substr(0, 7), "http://")) {
      rest = target.substr(7);
    } else if (target.size() > 8 && beast::iequals(target.substr(0, 8), "https://")) {
      rest = target.substr(8);
    } else {
      return "bad request target";
    }
    // Absolute form: a server prefers its authority to Host, so the two
    // must name the same host (and port, when the target names one).
    std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
    if (authority.find('@') != std::string_view::npos) return "userinfo in request target";
    auto a = ParseAuthority(authority, 0);
    if (!a || a->host != host_.host || (a->port != 0 && a->port != host_.port)) {
      return "request target does not match Host";
    }
    return {};
  }

  // Builds the request line and headers for upstream (without framing
  // headers) into up_head_, substituting or checking placeholders. Returns
  // true when it refused the request instead.
  bool BuildUpstreamHead(const Pairs& pairs) {
    auto& req = req_->get();
    Replacer rep(pairs);
    auto apply = [&](std::string_view in) {
      std::string o;
      rep.Feed(in, o);
      rep.Finish(o);
      return o;
    };
    auto subs_since = [&](const std::vector<size_t>& before, auto unsafe) {
      for (size_t i = 0; i < n_subs_; ++i) {
        if (rep.replacements(i) > before[i] && unsafe(decision_.subs[i].value)) return true;
      }
      return false;
    };
    auto snapshot = [&] {
      std::vector<size_t> v(n_subs_);
      for (size_t i = 0; i < n_subs_; ++i) v[i] = rep.replacements(i);
      return v;
    };

    std::vector<size_t> start = snapshot();
    std::string target = apply(req.target());
    if (substitute_ && subs_since(start, [](std::string_view v) { return !TargetSafe(v); })) {
      Refuse(403, "secret value not allowed in the request target",
             "this secret's value cannot be put in a request target");
      return true;
    }
    std::vector<size_t> after_target = snapshot();

    std::vector<std::string> tokens = ConnectionTokens(req[http::field::connection]);
    std::string& h = up_head_;
    h.clear();
    h.append(req.method_string()).append(" ").append(target).append(" HTTP/1.1\r\n");
    for (auto const& f : req) {
      http::field name = f.name();
      if (name == http::field::upgrade && upgrade_) {
        // kept: the upgrade is relayed
      } else if (name == http::field::host) {
        // kept whatever Connection lists: it is what was decided on
      } else if (IsHopByHop(name) || name == http::field::content_length ||
                 name == http::field::expect || (redact_ && name == http::field::accept_encoding) ||
                 Listed(tokens, f.name_string())) {
        continue;
      }
      std::string value;
      if (name == http::field::host) {
        value = std::string(f.value());  // decided on as it is
      } else if ((name == http::field::authorization || name == http::field::proxy_authorization) &&
                 f.value().size() > 6 && beast::iequals(f.value().substr(0, 6), "basic ")) {
        value = BasicAuth(f.value(), apply);
      } else {
        value = apply(f.value());
      }
      h.append(f.name_string()).append(": ").append(value).append("\r\n");
    }
    if (req.count(http::field::host) == 0)
      h.append("Host: ").append(host_.host).append("\r\n");  // HTTP/1.0
    if (redact_) h.append("Accept-Encoding: identity\r\n");
    if (upgrade_) h.append("Connection: Upgrade\r\n");

    if (substitute_ &&
        subs_since(after_target, [](std::string_view v) { return !HeaderSafe(v); })) {
      Refuse(403, "secret value not allowed in a header",
             "this secret's value cannot be put in a header");
      return true;
    }
    size_t mine = 0;
    for (size_t i = 0; i < n_subs_; ++i) mine += rep.replacements(i);
    if (guard_plain_ && mine > 0) {
      Refuse(403, "secrets are only substituted over TLS",
             "secrets are only substituted over TLS (use https)");
      return true;
    }
    if (substitute_) ev_.substituted += mine;
    ev_.foreign_placeholders += rep.replacements() - mine;
    return false;
  }

  // "Basic <base64(user:pass)>": placeholders inside the credentials are
  // replaced too (git and many API clients send tokens this way).
  template <typename Apply>
  static std::string BasicAuth(std::string_view value, Apply& apply) {
    std::string_view b64 = Trim(value.substr(6));
    auto decoded = Base64Decode(b64);
    if (!decoded) return apply(value);
    std::string replaced = apply(*decoded);
    if (replaced == *decoded) return std::string(value);
    return std::string(value.substr(0, 6)) + Base64Encode(replaced);
  }

  void AfterRequestHeader() {
    if (req_framing_ == Framing::kBuffered) {
      buffered_.clear();
      return ReadBufferedBody();
    }
    EnsureUpstream([self = shared_from_this()] { self->SendRequestHead(); });
  }

  void ReadBufferedBody() {
    auto& body = req_->get().body();
    body.data = body_buf_.data();
    body.size = body_buf_.size();
    down_.ExpiresAfter(opts_.idle_timeout);
    http::async_read_some(
        down_, down_buf_, *req_, [self = shared_from_this()](error_code ec, size_t) {
          if (ec == http::error::need_buffer) ec = {};
          if (ec) return self->RequestBodyFailed(ec);
          auto& body = self->req_->get().body();
          size_t n = self->body_buf_.size() - body.size;
          self->req_rep_->Feed(std::string_view(self->body_buf_.data(), n), self->buffered_);
          if (!self->req_->is_done()) return self->ReadBufferedBody();
          self->req_rep_->Finish(self->buffered_);
          self->CountRequestBody();
          self->EnsureUpstream([self] { self->SendRequestHead(); });
        });
  }

  void RequestBodyFailed(error_code ec) {
    CloseUpstream();
    if (ec.category() == http::make_error_code(http::error::bad_chunk).category() &&
        ec != http::error::partial_message && ec != http::error::end_of_stream) {
      return Refuse(400, "malformed request body", "malformed request body");
    }
    ev_.reason = "request body: " + ec.message();
    Abort();
  }

  void CountRequestBody() {
    if (!req_rep_) return;
    size_t mine = 0;
    for (size_t i = 0; i < n_subs_; ++i) mine += req_rep_->replacements(i);
    if (substitute_ && abort_status_ == 0) ev_.substituted += mine;
    ev_.foreign_placeholders += req_rep_->replacements() - mine;
  }

  // ---- upstream connection -------------------------------------------------

  void EnsureUpstream(std::function<void()> next) {
    if (up_ && up_host_ == host_) {
      reused_ = true;
      return next();
    }
    CloseUpstream();
    reused_ = false;
    after_connect_ = std::move(next);
    uint64_t gen = ++connect_gen_;
    timer_.expires_after(opts_.upstream_timeout);
    timer_.async_wait([self = shared_from_this(), gen](error_code ec) {
      if (ec || gen != self->connect_gen_ || self->finished_) return;
      ++self->connect_gen_;
      self->Refuse(504, "upstream connect timed out",
                   "connecting to " + self->host_.host + ":" + std::to_string(self->host_.port) +
                       " timed out");
    });
    if (!opts_.connect) return OnConnected(gen, FailMsg("no connector"));
    auto ex = down_.get_executor();
    opts_.connect(host_, opts_.downstream_tls,
                  [self = shared_from_this(), gen, ex](Result<AnyStream> r) {
                    asio::post(ex, [self, gen, r = std::move(r)]() mutable {
                      self->OnConnected(gen, std::move(r));
                    });
                  });
  }

  void OnConnected(uint64_t gen, Result<AnyStream> r) {
    if (gen != connect_gen_ || finished_) {
      if (r) r->Close();
      return;
    }
    ++connect_gen_;
    timer_.cancel();
    // Moved out first: it holds a reference to this relay.
    auto next = std::move(after_connect_);
    after_connect_ = nullptr;
    if (!r) {
      spdlog::debug("http relay: connect {}:{}: {}", host_.host, host_.port, r.error().message);
      return Refuse(502, "upstream connect failed: " + r.error().message,
                    "could not connect to " + host_.host + ":" + std::to_string(host_.port));
    }
    up_ = std::move(*r);
    up_host_ = host_;
    up_buf_.clear();
    next();
  }

  void CloseUpstream() {
    up_.Close();
    up_ = AnyStream();
    up_buf_.clear();
  }

  // A reused keep-alive connection the server had already closed: send the
  // request again on a new one, when it can be sent again.
  bool Retryable(error_code ec) const {
    if (!reused_ || retried_ || up_buf_.size() != 0) return false;
    if (req_framing_ != Framing::kNone && req_framing_ != Framing::kBuffered) return false;
    return ec == http::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::ssl::error::stream_truncated;
  }

  void Retry() {
    retried_ = true;
    CloseUpstream();
    EnsureUpstream([self = shared_from_this()] { self->SendRequestHead(); });
  }

  void SendRequestHead() {
    out_ = up_head_;
    switch (req_framing_) {
      case Framing::kNone:
        if (had_length_) out_.append("Content-Length: 0\r\n");
        break;
      case Framing::kBuffered:
        out_.append("Content-Length: ").append(std::to_string(buffered_.size())).append("\r\n");
        break;
      case Framing::kLength:
        out_.append("Content-Length: ")
            .append(std::to_string(*req_->content_length()))
            .append("\r\n");
        break;
      case Framing::kChunked:
        out_.append("Transfer-Encoding: chunked\r\n");
        break;
      case Framing::kEof:
        break;
    }
    out_.append("\r\n");
    std::array<asio::const_buffer, 2> bufs{asio::buffer(out_), asio::buffer(buffered_)};
    if (req_framing_ != Framing::kBuffered) bufs[1] = asio::const_buffer();
    up_.ExpiresAfter(opts_.upstream_timeout);
    asio::async_write(up_, bufs, [self = shared_from_this()](error_code ec, size_t) {
      if (ec) return self->UpstreamWriteFailed(ec);
      if (self->req_framing_ == Framing::kLength || self->req_framing_ == Framing::kChunked) {
        return self->PumpRequestBody();
      }
      self->ReadResponseHeader();
    });
  }

  void UpstreamWriteFailed(error_code ec) {
    if (Retryable(ec)) return Retry();
    CloseUpstream();
    if (ec == beast::error::timeout) {
      return Refuse(504, "upstream timed out", "upstream " + host_.host + " timed out");
    }
    Refuse(502, "upstream write failed: " + ec.message(),
           "connection to " + host_.host + " failed");
  }

  void PumpRequestBody() {
    BodyPump<true>::Params p;
    p.from = &down_;
    p.from_buf = &down_buf_;
    p.parser = &*req_;
    p.to = &up_;
    p.rep = req_rep_ ? &*req_rep_ : nullptr;
    p.chunked = req_framing_ == Framing::kChunked;
    p.refuse_needles = abort_status_ != 0 ? n_subs_ : 0;
    p.read_timeout = opts_.idle_timeout;
    p.write_timeout = opts_.idle_timeout;
    std::make_shared<BodyPump<true>>(
        p, body_buf_,
        [self = shared_from_this()](PumpEnd end, error_code ec) {
          switch (end) {
            case PumpEnd::kDone:
              self->CountRequestBody();
              return self->ReadResponseHeader();
            case PumpEnd::kRefused:
              // Fail closed: the bytes holding the placeholder were not
              // written; the upstream sees a truncated request and a close.
              self->CloseUpstream();
              return self->Refuse(self->abort_status_, self->abort_reason_, self->abort_reason_);
            case PumpEnd::kReadFailed:
              return self->RequestBodyFailed(ec);
            case PumpEnd::kWriteFailed:
              return self->UpstreamWriteFailed(ec);
          }
        })
        ->Start();
  }

  // ---- response -------------------------------------------------------------

  void ReadResponseHeader() {
    res_.emplace();
    res_->header_limit(kHeaderLimit);
    res_->body_limit(kNoBodyLimit);
    if (head_) res_->skip(true);
    up_.ExpiresAfter(opts_.upstream_timeout);
    http::async_read_header(
        up_, up_buf_, *res_,
        [self = shared_from_this()](error_code ec, size_t) { self->OnResponseHeader(ec); });
  }

  void OnResponseHeader(error_code ec) {
    if (ec) {
      if (Retryable(ec)) return Retry();
      CloseUpstream();
      if (ec == beast::error::timeout) {
        return Refuse(504, "upstream timed out",
                      "upstream " + host_.host + " did not answer in time");
      }
      return Refuse(502, "upstream response: " + ec.message(),
                    "bad or no response from " + host_.host);
    }
    auto& res = res_->get();
    unsigned status = res.result_int();
    if (status == 101) {
      if (upgrade_) return StartSplice();
      CloseUpstream();
      return Refuse(502, "unexpected 101 from upstream",
                    "unexpected protocol switch from " + host_.host);
    }
    if (status / 100 == 1) return ReadResponseHeader();  // interim (100, 103): dropped
    res_->eager(true);

    bool no_body = head_ || status == 204 || status == 304 || res_->is_done();
    bool chunked_in = res_->chunked();
    auto cl = res_->content_length();
    bool eof_in = !no_body && !chunked_in && !cl;
    if (res.count(http::field::transfer_encoding) > 0 &&
        (!chunked_in || !beast::iequals(Trim(res[http::field::transfer_encoding]), "chunked"))) {
      CloseUpstream();
      return Refuse(502, "unsupported transfer-coding from upstream",
                    "unsupported transfer-coding from " + host_.host);
    }
    if (redact_ && !no_body && !IsIdentityEncoding(res[http::field::content_encoding])) {
      CloseUpstream();
      return Refuse(502, "compressed response (cannot redact)",
                    "compressed response from " + host_.host + ": cannot redact secrets in it");
    }

    if (no_body) {
      res_framing_ = Framing::kNone;
    } else if (redact_) {
      res_framing_ = client_http10_ ? Framing::kEof : Framing::kChunked;
    } else if (cl) {
      res_framing_ = Framing::kLength;
    } else if (chunked_in && !client_http10_) {
      res_framing_ = Framing::kChunked;
    } else {
      res_framing_ = Framing::kEof;
    }
    close_after_ = client_close_ || res_framing_ == Framing::kEof;
    up_keep_ = res_->keep_alive() && !eof_in;

    // Values back to placeholders: in headers and in the body.
    Pairs back;
    for (const auto& s : decision_.subs) back.emplace_back(s.value, s.placeholder);
    res_rep_.reset();
    if (redact_) res_rep_.emplace(back);
    Replacer hdr(back);
    auto redact = [&](std::string_view in) {
      std::string o;
      hdr.Feed(in, o);
      hdr.Finish(o);
      return o;
    };

    std::vector<std::string> tokens = ConnectionTokens(res[http::field::connection]);
    std::string& h = out_;
    h.clear();
    std::string reason = redact(res.reason());
    h.append("HTTP/1.1 ").append(std::to_string(status)).append(" ");
    h.append(reason.empty() ? ReasonText(status) : reason).append("\r\n");
    for (auto const& f : res) {
      http::field name = f.name();
      if (name == http::field::content_length) {
        // Kept when the body goes as it came, or for HEAD/304 (informative).
        if (res_framing_ != Framing::kLength && res_framing_ != Framing::kNone) continue;
      } else if (name == http::field::transfer_encoding) {
        // Kept only as information on a bodiless answer to an HTTP/1.1 client.
        if (res_framing_ != Framing::kNone || client_http10_) continue;
      } else if (IsHopByHop(name) || Listed(tokens, f.name_string())) {
        continue;
      }
      h.append(f.name_string()).append(": ").append(redact(f.value())).append("\r\n");
    }
    if (res_framing_ == Framing::kChunked) h.append("Transfer-Encoding: chunked\r\n");
    if (close_after_) h.append("Connection: close\r\n");
    h.append("\r\n");
    ev_.redacted += hdr.replacements();
    ev_.status = status;

    down_.ExpiresAfter(opts_.idle_timeout);
    asio::async_write(down_, asio::buffer(out_),
                      [self = shared_from_this()](error_code ec, size_t) {
                        if (ec) {
                          self->ev_.reason = "downstream write: " + ec.message();
                          return self->Abort();
                        }
                        if (self->res_framing_ == Framing::kNone) return self->FinishResponse();
                        self->PumpResponseBody();
                      });
  }

  void PumpResponseBody() {
    BodyPump<false>::Params p;
    p.from = &up_;
    p.from_buf = &up_buf_;
    p.parser = &*res_;
    p.to = &down_;
    p.rep = res_rep_ ? &*res_rep_ : nullptr;
    p.chunked = res_framing_ == Framing::kChunked;
    p.read_timeout = opts_.idle_timeout;
    p.write_timeout = opts_.idle_timeout;
    std::make_shared<BodyPump<false>>(
        p, body_buf_,
        [self = shared_from_this()](PumpEnd end, error_code ec) {
          if (end == PumpEnd::kDone) return self->FinishResponse();
          self->ev_.reason =
              (end == PumpEnd::kReadFailed ? "upstream body: " : "downstream write: ") +
              ec.message();
          self->CloseUpstream();
          self->Abort();  // the status line is out: truncation is all we can signal
        })
        ->Start();
  }

  void FinishResponse() {
    if (res_rep_) ev_.redacted += res_rep_->replacements();
    Emit();
    if (!up_keep_) CloseUpstream();
    if (close_after_) return ShutdownDownstream();
    ReadRequest(false);
  }

  // ---- upgrade: splice both ways after 101 ----------------------------------

  void StartSplice() {
    auto& res = res_->get();
    out_ = "HTTP/1.1 101 ";
    out_.append(res.reason().empty() ? "Switching Protocols" : std::string(res.reason()))
        .append("\r\n");
    for (auto const& f : res)
      out_.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
    out_.append("\r\n");
    ev_.status = 101;
    Emit();
    down_.ExpiresNever();
    up_.ExpiresNever();
    // What the parsers read past the headers belongs to the new protocol.
    std::string to_down = out_ + beast::buffers_to_string(up_buf_.data());
    std::string to_up = beast::buffers_to_string(down_buf_.data());
    up_buf_.clear();
    down_buf_.clear();
    splice_open_ = 2;
    Splice(std::make_shared<SpliceDir>(SpliceDir{&up_, &down_, std::move(to_down)}));
    Splice(std::make_shared<SpliceDir>(SpliceDir{&down_, &up_, std::move(to_up)}));
  }

  struct SpliceDir {
    AnyStream* from;
    AnyStream* to;
    std::string pending;  // to write before reading again
    std::vector<char> buf = std::vector<char>(kBodyChunk);
  };

  void Splice(std::shared_ptr<SpliceDir> d) {
    if (!d->pending.empty()) {
      asio::async_write(*d->to, asio::buffer(d->pending),
                        [self = shared_from_this(), d](error_code ec, size_t) {
                          if (ec) return self->SpliceEnded();
                          d->pending.clear();
                          self->Splice(d);
                        });
      return;
    }
    d->from->async_read_some(asio::buffer(d->buf), [self = shared_from_this(), d](error_code ec,
                                                                                  size_t n) {
      if (ec) return self->SpliceEnded();
      asio::async_write(*d->to, asio::buffer(d->buf.data(), n), [self, d](error_code ec, size_t) {
        if (ec) return self->SpliceEnded();
        self->Splice(d);
      });
    });
  }

  void SpliceEnded() {
    // The first direction to end closes both (the protocols on top have
    // their own close handshakes); the last one finishes.
    down_.Close();
    up_.Close();
    if (--splice_open_ == 0) Finish();
  }

  // ---- endings ----------------------------------------------------------------

  // Answers the request with an error and closes the connection.
  void Refuse(unsigned status, std::string reason, std::string text) {
    spdlog::debug("http relay: {} {}:{} → {} ({})", ev_.method, host_.host, host_.port, status,
                  reason);
    ev_.status = status;
    ev_.reason = std::move(reason);
    Emit();
    CloseUpstream();
    std::string body = "sandboxd: " + text + "\n";
    out_ = "HTTP/1.1 " + std::to_string(status) + " " + ReasonText(status) +
           "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    down_.ExpiresAfter(opts_.idle_timeout);
    asio::async_write(down_, asio::buffer(out_),
                      [self = shared_from_this()](error_code ec, size_t) {
                        if (ec) return self->Finish();
                        self->ShutdownDownstream();
                      });
  }

  void Emit() {
    if (ev_sent_ || !in_request_) return;
    ev_sent_ = true;
    if (opts_.on_event) opts_.on_event(ev_);
  }

  void ShutdownDownstream() {
    down_.Shutdown([self = shared_from_this()] { self->Finish(); });
  }

  void Abort() {
    Emit();
    Finish();
  }

  void Finish() {
    if (finished_) return;
    finished_ = true;
    ++connect_gen_;
    timer_.cancel();
    after_connect_ = nullptr;  // breaks the cycle it may hold
    CloseUpstream();
    down_.Close();
    if (done_) {
      auto d = std::move(done_);
      d();
    }
  }

  AnyStream down_;
  beast::flat_buffer down_buf_;
  AnyStream up_;
  beast::flat_buffer up_buf_;
  RelayHost up_host_;
  RelayOptions opts_;
  std::function<void()> done_;
  asio::steady_timer timer_;  // connect deadline
  uint64_t connect_gen_ = 0;  // invalidates stale connect results and timers
  std::function<void()> after_connect_;
  std::string sni_;
  bool finished_ = false;
  std::vector<char> body_buf_;
  std::string out_;  // bytes being written (one write at a time per direction)
  int splice_open_ = 0;

  // The current request.
  std::optional<http::request_parser<http::buffer_body>> req_;
  std::optional<http::response_parser<http::buffer_body>> res_;
  RelayEvent ev_;
  bool ev_sent_ = false;
  bool in_request_ = false;  // a request (even a malformed one) is being answered
  RelayHost host_;
  RequestDecision decision_;
  size_t n_subs_ = 0;
  bool substitute_ = false, guard_plain_ = false, redact_ = false;
  bool client_http10_ = false, client_close_ = false, head_ = false, upgrade_ = false;
  bool had_length_ = false, reused_ = false, retried_ = false;
  bool close_after_ = false, up_keep_ = false;
  Framing req_framing_ = Framing::kNone, res_framing_ = Framing::kNone;
  std::optional<Replacer> req_rep_, res_rep_;
  unsigned abort_status_ = 0;
  std::string abort_reason_;
  std::string up_head_;   // request line and headers for upstream, kept for a retry
  std::string buffered_;  // a buffered, substituted request body
};

}  // namespace

AnyStream::AnyStream(beast::tcp_stream s) : impl_(std::make_shared<TcpImpl>(std::move(s))) {}
AnyStream::AnyStream(asio::ssl::stream<beast::tcp_stream> s)
    : impl_(std::make_shared<TlsImpl>(std::move(s))) {}

void RunHttpRelay(AnyStream downstream, beast::flat_buffer already_read, RelayOptions options,
                  std::function<void()> done) {
  auto ex = downstream.get_executor();
  auto relay = std::make_shared<Relay>(std::move(downstream), std::move(already_read),
                                       std::move(options), std::move(done));
  asio::dispatch(ex, [relay] { relay->Start(); });
}

}  // namespace sandboxd::net

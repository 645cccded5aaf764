#include "daemon/ingress/server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <cstring>

#include "daemon/net/sniff.h"

namespace sandboxd::ingress {

namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr unsigned char kTlsHandshakeRecord = 0x16;

// Reads the first bytes of a connection: a TLS ClientHello (whole, for its
// SNI) or anything else (HTTP, parsed by the proxy).
class Opening : public std::enable_shared_from_this<Opening> {
 public:
  Opening(tcp::socket s, const ServerOptions& opts, std::shared_ptr<const ProxyEnv> env)
      : stream_(std::move(s)), opts_(opts), env_(std::move(env)) {
    error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) {
      auto a = ep.address();
      client_ip_ = a.is_v6() && a.to_v6().is_v4_mapped()
                       ? asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string()
                       : a.to_string();
    }
  }

  void Start() {
    stream_.expires_after(opts_.handshake_timeout);
    Read();
  }

 private:
  void Read() {
    stream_.async_read_some(buf_.prepare(4096),
                            [self = shared_from_this()](error_code ec, size_t n) {
                              if (ec) return;  // closed, reset or silent: nothing to answer
                              self->buf_.commit(n);
                              self->OnBytes();
                            });
  }

  void OnBytes() {
    auto data = buf_.data();
    std::string_view bytes(static_cast<const char*>(data.data()), data.size());
    if (static_cast<unsigned char>(bytes[0]) != kTlsHandshakeRecord) {
      stream_.expires_never();
      return ServeConnection(net::AnyStream(std::move(stream_)), std::move(buf_), client_ip_, env_);
    }
    if (!opts_.tls)
      return Close();  // TLS is off: a plain-HTTP error would only confuse a TLS client
    auto sniffed = net::Sniff(bytes);
    if (sniffed.kind == net::Sniffed::kNeedMore) return Read();
    if (sniffed.kind != net::Sniffed::kTls) return Close();
    auto ctx = opts_.tls->ContextFor(sniffed.host);
    if (!ctx) {
      spdlog::warn("ingress: no TLS context for '{}': {}", sniffed.host, ctx.error().message);
      return Close();
    }
    ctx_ = *ctx;
    tls_ = std::make_shared<asio::ssl::stream<beast::tcp_stream>>(std::move(stream_), *ctx_);
    hello_ = beast::buffers_to_string(buf_.data());
    buf_.clear();
    // The ClientHello was read already: the handshake starts from it.
    tls_->async_handshake(
        asio::ssl::stream_base::server, asio::buffer(hello_),
        [self = shared_from_this()](error_code ec, size_t used) { self->OnHandshake(ec, used); });
  }

  void OnHandshake(error_code ec, size_t used) {
    if (ec) {
      spdlog::debug("ingress: TLS handshake with {} failed: {}", client_ip_, ec.message());
      error_code ignored;
      beast::get_lowest_layer(*tls_).socket().close(ignored);
      return;
    }
    beast::get_lowest_layer(*tls_).expires_never();
    beast::flat_buffer rest;
    if (used < hello_.size()) {  // bytes past the hello (none in practice)
      size_t n = hello_.size() - used;
      std::memcpy(rest.prepare(n).data(), hello_.data() + used, n);
      rest.commit(n);
    }
    ServeConnection(net::AnyStream(std::move(*tls_)), std::move(rest), client_ip_, env_);
  }

  void Close() {
    error_code ignored;
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  const ServerOptions& opts_;
  std::shared_ptr<const ProxyEnv> env_;
  std::string client_ip_ = "unknown";
  beast::flat_buffer buf_;
  std::shared_ptr<asio::ssl::context> ctx_;
  std::shared_ptr<asio::ssl::stream<beast::tcp_stream>> tls_;
  std::string hello_;
};

}  // namespace

IngressServer::IngressServer(ServerOptions opts, std::shared_ptr<const ProxyEnv> env)
    : opts_(std::move(opts)),
      env_(std::move(env)),
      io_(opts_.threads),
      acceptor_(asio::make_strand(io_)) {}

Result<std::unique_ptr<IngressServer>> IngressServer::Start(ServerOptions opts,
                                                            std::shared_ptr<const ProxyEnv> env) {
  if (opts.threads < 1) opts.threads = 1;
  std::unique_ptr<IngressServer> s(new IngressServer(std::move(opts), std::move(env)));
  error_code ec;
  auto addr = asio::ip::make_address(s->opts_.host, ec);
  if (ec) return FailMsg("invalid ingress listen address '" + s->opts_.host + "'");
  tcp::endpoint ep(addr, s->opts_.port);
  s->acceptor_.open(ep.protocol(), ec);
  if (!ec) s->acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) s->acceptor_.bind(ep, ec);
  if (!ec) s->acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return FailMsg("ingress: listening on " + s->opts_.host + ":" + std::to_string(s->opts_.port) +
                   ": " + ec.message());
  s->endpoint_ = s->acceptor_.local_endpoint(ec);
  s->AcceptNext();  // runs on the threads started below
  for (int i = 0; i < s->opts_.threads; ++i) {
    s->threads_.emplace_back([p = s.get()] { p->io_.run(); });
  }
  return s;
}

IngressServer::~IngressServer() { Stop(); }

void IngressServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  asio::post(acceptor_.get_executor(), [this] {
    error_code ec;
    acceptor_.close(ec);
  });
  io_.stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  error_code ec;
  acceptor_.close(ec);
}

void IngressServer::AcceptNext() {
  // With several threads each connection gets its own strand, so its
  // handlers never run at once; with one, the io_context is enough (a
  // strand costs a little on every operation).
  auto ex = opts_.threads > 1 ? asio::any_io_executor(asio::make_strand(io_))
                              : asio::any_io_executor(io_.get_executor());
  acceptor_.async_accept(ex, [this](error_code ec, tcp::socket s) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);
      std::make_shared<Opening>(std::move(s), opts_, env_)->Start();
    } else {
      spdlog::warn("ingress: accept: {}", ec.message());
      if (ec == asio::error::no_descriptors) {
        // Out of fds: do not spin; try again shortly.
        auto t = std::make_shared<asio::steady_timer>(acceptor_.get_executor(),
                                                      std::chrono::milliseconds(100));
        t->async_wait([this, t](error_code) { AcceptNext(); });
        return;
      }
    }
    AcceptNext();
  });
}

}  // namespace sandboxd::ingress

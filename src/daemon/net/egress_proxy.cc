#include "daemon/net/egress_proxy.h"

#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include "daemon/net/addr_class.h"
#include "daemon/net/allowlist.h"
#include "daemon/net/egress_internal.h"
#include "daemon/net/name_resolver.h"
#include "daemon/net/sniff.h"
#include "daemon/net/splice.h"

namespace sandboxd::net {

namespace asio = boost::asio;
using asio::ip::tcp;

EgressProxy::Impl::Impl(asio::io_context& i, NameResolver& r, EgressLookup l, EgressProxyOptions o)
    : io(i), resolver(r), lookup(std::move(l)), opts(std::move(o)), acceptor(i) {}

void EgressProxy::Impl::Report(const EgressEvent& ev, EgressStats* stats) {
  if (stats) (ev.allowed ? stats->connections_allowed : stats->connections_denied)++;
  if (ev.allowed) {
    spdlog::info("egress sandbox={} host={} port={} allowed mode={} substituted={}", ev.sandbox_id, ev.host,
                 ev.port, ev.mode, ev.substituted);
  } else {
    spdlog::info("egress sandbox={} host={} port={} denied reason=\"{}\"", ev.sandbox_id, ev.host, ev.port,
                 ev.reason);
  }
  if (observer) observer(ev);
}

void ResetSocket(tcp::socket& s) {
  boost::system::error_code ec;
  s.set_option(asio::socket_base::linger(true, 0), ec);
  s.close(ec);
}

namespace {

// The address the sandbox dialled, before the firewall redirected it here.
std::optional<tcp::endpoint> OriginalDst(tcp::socket& s) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (::getsockopt(s.native_handle(), SOL_IP, SO_ORIGINAL_DST, &sa, &len) != 0) return std::nullopt;
  return tcp::endpoint(asio::ip::address_v4(ntohl(sa.sin_addr.s_addr)), ntohs(sa.sin_port));
}


// Connects to an upstream: resolve (pinned cache), filter addresses, try each
// in turn within one deadline.
class Connector : public std::enable_shared_from_this<Connector> {
 public:
  Connector(std::shared_ptr<EgressProxy::Impl> proxy, SandboxEgress sb, std::string host, uint16_t port,
            EgressProxy::Impl::ConnectFn done)
      : proxy_(std::move(proxy)), sb_(std::move(sb)), host_(std::move(host)), port_(port),
        done_(std::move(done)), sock_(proxy_->io), timer_(proxy_->io) {}

  void Start() {
    timer_.expires_after(proxy_->opts.connect_timeout);
    timer_.async_wait([self = shared_from_this()](auto ec) {
      if (ec) return;
      self->timed_out_ = true;
      boost::system::error_code ignored;
      self->sock_.close(ignored);  // fails a pending connect
    });
    boost::system::error_code ec;
    auto literal = asio::ip::make_address(host_, ec);
    if (!ec) return OnResolved(std::vector<asio::ip::address>{literal});
    auto self = shared_from_this();
    proxy_->resolver.Resolve(host_, [self](Result<std::vector<asio::ip::address>> r) {
      asio::post(self->proxy_->io, [self, r = std::move(r)]() mutable { self->OnResolved(std::move(r)); });
    });
  }

 private:
  void OnResolved(Result<std::vector<asio::ip::address>> r) {
    if (timed_out_) return Finish(FailMsg("name resolution timed out"));
    if (!r) return Finish(FailMsg("cannot resolve " + host_ + ": " + r.error().message));
    bool refused_internal = false;
    for (const auto& a : *r) {
      if (IsForbiddenByDefault(a) && !sb_.policy->reachable().NamesAddress(a)) {
        refused_internal = true;
        continue;
      }
      eps_.emplace_back(a, port_);
    }
    if (eps_.empty()) {
      return Finish(FailMsg(refused_internal ? "resolves only to internal addresses nobody allowed"
                                             : "resolves to no address"));
    }
    Next();
  }

  void Next() {
    if (timed_out_) return Finish(FailMsg("upstream connect timed out"));
    if (next_ >= eps_.size()) return Finish(FailMsg("upstream unreachable: " + last_error_));
    boost::system::error_code ec;
    if (sock_.is_open()) sock_.close(ec);
    sock_.async_connect(eps_[next_++], [self = shared_from_this()](auto cec) {
      if (!cec && !self->timed_out_) return self->Finish(std::move(self->sock_));
      self->last_error_ = cec.message();
      self->Next();
    });
  }

  void Finish(Result<tcp::socket> r) {
    timer_.cancel();
    if (r) {
      boost::system::error_code ignored;
      r->set_option(tcp::no_delay(true), ignored);
    }
    auto done = std::move(done_);
    done(std::move(r));
  }

  std::shared_ptr<EgressProxy::Impl> proxy_;
  SandboxEgress sb_;
  std::string host_;
  uint16_t port_;
  EgressProxy::Impl::ConnectFn done_;
  tcp::socket sock_;
  asio::steady_timer timer_;
  std::vector<tcp::endpoint> eps_;
  size_t next_ = 0;
  bool timed_out_ = false;
  std::string last_error_ = "no address";
};

// One accepted connection up to the point where it is spliced or handed to
// the HTTP relay.
// Who an adopted connection is from, and where it was going (EgressProxy::Adopt).
struct Adopted {
  asio::ip::address sandbox_addr;
  tcp::endpoint original_dst;
  std::string sandbox_id;
};

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(std::shared_ptr<EgressProxy::Impl> proxy, tcp::socket s, std::optional<Adopted> adopted = {})
      : proxy_(std::move(proxy)),
        down_(std::move(s)),
        timer_(proxy_->io),
        adopted_(std::move(adopted)) {}

  void Start() {
    boost::system::error_code ec;
    asio::ip::address peer;
    if (adopted_) {
      peer = adopted_->sandbox_addr;
    } else {
      auto ep = down_.remote_endpoint(ec);
      if (ec) return ResetSocket(down_);
      peer = ep.address();
    }
    auto found = proxy_->lookup(peer);
    if (!found) {
      spdlog::warn("egress: connection from {} which is no sandbox; closed", peer.to_string());
      return ResetSocket(down_);
    }
    if (adopted_) {
      // Another sandbox may have this address by now (a fetch's later
      // redirect hop), and a sandbox without outbound access is refused by
      // the firewall before it reaches the proxy: the same here.
      if (found->policy->sandbox_id() != adopted_->sandbox_id || !found->policy->AnyOutbound()) {
        return ResetSocket(down_);
      }
    }
    sb_ = std::move(*found);
    if (sb_.stats->open_connections.fetch_add(1) >= proxy_->opts.max_connections_per_sandbox) {
      sb_.stats->open_connections--;
      return Deny("", 0, "too many open connections (" + std::to_string(proxy_->opts.max_connections_per_sandbox) + ")");
    }
    sb_.slot = std::shared_ptr<void>(nullptr, [stats = sb_.stats](void*) { stats->open_connections--; });
    auto dst = adopted_                    ? std::optional<tcp::endpoint>(adopted_->original_dst)
               : proxy_->opts.original_dst ? proxy_->opts.original_dst(down_)
                                           : OriginalDst(down_);
    if (!dst) return Deny("", 0, "no original destination");
    dst_ = *dst;
    // IP-literal entries decide by the dialled address alone: connect there
    // as it is (naming the address is what makes an internal one allowed).
    if (sb_.policy->reachable().AllowsAddress(dst_.address(), dst_.port())) {
      host_ = dst_.address().to_string();
      return Connect();
    }
    buf_.reserve(4096);
    timer_.expires_after(proxy_->opts.sniff_timeout);
    timer_.async_wait([self = shared_from_this()](auto ec) {
      if (ec) return;
      self->timed_out_ = true;
      boost::system::error_code ignored;
      self->down_.cancel(ignored);
    });
    ReadMore();
  }

 private:
  void ReadMore() {
    size_t old = buf_.size();
    buf_.resize(old + 4096);
    down_.async_read_some(asio::buffer(buf_.data() + old, 4096), [self = shared_from_this(), old](auto ec, size_t n) {
      self->buf_.resize(old + n);
      if (self->timed_out_) {
        return self->Deny(self->dst_.address().to_string(), self->dst_.port(),
                          "sent nothing recognisable in time");
      }
      if (ec) {
        self->timer_.cancel();
        return ResetSocket(self->down_);  // the sandbox gave up; nothing to decide
      }
      self->OnBytes();
    });
  }

  void OnBytes() {
    Sniffed s = Sniff(buf_);
    if (s.kind == Sniffed::kNeedMore) return ReadMore();
    timer_.cancel();
    uint16_t port = dst_.port();
    if (s.kind == Sniffed::kUnknown) {
      return Deny(dst_.address().to_string(), port, "neither TLS nor HTTP, and the address is not allowed");
    }
    if (s.kind == Sniffed::kHttp) return StartHttpRelay(proxy_, sb_, std::move(down_), std::move(buf_), port);
    auto host = NormalizeHost(s.host);
    if (!host) {
      return Deny(s.host.empty() ? dst_.address().to_string() : s.host, port, "TLS without a valid server name");
    }
    host_ = *host;
    if (!sb_.policy->reachable().AllowsName(host_, port)) return Deny(host_, port, "not in allowNet");
    if (!sb_.policy->SubstitutionsFor(host_, port).empty()) {
      return StartTlsIntercept(proxy_, sb_, std::move(down_), std::move(buf_), host_, port);
    }
    Connect();
  }

  void Connect() {
    auto self = shared_from_this();
    std::make_shared<Connector>(proxy_, sb_, host_, dst_.port(), [self](Result<tcp::socket> r) {
      if (!r) return self->Deny(self->host_, self->dst_.port(), r.error().message);
      self->proxy_->Report({self->sb_.policy->sandbox_id(), self->host_, self->dst_.port(), true, "splice", "", 0},
                           self->sb_.stats.get());
      Splice(std::move(self->down_), std::move(*r), std::move(self->buf_),
             [slot = self->sb_.slot](const SpliceStats&) {});
    })->Start();
  }

  void Deny(const std::string& host, uint16_t port, const std::string& reason) {
    proxy_->Report({sb_.policy ? sb_.policy->sandbox_id() : "", host, port, false, "deny", reason, 0},
                   sb_.stats.get());
    ResetSocket(down_);
  }

  std::shared_ptr<EgressProxy::Impl> proxy_;
  tcp::socket down_;
  asio::steady_timer timer_;
  SandboxEgress sb_;
  tcp::endpoint dst_;
  std::string host_;
  std::string buf_;
  bool timed_out_ = false;
  std::optional<Adopted> adopted_;
};

}  // namespace

void EgressProxy::Impl::ConnectUpstream(const SandboxEgress& sb, const std::string& host, uint16_t port,
                                        ConnectFn done) {
  std::make_shared<Connector>(shared_from_this(), sb, host, port, std::move(done))->Start();
}

void EgressProxy::Impl::Accept() {
  acceptor.async_accept([self = shared_from_this()](boost::system::error_code ec, tcp::socket s) {
    if (self->stopped) return;
    if (!ec) {
      boost::system::error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);
      std::make_shared<Conn>(self, std::move(s))->Start();
    } else if (ec == asio::error::operation_aborted) {
      return;
    } else {
      // EMFILE and friends: keep serving, but do not spin on a full fd table.
      spdlog::warn("egress: accept: {}", ec.message());
      auto t = std::make_shared<asio::steady_timer>(self->io, std::chrono::milliseconds(50));
      t->async_wait([self, t](auto) { self->Accept(); });
      return;
    }
    self->Accept();
  });
}

EgressProxy::EgressProxy(asio::io_context& io, NameResolver& resolver, EgressLookup lookup,
                         EgressProxyOptions opts)
    : impl_(std::make_shared<Impl>(io, resolver, std::move(lookup), std::move(opts))) {}

EgressProxy::~EgressProxy() { Stop(); }

Status EgressProxy::Listen(const tcp::endpoint& ep) {
  boost::system::error_code ec;
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return std::unexpected(Error{ec.value(), "egress proxy listen: " + ec.message()});
  impl_->Accept();
  return {};
}

uint16_t EgressProxy::port() const {
  boost::system::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

void EgressProxy::Stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  asio::post(impl_->io, [impl = impl_] {
    boost::system::error_code ec;
    impl->acceptor.close(ec);
  });
}

void EgressProxy::Adopt(UniqueFd down, const asio::ip::address& sandbox_addr,
                        tcp::endpoint original_dst, std::string sandbox_id) {
  asio::post(impl_->io, [impl = impl_, fd = std::make_shared<UniqueFd>(std::move(down)),
                         sandbox_addr, original_dst, id = std::move(sandbox_id)]() mutable {
    if (impl->stopped) return;
    tcp::socket s(impl->io);
    boost::system::error_code ec;
    // Any connected stream socket will do: the connection's own addresses
    // are never looked at (the Adopted record stands for them).
    const int raw = fd->Release();
    s.assign(original_dst.protocol(), raw, ec);
    if (ec) {
      ::close(raw);
      return;
    }
    std::make_shared<Conn>(impl, std::move(s), Adopted{sandbox_addr, original_dst, std::move(id)})
        ->Start();
  });
}

void EgressProxy::SetObserver(std::function<void(const EgressEvent&)> fn) { impl_->observer = std::move(fn); }

}  // namespace sandboxd::net

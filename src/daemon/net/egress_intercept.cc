// The egress proxy's HTTP paths: plain HTTP and intercepted TLS, both handed
// to the HTTP relay (http_relay.h) with this sandbox's policy.
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <spdlog/spdlog.h>

#include "daemon/net/allowlist.h"
#include "daemon/net/egress_internal.h"
#include "daemon/net/http_relay.h"
#include "daemon/net/sandbox_ca.h"
#include "daemon/net/tls_contexts.h"

namespace sandboxd::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
using asio::ip::tcp;

namespace {

std::vector<Substitution> ToSubs(std::vector<SubstitutionPair> pairs) {
  std::vector<Substitution> out;
  out.reserve(pairs.size());
  for (auto& p : pairs) out.push_back({std::move(p.placeholder), std::move(p.value)});
  return out;
}

RelayOptions MakeRelayOptions(const std::shared_ptr<EgressProxy::Impl>& proxy, const SandboxEgress& sb, bool tls,
                              std::string sni, uint16_t port) {
  RelayOptions o;
  o.downstream_tls = tls;
  o.sni = std::move(sni);
  o.port = port;
  auto policy = sb.policy;
  o.decide = [policy](const RelayHost& h) {
    RequestDecision d;
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(h.host, ec);
    d.allowed = ec ? policy->reachable().AllowsName(h.host, h.port) : policy->reachable().AllowsAddress(addr, h.port);
    if (!d.allowed) {
      d.deny_reason = "not in allowNet";
      return d;
    }
    d.subs = ToSubs(policy->SubstitutionsFor(h.host, h.port));
    return d;
  };
  o.all_placeholders = ToSubs(policy->AllPlaceholders());
  std::weak_ptr<EgressProxy::Impl> weak = proxy;
  o.connect = [weak, sb](const RelayHost& h, bool upstream_tls, std::function<void(Result<AnyStream>)> done) {
    auto p = weak.lock();
    if (!p) return done(FailMsg("proxy stopped"));
    p->ConnectUpstream(sb, h.host, h.port, [p, host = h.host, upstream_tls, done](Result<tcp::socket> s) {
      if (!s) return done(std::unexpected(s.error()));
      if (!upstream_tls) return done(AnyStream(beast::tcp_stream(std::move(*s))));
      if (!p->opts.upstream_tls) return done(FailMsg("no upstream TLS context"));
      auto stream = std::make_shared<asio::ssl::stream<beast::tcp_stream>>(beast::tcp_stream(std::move(*s)),
                                                                          *p->opts.upstream_tls);
      if (auto st = PrepareUpstreamTls(*stream, host); !st) return done(std::unexpected(st.error()));
      beast::get_lowest_layer(*stream).expires_after(p->opts.connect_timeout);
      stream->async_handshake(asio::ssl::stream_base::client, [stream, host, done](boost::system::error_code ec) {
        if (ec) return done(FailMsg("TLS to " + host + ": " + ec.message()));
        beast::get_lowest_layer(*stream).expires_never();
        done(AnyStream(std::move(*stream)));
      });
    });
  };
  std::string id = policy->sandbox_id();
  auto stats = sb.stats;
  o.on_event = [weak, id, stats, tls](const RelayEvent& ev) {
    if (ev.substituted > 0) stats->requests_substituted++;
    bool refused = !ev.reason.empty();
    if (refused) stats->requests_refused++;
    if (!ev.allowed) stats->connections_denied++;
    if (refused || !ev.allowed) {
      spdlog::info("egress sandbox={} host={} port={} {} {} refused status={} reason=\"{}\"", id, ev.host, ev.port,
                   tls ? "https" : "http", ev.method, ev.status, ev.reason);
    } else {
      spdlog::info("egress sandbox={} host={} port={} {} {} allowed status={} substituted={} redacted={}{}", id,
                   ev.host, ev.port, tls ? "https" : "http", ev.method, ev.status, ev.substituted, ev.redacted,
                   ev.foreign_placeholders ? " placeholder-not-for-this-host" : "");
    }
    if (auto p = weak.lock(); p && p->observer) {
      p->observer(EgressEvent{id, ev.host, ev.port, ev.allowed && !refused, tls ? "intercept" : "http", ev.reason,
                              ev.substituted});
    }
  };
  return o;
}

}  // namespace

void StartHttpRelay(std::shared_ptr<EgressProxy::Impl> proxy, SandboxEgress sb, tcp::socket down, std::string head,
                    uint16_t port) {
  sb.stats->connections_allowed++;  // judged per request from here on
  beast::flat_buffer already;
  auto b = already.prepare(head.size());
  std::memcpy(b.data(), head.data(), head.size());
  already.commit(head.size());
  auto opts = MakeRelayOptions(proxy, sb, false, "", port);
  RunHttpRelay(AnyStream(beast::tcp_stream(std::move(down))), std::move(already), std::move(opts),
               [slot = sb.slot] {});
}

void StartTlsIntercept(std::shared_ptr<EgressProxy::Impl> proxy, SandboxEgress sb, tcp::socket down,
                       std::string hello, std::string host, uint16_t port) {
  auto ca = sb.policy->ca();
  auto ctx = ca ? ca->ServerContextFor(host) : Result<std::shared_ptr<asio::ssl::context>>(FailMsg("no CA"));
  if (!ctx) {
    proxy->Report({sb.policy->sandbox_id(), host, port, false, "deny", "cannot mint a certificate: " + ctx.error().message, 0},
                  sb.stats.get());
    return ResetSocket(down);
  }
  proxy->Report({sb.policy->sandbox_id(), host, port, true, "intercept", "", 0}, sb.stats.get());
  auto stream = std::make_shared<asio::ssl::stream<beast::tcp_stream>>(beast::tcp_stream(std::move(down)), **ctx);
  beast::get_lowest_layer(*stream).expires_after(proxy->opts.sniff_timeout);
  auto bytes = std::make_shared<std::string>(std::move(hello));
  // The ClientHello was read while sniffing; the handshake takes it as
  // already-received data.
  stream->async_handshake(
      asio::ssl::stream_base::server, asio::buffer(*bytes),
      [proxy, sb, stream, bytes, host, port](boost::system::error_code ec, size_t used) {
        if (ec) {
          spdlog::info("egress sandbox={} host={} port={} TLS handshake with the sandbox failed: {}",
                       sb.policy->sandbox_id(), host, port, ec.message());
          boost::system::error_code ignored;
          beast::get_lowest_layer(*stream).socket().close(ignored);
          return;
        }
        beast::get_lowest_layer(*stream).expires_never();
        beast::flat_buffer already;
        if (used < bytes->size()) {  // bytes past the hello (none in practice)
          size_t rest = bytes->size() - used;
          auto b = already.prepare(rest);
          std::memcpy(b.data(), bytes->data() + used, rest);
          already.commit(rest);
        }
        auto opts = MakeRelayOptions(proxy, sb, true, host, port);
        RunHttpRelay(AnyStream(std::move(*stream)), std::move(already), std::move(opts), [slot = sb.slot] {});
      });
}

}  // namespace sandboxd::net

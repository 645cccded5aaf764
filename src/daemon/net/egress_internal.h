// Internals shared by the egress proxy's connection paths (egress_proxy.cc:
// accept, sniff, splice; egress_intercept.cc: HTTP relay and TLS
// interception). Not for use outside src/daemon/net.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <memory>
#include <string>

#include "daemon/net/egress_proxy.h"

namespace sandboxd::net {

struct EgressProxy::Impl : std::enable_shared_from_this<EgressProxy::Impl> {
  boost::asio::io_context& io;
  NameResolver& resolver;
  EgressLookup lookup;
  EgressProxyOptions opts;
  boost::asio::ip::tcp::acceptor acceptor;
  std::function<void(const EgressEvent&)> observer;
  bool stopped = false;

  Impl(boost::asio::io_context& i, NameResolver& r, EgressLookup l, EgressProxyOptions o);

  void Accept();
  // Logs, counts and reports one decision.
  void Report(const EgressEvent& ev, EgressStats* stats);

  // Resolves `host` (through the pinned cache), drops internal addresses the
  // policy does not name, and connects to the first that answers, within the
  // connect timeout. An IP literal host is used as is (same address rules).
  // `done` runs on the io thread; the error message is the deny reason.
  using ConnectFn = std::function<void(Result<boost::asio::ip::tcp::socket>)>;
  void ConnectUpstream(const SandboxEgress& sb, const std::string& host, uint16_t port, ConnectFn done);
};

// Ends a connection with a TCP reset, so the sandbox fails at once instead of
// waiting for an answer that never comes.
void ResetSocket(boost::asio::ip::tcp::socket& s);

// HTTP/1.1 in clear: every request's Host is checked; secrets are never
// substituted over plain HTTP. `head` holds the bytes read while sniffing.
void StartHttpRelay(std::shared_ptr<EgressProxy::Impl> proxy, SandboxEgress sb,
                    boost::asio::ip::tcp::socket down, std::string head, uint16_t port);

// TLS to a host with secrets: terminate with the sandbox CA's leaf for
// `host`, then relay HTTP/1.1 with substitution. `hello` holds the bytes read
// while sniffing (the ClientHello), replayed into the handshake.
void StartTlsIntercept(std::shared_ptr<EgressProxy::Impl> proxy, SandboxEgress sb,
                       boost::asio::ip::tcp::socket down, std::string hello, std::string host, uint16_t port);

}  // namespace sandboxd::net

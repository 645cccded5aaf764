// The ingress listener: accepts client connections on its own threads,
// tells TLS from plain HTTP by the first bytes (both are served on the one
// port; the SDK's URLs say https, curl users may say http), terminates TLS
// with the TlsProvider's context for the SNI name, and hands each connection
// to the proxy (proxy.h).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "daemon/ingress/proxy.h"
#include "daemon/ingress/tls.h"

namespace sandboxd::ingress {

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port
  int threads = 1;
  std::shared_ptr<TlsProvider> tls;  // null: plain HTTP only (TLS clients are disconnected)
  std::chrono::milliseconds handshake_timeout{10000};  // first bytes and the TLS handshake
};

class IngressServer {
 public:
  // Binds and starts serving. `env` is shared by every connection.
  static Result<std::unique_ptr<IngressServer>> Start(ServerOptions opts,
                                                      std::shared_ptr<const ProxyEnv> env);
  ~IngressServer();  // Stop()
  IngressServer(const IngressServer&) = delete;
  IngressServer& operator=(const IngressServer&) = delete;

  boost::asio::ip::tcp::endpoint endpoint() const { return endpoint_; }
  bool tls() const { return opts_.tls != nullptr; }

  // Stops accepting, stops the threads and drops every connection.
  // Idempotent; not from an ingress thread. Handlers that other threads
  // post to this server's executors afterwards are never run (they are
  // destroyed with the server).
  void Stop();

 private:
  IngressServer(ServerOptions opts, std::shared_ptr<const ProxyEnv> env);
  void AcceptNext();

  ServerOptions opts_;
  std::shared_ptr<const ProxyEnv> env_;
  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ip::tcp::endpoint endpoint_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;
};

}  // namespace sandboxd::ingress

// The ingress as the daemon runs it: settings from `sandboxd serve` flags,
// TLS (files or the local CA in the data dir), the listener, and routing
// into core::Manager's sandboxes (looked up on the daemon's event loop).
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>

#include "common/error.h"
#include "daemon/core/manager.h"
#include "daemon/ingress/exposure.h"
#include "daemon/ingress/proxy.h"
#include "daemon/ingress/server.h"

namespace sandboxd::ingress {

struct IngressFlags {
  std::string listen;                // HOST:PORT; empty: no ingress
  std::string domain = "localhost";  // names are <sandbox>-<port>.<domain>
  std::string tls = "local-ca";      // local-ca | off (a configured certificate wins)
  std::string tls_cert, tls_key;     // PEM chain and key
  int public_port = 0;               // port in handed-out names (0: the bound one)
  std::string connect_timeout = "5s";
  std::string response_timeout = "60s";
};

struct DaemonIngress {
  std::unique_ptr<IngressServer> server;
  Naming naming;
  std::string url;      // "https://127.0.0.1:8443" (what the listener serves)
  std::string ca_path;  // the local CA's certificate, "" otherwise
};

// Routes to running sandboxes of `mgr`: the lookup is posted to `loop` (the
// daemon's event loop, where Sandbox state lives). A microVM guest's {pid}
// target is resolved to a port by its agent (`listeningPort`) right here. Both must outlive the
// ingress server's threads; a lookup still queued on `loop` when the server
// is destroyed holds its executor, so destroy `loop` (or let it drop its
// handlers) before the server.
RouteFn ManagerRouter(boost::asio::io_context& loop, core::Manager& mgr);

// Validates `flags` (errors say which flag), prepares TLS (creating the
// local CA in `data_dir` on first use) and starts the listener. Not for an
// empty `flags.listen`. The ingress dials into a namespace sandbox's network
// namespace, and a microVM guest at its address (SandboxHandles).
Result<DaemonIngress> StartDaemonIngress(const IngressFlags& flags, const std::string& data_dir,
                                         boost::asio::io_context& loop, core::Manager& mgr);

}  // namespace sandboxd::ingress

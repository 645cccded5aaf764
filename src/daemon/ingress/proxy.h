// The ingress reverse proxy for one client connection: HTTP/1.1 request by
// request, routed by Host to a port inside a sandbox.
//
// For each request: parse the head (Beast), route its Host (the daemon's
// event loop answers: which sandbox, which exposed target), connect from
// inside the sandbox's network namespace to 127.0.0.1 (then [::1]) at the
// target port (a microVM guest: at its address, then through its agent's
// loopback relay), send the head with X-Forwarded-For/-Proto/-Host, and relay
// the request body (to the sandbox) and the response (back) at the same
// time, streaming both: nothing is buffered whole, so Server-Sent Events
// and long uploads flow as they are produced. Upstream connections are kept
// for the next request of the same client connection when both sides allow.
// `Upgrade` (WebSocket) requests are relayed byte for byte after a 101.
//
// Errors are answered, never left hanging: bad request 400, unknown name or
// sandbox, or a port that is not exposed 404, nothing listening / refused /
// connect timeout / the service closing without an answer 502, no response
// head within the response timeout 504 — as text/plain with an
// X-Sandboxd-Error code, and the connection closes afterwards.
//
// Threading: a session runs on its client stream's executor, which must not
// run handlers concurrently (a strand, or a one-thread io_context). The
// ProxyEnv functions are called there, except `route`'s `done`, which may
// be called from any thread.
#pragma once

#include <boost/beast/core/flat_buffer.hpp>
#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <string>

#include "common/error.h"
#include "common/loopback_relay.h"
#include "common/fd.h"
#include "daemon/ingress/exposure.h"
#include "daemon/net/http_relay.h"  // net::AnyStream

namespace sandboxd::ingress {

// Where a route leads.
struct Upstream {
  std::string sandbox_id;
  std::shared_ptr<const SandboxHandles> handles;  // null only in tests
  ExposeTarget target;
};

struct RouteError {
  unsigned status = 404;
  std::string code;  // sent as X-Sandboxd-Error
  std::string message;
};
using RouteResult = std::expected<Upstream, RouteError>;
using RouteFn = std::function<void(const HostRoute&, std::function<void(RouteResult)> done)>;

// What the proxy needs from the daemon, and its settings. Immutable once
// handed to ServeConnection; shared by every session.
struct ProxyEnv {
  std::string domain = "localhost";  // normalised
  // Looks `route` up; calls `done` exactly once, from any thread.
  RouteFn route;
  // The port to dial: the target's port, or the one its process listens on
  // (ESRCH: no such process; ENOENT: it listens on nothing). Blocking, short.
  std::function<Result<uint16_t>(const Upstream&)> port_of;
  // An unconnected TCP socket of `family` (AF_INET, AF_INET6) whose
  // loopback is the sandbox's. Blocking, short.
  std::function<Result<UniqueFd>(const Upstream&, int family)> socket_for;
  // A guest's loopback relay (common/loopback_relay.h), tried at the guest's
  // address when the port itself is refused there.
  uint16_t guest_relay_port = kLoopbackRelayPort;

  std::chrono::milliseconds connect_timeout{5000};    // → 502
  std::chrono::milliseconds response_timeout{60000};  // request sent, no response head yet → 504
  std::chrono::milliseconds header_timeout{30000};    // the client sending a request head
  std::chrono::milliseconds idle_timeout{60000};  // keep-alive wait; a stalled client read or write
};

// port_of and socket_for for real sandboxes: procfs (pid_port.h) and
// net::SocketInNetns on the SandboxHandles.
void UseSandboxDialers(ProxyEnv& env);

// Serves `down` (plain, or TLS past its handshake) until it closes.
// `already`: bytes read from it before (sniffing). `client_ip`: the peer's
// address, for X-Forwarded-For.
void ServeConnection(net::AnyStream down, boost::beast::flat_buffer already, std::string client_ip,
                     std::shared_ptr<const ProxyEnv> env);

}  // namespace sandboxd::ingress

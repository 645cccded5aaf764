// TLS client side of interception: the context the egress proxy uses to
// reach real hosts, and the per-connection setup that makes verification
// check the right name. Full verification, always: the proxy re-encrypts
// secrets, so it must be at least as strict as the sandbox's own client.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace sandboxd::net {

// A TLS 1.2+ client context: the system's default roots plus `extra_ca_files`
// (PEM; a test-only daemon setting, for upstreams with private CAs),
// verify_peer, ALPN "http/1.1" only. Immutable once made; share it between
// connections and threads.
Result<std::shared_ptr<boost::asio::ssl::context>> MakeUpstreamClientContext(
    const std::vector<std::string>& extra_ca_files);

// Prepares a fresh stream (before the handshake) to talk to `host`: SNI
// when `host` is a name (never for IP literals, RFC 6066), and peer
// verification against `host` — DNS name (no partial wildcards) or IP
// address. `host` is a normalised name or literal (no brackets, no port).
Status PrepareUpstreamTls(boost::asio::ssl::stream<boost::beast::tcp_stream>& stream,
                          std::string_view host);

}  // namespace sandboxd::net

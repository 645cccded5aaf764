// Ending the daemon's TCP connections with a sandbox when it goes away.
//
// When a namespace sandbox ends, its processes' sockets close and the peers
// (the egress proxy's accepted connections, nothing else on the host side)
// see FIN or RST. A microVM that is killed says nothing: QEMU dies, the
// guest's TCP stack with it, and every host socket connected to the guest's
// address (the proxy's connections from the guest, the ingress's
// connections into it) would wait forever (an event stream has no idle
// limit). So when a sandbox's link goes, the daemon aborts them itself, as
// `ss -K dst ADDR` does: a sock_diag dump of the host's TCP sockets, then
// SOCK_DESTROY for each whose remote address is the sandbox's. Their owners'
// pending reads and writes fail with ECONNABORTED.
#pragma once

#include <cstdint>

#include "common/error.h"

namespace sandboxd::net {

// Aborts every TCP socket of the calling thread's network namespace whose
// remote address is `peer_ip` (host byte order; listening and TIME_WAIT
// sockets aside). Returns how many were aborted. EOPNOTSUPP when the kernel
// lacks CONFIG_INET_DIAG_DESTROY. Needs CAP_NET_ADMIN. Blocking, short.
Result<int> AbortTcpConnectionsTo(uint32_t peer_ip);

}  // namespace sandboxd::net

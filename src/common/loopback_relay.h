// The loopback relay of a microVM guest: how the daemon's HTTP ingress
// reaches a server that listens only on the guest's 127.0.0.1.
//
// The ingress dials a guest at its own address (the guest has a network
// stack of its own; docs/api.md, Ingress). A server bound to 127.0.0.1 is not
// there, while in a namespace sandbox the ingress reaches it (it dials
// loopback inside the sandbox's namespace). For parity, the guest's agent
// listens on kLoopbackRelayPort and, for connections from the gateway (the
// host end of the sandbox's link, which is where the daemon's connections
// come from), relays to 127.0.0.1:<port>. The protocol is TCPMUX-like
// (RFC 1078, whose port this is):
//
//   daemon -> agent:  "<port>\r\n"            (decimal, 1..65535)
//   agent -> daemon:  "+\r\n"                 connected; bytes flow both ways from here
//                     "-<reason>\r\n"         not connected (then closed)
//
// The daemon tries the guest's address first and uses the relay only when
// that is refused, so servers on 0.0.0.0 take the kernel's path. Guest
// processes gain nothing from the relay: it reaches only the guest's own
// loopback, and answers nobody but the gateway.
#pragma once

#include <cstdint>

namespace sandboxd {

// Below 1024, so the sandbox's user (app) cannot take it first.
inline constexpr uint16_t kLoopbackRelayPort = 1;

}  // namespace sandboxd

// The guest side of the loopback relay (common/loopback_relay.h): the
// microVM's agent serves it once the guest has an address.
#pragma once

#include <cstdint>

#include "common/error.h"
#include "common/loopback_relay.h"

namespace sandboxd::agent {

// Starts the relay on 0.0.0.0:`port` the first time (a thread that accepts;
// two threads per relayed connection, at most kMaxRelays connections at
// once), and (every time) sets the only peer address it answers: `gateway`
// (host byte order). Returns the port it listens on (`port` 0: any, for
// tests). Thread-safe; one relay per process.
Result<uint16_t> StartLoopbackRelay(uint32_t gateway, uint16_t port = kLoopbackRelayPort);

inline constexpr int kMaxRelays = 128;

}  // namespace sandboxd::agent

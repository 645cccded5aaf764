// Byte-for-byte relay between two connected TCP sockets, zero-copy through
// pipes with splice(2). Used for allowed connections that carry no secrets:
// the proxy never looks at (or decrypts) what they carry.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>

namespace sandboxd::net {

struct SpliceStats {
  uint64_t down_to_up = 0;  // bytes from the sandbox side to the upstream
  uint64_t up_to_down = 0;
};

// Relays until both directions reached EOF (half-closes are passed on) or an
// error ends either side; then closes both and calls `done` on the sockets'
// executor. `prefix` is sent to `up` first (bytes already read from `down`
// while sniffing). Both sockets must use the same single-threaded executor.
void Splice(boost::asio::ip::tcp::socket down, boost::asio::ip::tcp::socket up, std::string prefix,
            std::function<void(const SpliceStats&)> done);

}  // namespace sandboxd::net

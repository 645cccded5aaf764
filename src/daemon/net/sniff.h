// Recognises the first bytes a sandbox sends on a TCP connection: a TLS
// ClientHello (and its SNI) or an HTTP/1.x request head (and its Host). The
// egress proxy decides by name, so it must see the name before it connects
// anywhere. Pure function of the bytes so far; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sandboxd::net {

struct Sniffed {
  enum Kind {
    kNeedMore,  // not enough bytes yet to tell
    kTls,       // a complete ClientHello; `host` is its SNI ("" when absent)
    kHttp,      // a complete request head; `host` is the Host header ("" when absent)
    kUnknown,   // neither (or malformed beyond repair)
  };
  Kind kind = kNeedMore;
  std::string host;  // as sent: not normalised
};

// Bytes the sniffer may need at most: a ClientHello larger than this, or a
// request head larger than this, is refused as kUnknown.
inline constexpr size_t kMaxSniffBytes = 64 * 1024;

Sniffed Sniff(std::string_view bytes);

}  // namespace sandboxd::net

// A sandbox's `allowNet` list: which hosts it may reach through the egress
// proxy and which names its DNS server answers. Parsed once, at the API edge,
// into immutable entries; matching never allocates on the error path and never
// throws. Error messages name the offending entry and are returned to API
// users verbatim.
//
// Entry grammar (the port is optional everywhere; no port = every port):
//   example.com         exactly this name (not its subdomains)
//   example.com:443
//   *.example.com       any name strictly below example.com, at any depth
//                       (a.example.com, a.b.example.com), but NOT example.com
//                       itself: list both to allow both
//   192.0.2.1           an IPv4 literal (dotted quad only)
//   [2001:db8::1]:8443  an IPv6 literal, always in brackets
//
// Names are case-insensitive and a single trailing dot is ignored. Labels are
// LDH (letters, digits, hyphen; no leading/trailing hyphen), at most 63
// characters, and the name at most 253. IDNA is not handled: non-ASCII names
// are rejected and must be given in their punycode form (xn--...). A name
// whose last label is numeric ("127.1", "0x7f") is rejected: resolvers read it
// as an IPv4 address in a legacy notation, which would sneak an address past
// the name rules.
//
// Thread-safety: AllowList is immutable after Parse; all const methods may be
// called concurrently.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace sandboxd::net {

struct AllowEntry {
  enum class Kind {
    kName,      // `host`: exactly this name
    kWildcard,  // `*.suffix`: strict subdomains of `host`
    kAddress,   // IPv4 / [IPv6] literal
  };
  Kind kind = Kind::kName;
  std::string host;                  // kName/kWildcard: lower-case, no trailing dot, no "*."
  boost::asio::ip::address address;  // kAddress only
  uint16_t port = 0;                 // 0 = any port

  // Canonical text form ("*.example.com:443", "[2001:db8::1]"); parses back
  // to an equal entry.
  std::string ToString() const;
  bool operator==(const AllowEntry&) const = default;
};

// Parses one allowNet entry. Error: `invalid allowNet entry "<entry>": <why>`.
Result<AllowEntry> ParseAllowEntry(std::string_view entry);

// Normalises a host as it arrives from the network (TLS SNI, HTTP Host header,
// CONNECT authority): strips an optional ":port" and IPv6 brackets, drops one
// trailing dot, lower-cases, and validates it like an allowNet name. Returns a
// bare name ("example.com") or an IP literal in canonical form ("192.0.2.1",
// "2001:db8::1", IPv6 without brackets). Rejects anything else (empty, non-
// ASCII, unbracketed IPv6, bad port, "*", legacy numeric IPv4 forms).
Result<std::string> NormalizeHost(std::string_view host);

class AllowList {
 public:
  AllowList() = default;  // empty: allows nothing

  // Parses every entry; the first bad one fails the whole list with
  // `allowNet[<index>] "<entry>": <why>`. Order and duplicates are preserved.
  static Result<AllowList> Parse(const std::vector<std::string>& entries);

  bool empty() const { return entries_.empty(); }
  const std::vector<AllowEntry>& entries() const { return entries_; }

  // May a connection to `host`:`port` be made, deciding by name? `host` is
  // normalised first (case, trailing dot, brackets; no port), so both raw and
  // NormalizeHost() output are accepted; an invalid host is never allowed.
  // An IP-literal host matches only IP-literal entries (AllowsAddress);
  // name and wildcard entries never match IP literals.
  bool AllowsName(std::string_view host, uint16_t port) const;

  // Is there any port for which AllowsName(host, port) holds? This is what
  // the DNS server asks: a name that is allowed on no port is not resolved.
  bool AllowsNameAnyPort(std::string_view host) const;

  // May a connection to this address be made? Only IP-literal entries are
  // consulted (a name entry says nothing about the addresses it resolves to).
  // IPv4-mapped IPv6 addresses compare equal to their IPv4 form.
  bool AllowsAddress(const boost::asio::ip::address& addr, uint16_t port) const;

  // Does some IP-literal entry name exactly this address (on any port)? Used
  // to let an explicitly listed private/loopback/metadata address through the
  // default address-class filter.
  bool NamesAddress(const boost::asio::ip::address& addr) const;

  // Canonical strings of all entries, in order (for the API's echo of the
  // sandbox config and for logs).
  std::vector<std::string> ToStrings() const;

 private:
  explicit AllowList(std::vector<AllowEntry> entries) : entries_(std::move(entries)) {}
  bool MatchesName(std::string_view canonical_name, uint16_t port, bool any_port) const;
  bool MatchesAddress(const boost::asio::ip::address& canonical, uint16_t port,
                      bool any_port) const;

  std::vector<AllowEntry> entries_;
};

}  // namespace sandboxd::net

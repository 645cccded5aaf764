#include "daemon/net/allowlist.h"

#include <algorithm>
#include <expected>
#include <optional>
#include <variant>

namespace sandboxd::net {

namespace ip = boost::asio::ip;

namespace {

// Internal results carry only the reason; the public functions add the
// "which entry" context in one place each.
template <typename T>
using Why = std::expected<T, std::string>;
using Reason = std::unexpected<std::string>;

// The input quoted for an error message: printable ASCII kept, everything
// else escaped (it came from an API user or the network), long input cut.
std::string Quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  static constexpr size_t kMaxShown = 80;
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == kMaxShown) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  out += '"';
  return out;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsHexDigit(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); }
bool IsLdh(char c) { return IsDigit(c) || (c >= 'a' && c <= 'z') || c == '-'; }
char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Rejects bytes no host can contain, with the most helpful message first.
Why<void> CheckCharset(std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80) {
      return Reason(
          "non-ASCII host names are not supported (IDNA is not handled); use the punycode form "
          "(xn--...)");
    }
    if (c <= 0x20 || c == 0x7f) return Reason("contains whitespace or control characters");
  }
  return {};
}

Why<uint16_t> ParsePort(std::string_view p) {
  if (p.empty()) return Reason("missing port after ':'");
  const bool digits = p.size() <= 5 && std::all_of(p.begin(), p.end(), IsDigit);
  uint32_t v = 0;
  if (digits) {
    for (char c : p) v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (!digits || v == 0 || v > 65535) {
    return Reason("port " + Quote(p) + " is not a number from 1 to 65535");
  }
  return static_cast<uint16_t>(v);
}

// `name`: already lower-case, trailing dot removed.
Why<void> ValidateName(std::string_view name) {
  if (name.empty()) return Reason("empty host name");
  if (name.size() > 253) return Reason("host name is longer than 253 characters");
  std::string_view last;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    const std::string_view label =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty()) return Reason("host name has an empty label");
    if (label.size() > 63) return Reason("label " + Quote(label) + " is longer than 63 characters");
    for (char c : label) {
      if (c == '*') {
        return Reason("'*' is only allowed as the whole first label, as in \"*.example.com\"");
      }
      if (!IsLdh(c)) {
        return Reason("invalid character " + Quote(std::string_view(&c, 1)) +
                      " (host names are letters, digits, hyphens and dots)");
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      return Reason("label " + Quote(label) + " starts or ends with a hyphen");
    }
    last = label;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  // WHATWG URL and inet_aton() both read a numeric last label ("127.1",
  // "0x7f.1", "2130706433") as an IPv4 address in a legacy notation. No real
  // TLD is numeric, so such a "name" is an address in disguise.
  const bool decimal = std::all_of(last.begin(), last.end(), IsDigit);
  const bool hex = last.size() >= 2 && last[0] == '0' && last[1] == 'x' &&
                   std::all_of(last.begin() + 2, last.end(), IsHexDigit);
  if (decimal || hex) {
    return Reason("last label " + Quote(last) +
                  " is numeric; IPv4 addresses must be a plain dotted quad such as 192.0.2.1");
  }
  return {};
}

std::string_view StripTrailingDot(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  return s;
}

// Lower-cases, drops one trailing dot, validates.
Why<std::string> CanonicalName(std::string_view raw) {
  if (auto ok = CheckCharset(raw); !ok) return Reason(ok.error());
  std::string name(StripTrailingDot(raw));
  std::transform(name.begin(), name.end(), name.begin(), Lower);
  if (auto ok = ValidateName(name); !ok) return Reason(ok.error());
  return name;
}

std::optional<ip::address_v4> ParseV4(std::string_view s) {
  // inet_pton semantics: exactly four decimal parts, no leading zeros.
  boost::system::error_code ec;
  auto a = ip::make_address_v4(std::string(s), ec);
  if (ec) return std::nullopt;
  return a;
}

Why<ip::address_v6> ParseV6(std::string_view s) {
  if (s.find('%') != std::string_view::npos) {
    return Reason("IPv6 zone ids (\"%...\") are not allowed");
  }
  boost::system::error_code ec;
  auto a = ip::make_address_v6(std::string(s), ec);
  if (ec) return Reason(Quote(s) + " is not a valid IPv6 address");
  return a;
}

// IPv4-mapped IPv6 (::ffff:a.b.c.d) is the same destination as a.b.c.d.
ip::address Canonical(const ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  }
  return a;
}

// "host", "host:port", "[v6]", "[v6]:port", split but not yet validated as a
// name. `ip` is set for address literals.
struct HostPort {
  std::optional<ip::address> ip;
  std::string_view host;  // the raw host text when !ip
  uint16_t port = 0;      // 0 = none given
};

Why<HostPort> SplitHostPort(std::string_view s) {
  HostPort hp;
  if (s.front() == '[') {
    const size_t close = s.find(']');
    if (close == std::string_view::npos) return Reason("missing ']' after IPv6 address");
    auto v6 = ParseV6(s.substr(1, close - 1));
    if (!v6) return Reason(v6.error());
    hp.ip = *v6;
    const std::string_view rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return Reason("unexpected text after ']'");
      auto port = ParsePort(rest.substr(1));
      if (!port) return Reason(port.error());
      hp.port = *port;
    }
    return hp;
  }
  const size_t colons = static_cast<size_t>(std::count(s.begin(), s.end(), ':'));
  if (colons > 1) {
    return Reason(
        "IPv6 addresses must be in brackets, as in \"[2001:db8::1]\" or \"[2001:db8::1]:443\"");
  }
  hp.host = s;
  if (colons == 1) {
    const size_t colon = s.find(':');
    hp.host = s.substr(0, colon);
    auto port = ParsePort(s.substr(colon + 1));
    if (!port) return Reason(port.error());
    hp.port = *port;
  }
  if (hp.host.empty()) return Reason("missing host before ':'");
  if (auto v4 = ParseV4(StripTrailingDot(hp.host))) hp.ip = *v4;
  return hp;
}

Why<AllowEntry> ParseEntryImpl(std::string_view s) {
  if (s.empty()) return Reason("empty entry");
  if (auto ok = CheckCharset(s); !ok) return Reason(ok.error());
  if (s.find("://") != std::string_view::npos) {
    return Reason(
        "looks like a URL; give only the host and optional port, e.g. \"example.com:443\"");
  }
  if (s.find('/') != std::string_view::npos) {
    return Reason("contains '/'; give only the host and optional port, not a URL or path");
  }
  auto hp = SplitHostPort(s);
  if (!hp) return Reason(hp.error());
  AllowEntry e;
  e.port = hp->port;
  if (hp->ip) {
    e.kind = AllowEntry::Kind::kAddress;
    e.address = *hp->ip;
    return e;
  }
  const std::string_view host = hp->host;
  if (host == "*" || host == "*.") {
    return Reason("'*' alone is not supported; list the hosts, or use \"*.example.com\"");
  }
  if (host.starts_with("*.")) {
    auto suffix = CanonicalName(host.substr(2));
    if (!suffix) return Reason(suffix.error());
    e.kind = AllowEntry::Kind::kWildcard;
    e.host = std::move(*suffix);
    return e;
  }
  auto name = CanonicalName(host);
  if (!name) return Reason(name.error());
  e.kind = AllowEntry::Kind::kName;
  e.host = std::move(*name);
  return e;
}

// A host without a port, in any of the forms AllowsName accepts: a name (any
// case, optional trailing dot), a dotted quad, "[v6]" or a bare v6 literal (as
// NormalizeHost returns it).
std::optional<std::variant<ip::address, std::string>> CanonicalHost(std::string_view h) {
  if (h.empty()) return std::nullopt;
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.find(':') != std::string_view::npos) {
    auto v6 = ParseV6(h);
    if (!v6) return std::nullopt;
    return Canonical(ip::address(*v6));
  }
  if (auto v4 = ParseV4(StripTrailingDot(h))) return ip::address(*v4);
  auto name = CanonicalName(h);
  if (!name) return std::nullopt;
  return std::move(*name);
}

}  // namespace

std::string AllowEntry::ToString() const {
  std::string out;
  switch (kind) {
    case Kind::kName:
      out = host;
      break;
    case Kind::kWildcard:
      out = "*." + host;
      break;
    case Kind::kAddress:
      out = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
      break;
  }
  if (port != 0) out += ":" + std::to_string(port);
  return out;
}

Result<AllowEntry> ParseAllowEntry(std::string_view entry) {
  auto e = ParseEntryImpl(entry);
  if (!e) return FailMsg("invalid allowNet entry " + Quote(entry) + ": " + e.error());
  return std::move(*e);
}

Result<std::string> NormalizeHost(std::string_view host) {
  auto fail = [&](const std::string& why) {
    return FailMsg("invalid host " + Quote(host) + ": " + why);
  };
  if (host.empty()) return fail("empty host");
  if (auto ok = CheckCharset(host); !ok) return fail(ok.error());
  auto hp = SplitHostPort(host);
  if (!hp) return fail(hp.error());
  if (hp->ip) return hp->ip->to_string();
  if (hp->host.find('*') != std::string_view::npos) return fail("contains '*'");
  auto name = CanonicalName(hp->host);
  if (!name) return fail(name.error());
  return std::move(*name);
}

Result<AllowList> AllowList::Parse(const std::vector<std::string>& entries) {
  std::vector<AllowEntry> parsed;
  parsed.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    auto e = ParseEntryImpl(entries[i]);
    if (!e) {
      return FailMsg("allowNet[" + std::to_string(i) + "] " + Quote(entries[i]) + ": " + e.error());
    }
    parsed.push_back(std::move(*e));
  }
  return AllowList(std::move(parsed));
}

bool AllowList::MatchesName(std::string_view name, uint16_t port, bool any_port) const {
  for (const AllowEntry& e : entries_) {
    if (!any_port && e.port != 0 && e.port != port) continue;
    switch (e.kind) {
      case AllowEntry::Kind::kName:
        if (name == e.host) return true;
        break;
      case AllowEntry::Kind::kWildcard:
        // Strictly below the suffix, on a label boundary: "a.example.com"
        // matches "*.example.com"; "example.com" and "badexample.com" do not.
        if (name.size() > e.host.size() + 1 && name.ends_with(e.host) &&
            name[name.size() - e.host.size() - 1] == '.') {
          return true;
        }
        break;
      case AllowEntry::Kind::kAddress:
        break;
    }
  }
  return false;
}

bool AllowList::MatchesAddress(const ip::address& canonical, uint16_t port, bool any_port) const {
  for (const AllowEntry& e : entries_) {
    if (e.kind != AllowEntry::Kind::kAddress) continue;
    if (!any_port && e.port != 0 && e.port != port) continue;
    if (Canonical(e.address) == canonical) return true;
  }
  return false;
}

bool AllowList::AllowsName(std::string_view host, uint16_t port) const {
  if (port == 0) return false;
  auto h = CanonicalHost(host);
  if (!h) return false;
  if (auto* a = std::get_if<ip::address>(&*h)) return MatchesAddress(*a, port, false);
  return MatchesName(std::get<std::string>(*h), port, false);
}

bool AllowList::AllowsNameAnyPort(std::string_view host) const {
  auto h = CanonicalHost(host);
  if (!h) return false;
  if (auto* a = std::get_if<ip::address>(&*h)) return MatchesAddress(*a, 0, true);
  return MatchesName(std::get<std::string>(*h), 0, true);
}

bool AllowList::AllowsAddress(const ip::address& addr, uint16_t port) const {
  if (port == 0) return false;
  return MatchesAddress(Canonical(addr), port, false);
}

bool AllowList::NamesAddress(const ip::address& addr) const {
  return MatchesAddress(Canonical(addr), 0, true);
}

std::vector<std::string> AllowList::ToStrings() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const AllowEntry& e : entries_) out.push_back(e.ToString());
  return out;
}

}  // namespace sandboxd::net

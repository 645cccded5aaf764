// HTTP/1.1 helpers shared by the egress proxy's HTTP relay (net/http_relay)
// and the ingress reverse proxy (ingress/proxy): both forward messages and
// must drop the same hop-by-hop fields.
#pragma once

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>
#include <string_view>

namespace sandboxd::net::http_util {

// `s` without leading and trailing spaces and tabs (optional whitespace).
inline std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Fields that describe one connection (RFC 9110 7.6.1), never forwarded; the
// fields a Connection header names are hop-by-hop as well (callers check).
inline bool IsHopByHop(boost::beast::http::field f) {
  using boost::beast::http::field;
  switch (f) {
    case field::connection:
    case field::keep_alive:
    case field::proxy_connection:
    case field::te:
    case field::trailer:
    case field::transfer_encoding:
    case field::upgrade:
      return true;
    default:
      return false;
  }
}

// The standard reason phrase of `status`, "Unknown" for codes without one.
inline const char* ReasonText(unsigned status) {
  auto r = boost::beast::http::obsolete_reason(static_cast<boost::beast::http::status>(status));
  return r.empty() ? "Unknown" : r.data();
}

}  // namespace sandboxd::net::http_util

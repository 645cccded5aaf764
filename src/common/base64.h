// Standard base64 (RFC 4648 alphabet, padded), the encoding of every byte
// payload on the SDK's wire. Backed by OpenSSL's EVP block coder.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sandboxd {

std::string Base64Encode(std::string_view bytes);
// nullopt for anything that is not canonical padded base64.
std::optional<std::string> Base64Decode(std::string_view text);

// True when `s` holds only base64 characters, so it can stand between JSON
// quotes without escaping (the bulk-data fast paths rely on this).
inline bool IsBase64Text(std::string_view s) {
  for (char c : s) {
    bool b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
               c == '=';
    if (!b64) return false;
  }
  return true;
}

// Recognises `<head><decimal id><mid><base64><tail>` exactly — the fixed
// shapes in which bulk data travels as JSON — and returns the id and a view of
// the base64, without running a JSON parser over it. Leading zeros, more than
// 15 digits, or any character outside the base64 alphabet return nullopt, so
// callers fall back to a real parser for anything else.
struct Base64Envelope {
  uint64_t id;
  std::string_view base64;
};
inline std::optional<Base64Envelope> MatchBase64Envelope(std::string_view t, std::string_view head,
                                                         std::string_view mid, std::string_view tail) {
  if (!t.starts_with(head) || !t.ends_with(tail) || t.size() < head.size() + tail.size()) return std::nullopt;
  t.remove_prefix(head.size());
  t.remove_suffix(tail.size());
  uint64_t id = 0;
  size_t i = 0;
  for (; i < t.size() && i < 15 && t[i] >= '0' && t[i] <= '9'; ++i) id = id * 10 + static_cast<uint64_t>(t[i] - '0');
  if (i == 0 || (i > 1 && t[0] == '0')) return std::nullopt;
  t.remove_prefix(i);
  if (!t.starts_with(mid)) return std::nullopt;
  t.remove_prefix(mid.size());
  if (!IsBase64Text(t)) return std::nullopt;
  return Base64Envelope{id, t};
}

}  // namespace sandboxd

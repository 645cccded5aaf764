// Standard base64 (RFC 4648 alphabet, padded), the encoding of every byte
// payload on the SDK's wire. Backed by OpenSSL's EVP block coder.
#pragma once

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

}  // namespace sandboxd

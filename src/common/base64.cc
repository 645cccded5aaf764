#include "common/base64.h"

#include <openssl/evp.h>

namespace sandboxd {

std::optional<std::string> Base64Decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  size_t pad_at = in.find('=');
  if (pad_at != std::string_view::npos &&
      (in.size() - pad_at > 2 || in.substr(pad_at).find_first_not_of('=') != std::string_view::npos)) {
    return std::nullopt;  // padding only at the very end, at most two
  }
  for (char c : in.substr(0, pad_at)) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (!ok) return std::nullopt;
  }
  if (in.empty()) return std::string();
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  size_t pad = 0;
  if (in.ends_with("==")) pad = 2;
  else if (in.ends_with('=')) pad = 1;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

std::string Base64Encode(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace sandboxd

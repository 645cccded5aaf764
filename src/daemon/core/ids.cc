#include "daemon/core/ids.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstdlib>

namespace sandboxd::core {
namespace {
constexpr std::string_view kCrockford = "0123456789abcdefghjkmnpqrstvwxyz";
constexpr std::string_view kBase62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

// Uniform choice from an alphabet by rejection sampling.
std::string RandomString(std::string_view alphabet, size_t len) {
  std::string out;
  out.reserve(len);
  unsigned limit = 256 - (256 % alphabet.size());
  while (out.size() < len) {
    std::string bytes = RandomBytes(len);
    for (unsigned char b : bytes) {
      if (b < limit && out.size() < len) out.push_back(alphabet[b % alphabet.size()]);
    }
  }
  return out;
}
}  // namespace

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) std::abort();
  return out;
}

std::string NewSandboxId(std::string_view region) {
  return "sbx_" + std::string(region) + "_" + RandomString(kCrockford, 20);
}

bool IsValidRegion(std::string_view r) {
  if (r.size() != 3) return false;
  for (char c : r) if (c < 'a' || c > 'z') return false;
  return true;
}

bool IsValidSandboxId(std::string_view id) {
  // ^sbx_([a-z]{3})_[0-9a-hjkmnp-z]{20}$
  if (id.size() != 28 || !id.starts_with("sbx_") || id[7] != '_') return false;
  if (!IsValidRegion(id.substr(4, 3))) return false;
  for (char c : id.substr(8)) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z' && c != 'i' && c != 'l' && c != 'o');
    if (!ok) return false;
  }
  return true;
}

std::string NewOrgToken() { return "ddo_" + RandomString(kBase62, 40); }

std::string HashToken(std::string_view token) { return Sha256Hex(token); }

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

}  // namespace sandboxd::core

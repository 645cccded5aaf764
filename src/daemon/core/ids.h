// Identifiers and secrets: sandbox ids (WIRE.md §6.1), org tokens and their
// stored hashes.
#pragma once

#include <string>
#include <string_view>

namespace sandboxd::core {

// sbx_<region>_<20 Crockford base32 lower-case chars> (100 random bits).
std::string NewSandboxId(std::string_view region);
bool IsValidSandboxId(std::string_view id);
// A region is three lower-case ASCII letters (the SDK's id format requires it).
bool IsValidRegion(std::string_view region);

// "ddo_" + 40 base62 chars (~238 random bits); the SDK needs the ddo_ prefix to
// accept a token without an org setting.
std::string NewOrgToken();
// Hex SHA-256 of the token: what the store keeps.
std::string HashToken(std::string_view token);
// Hex SHA-256 of any bytes.
std::string Sha256Hex(std::string_view data);

// Cryptographically random bytes (OpenSSL RAND_bytes); aborts if the CSPRNG fails.
std::string RandomBytes(size_t n);

}  // namespace sandboxd::core

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

}  // namespace sandboxd

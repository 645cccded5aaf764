// An error destined for an API client: HTTP status + stable upper-snake code +
// message, rendered as the JSON body {code, message} (WIRE.md §1.6, §5.5).
#pragma once

#include <expected>
#include <string>

namespace sandboxd::core {

struct ApiError {
  int status = 500;
  std::string code;
  std::string message;

  static ApiError InvalidConfig(std::string m) { return {400, "INVALID_CONFIG", std::move(m)}; }
  static ApiError InvalidLabels(std::string m) { return {400, "INVALID_LABELS", std::move(m)}; }
  static ApiError NotFound(std::string m) { return {404, "SANDBOX_NOT_FOUND", std::move(m)}; }
  static ApiError InvalidToken() {
    return {401, "INVALID_TOKEN", "The access token is missing, invalid or expired."};
  }
  static ApiError Internal(std::string m) { return {500, "INTERNAL_ERROR", std::move(m)}; }
};

template <typename T>
using ApiResult = std::expected<T, ApiError>;

}  // namespace sandboxd::core

// Errors returned by the sandboxd client library.
//
// The project-wide sandboxd::Error (src/common/error.h) carries an errno; the
// client mostly reports *server* failures, whose identity is a string code
// ("INVALID_TOKEN", "SANDBOX_NOT_FOUND", an RPC ErrorObject's "ENOENT", ...)
// plus an HTTP status. Hence a separate, richer type. Nothing in the client
// API throws; every fallible call returns Result<T> / Status.
#pragma once

#include <expected>
#include <string>
#include <utility>

namespace sandboxd::client {

// Local error codes (server codes are passed through verbatim).
inline constexpr char kInvalidArgument[] = "INVALID_ARGUMENT";
inline constexpr char kConnectionFailed[] = "CONNECTION_FAILED";
inline constexpr char kConnectionClosed[] = "CONNECTION_CLOSED";
inline constexpr char kProtocolError[] = "PROTOCOL_ERROR";
inline constexpr char kTimeout[] = "TIMEOUT";
inline constexpr char kRpcError[] = "RPC_ERROR";
inline constexpr char kHttpError[] = "HTTP_ERROR";
inline constexpr char kUnsupported[] = "UNSUPPORTED";

struct Error {
  // Server code from a JSON {code, message} body, the `code` of an RPC
  // ErrorObject (falling back to its constructorName), or one of the local
  // codes above.
  std::string code;
  std::string message;
  // HTTP status of a failed upgrade / REST call; 0 otherwise.
  int http_status = 0;
  // constructorName of an RPC ErrorObject ("NotFound", "TypeError", ...);
  // empty for non-RPC errors.
  std::string kind;

  static Error Make(std::string code, std::string message) {
    return Error{std::move(code), std::move(message), 0, {}};
  }
  // Adds context in front of the message.
  Error Wrap(const std::string& context) const {
    Error e = *this;
    e.message = context + ": " + message;
    return e;
  }
  // "message (status: 401, code: INVALID_TOKEN)" — the SDK's format.
  std::string ToString() const {
    std::string s = message;
    if (http_status != 0) {
      s += " (status: " + std::to_string(http_status) + ", code: " + code + ")";
    } else if (!code.empty()) {
      s += " (code: " + code + ")";
    }
    return s;
  }
};

template <typename T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

inline std::unexpected<Error> Fail(Error e) { return std::unexpected<Error>(std::move(e)); }
inline std::unexpected<Error> Fail(std::string code, std::string message) {
  return std::unexpected<Error>(Error::Make(std::move(code), std::move(message)));
}

}  // namespace sandboxd::client

// Errors as values: every fallible call across a module boundary returns
// std::expected<T, Error>. `code` is an errno value when the failure came from
// the OS (0 otherwise); `message` carries the context added on the way up.
#pragma once

#include <cerrno>
#include <cstring>
#include <expected>
#include <string>
#include <utility>

namespace sandboxd {

struct Error {
  int code = 0;         // errno, or 0 for non-OS failures
  std::string message;  // human-readable, with context

  static Error Errno(std::string what, int err = errno) {
    return Error{err, std::move(what) + ": " + std::strerror(err)};
  }
  static Error Msg(std::string what) { return Error{0, std::move(what)}; }

  // Adds context in front of the message ("creating cgroup: mkdir ...: EEXIST").
  Error Wrap(const std::string& context) const& { return Error{code, context + ": " + message}; }
};

template <typename T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

inline std::unexpected<Error> Fail(Error e) { return std::unexpected<Error>(std::move(e)); }
inline std::unexpected<Error> FailErrno(std::string what, int err = errno) {
  return std::unexpected<Error>(Error::Errno(std::move(what), err));
}
inline std::unexpected<Error> FailMsg(std::string what) {
  return std::unexpected<Error>(Error::Msg(std::move(what)));
}

}  // namespace sandboxd

// Propagates an error from an expression returning std::expected.
#define SBX_TRY(expr)                                                  \
  do {                                                                 \
    auto&& sbx_try_result_ = (expr);                                   \
    if (!sbx_try_result_) return std::unexpected(sbx_try_result_.error()); \
  } while (0)

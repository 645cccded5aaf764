// Mapping internal errors to wire errors, in exactly one place (WIRE.md §1.6,
// §2.4, §2.5), plus small JSON/time helpers shared by the HTTP and WebSocket
// handlers.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "daemon/core/api_error.h"
#include "daemon/core/sandbox.h"

namespace sandboxd::api {

// ErrorObject for an OS-level failure inside the sandbox (errno → Deno class).
nlohmann::json ErrorObjectFromErrno(int err, const std::string& message);
// ErrorObject with an explicit class, e.g. ("TypeError", "ENOENT", "...").
nlohmann::json ErrorObject(const std::string& constructor, const std::string& code, const std::string& message);

// {"code": ..., "message": ...} body for a failed HTTP request.
std::string ApiErrorBody(const core::ApiError& e);

// ProcessStatus (WIRE.md §4.0): all four keys.
nlohmann::json ProcessStatusJson(const core::ExitStatus& st);

// 2024-01-01T00:00:00.000Z
std::string IsoTime(int64_t ms);

// JSON text, never throwing on invalid UTF-8 (replaced by U+FFFD).
std::string Dump(const nlohmann::json& j);

}  // namespace sandboxd::api

// Minimal blocking HTTP/1.1 client over Boost.Beast (internal to sbx_client).
// Thread-safe: each call uses its own io_context and socket.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "client/error.h"
#include "client/wire.h"

namespace sandboxd::client {

struct HttpRequest {
  std::string method;  // "GET", "DELETE", "PATCH", ...
  std::string target;  // "/api/v2/sandboxes?..."
  std::string body;    // sent with Content-Type: application/json when non-empty
  std::vector<std::pair<std::string, std::string>> headers;
};

struct HttpResponse {
  int status = 0;
  std::string body;
  std::string link;  // the Link header, if any
};

// Performs one request (Connection: close). Transport failures →
// CONNECTION_FAILED / TIMEOUT; any HTTP status is a successful Result.
Result<HttpResponse> HttpCall(const Endpoint& endpoint, const HttpRequest& request,
                              std::chrono::milliseconds timeout);

}  // namespace sandboxd::client

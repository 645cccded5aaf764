// The two wire calls of sandbox.exposeHttp (WIRE.md §4.7, §5.1), parsed and
// validated here into ExposureSet operations, so the API layer only routes
// and renders:
//   POST /api/v3/sandbox/{id}/expose/http   body {} (npm SDK), {"port": n}
//       or {"pid": n} (Python SDK, curl)  → {"domain", "url"}
//   RPC exposeHttp {domain, port | pid}    → null
// With an empty body the REST call reserves a name and the RPC binds it;
// with a port or pid the REST call exposes at once and the RPC (if any)
// confirms. Event-loop thread only (ExposureSet).
#pragma once

#include <sys/types.h>

#include <expected>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/core/api_error.h"
#include "daemon/ingress/exposure.h"

namespace sandboxd::ingress {

// `naming`: nullopt when the daemon runs without an ingress (409
// INGRESS_DISABLED). `init_pid`: the sandbox's PID 1 on the host (to check
// a pid exists). Returns the JSON body of the 200 answer.
core::ApiResult<nlohmann::json> ExposeHttpRest(ExposureSet& set, std::string_view sandbox_id,
                                               pid_t init_pid, const std::optional<Naming>& naming,
                                               std::string_view body);

struct RpcError {
  bool invalid_params = false;  // JSON-RPC -32602; else an application error
  int err = 0;                  // errno for the error class (0: plain Error)
  std::string message;
};
std::expected<void, RpcError> ExposeHttpRpc(ExposureSet& set, std::string_view sandbox_id,
                                            pid_t init_pid, const nlohmann::json& params);

}  // namespace sandboxd::ingress

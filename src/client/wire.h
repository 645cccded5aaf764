// Pure helpers for the @deno/sandbox wire protocol (WIRE.md): no I/O, no
// threads. Everything here is thread-compatible (free functions on values).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/error.h"

namespace sandboxd::client {

using Labels = std::map<std::string, std::string>;

// --- base64 (RFC 4648, '+/', '=' padding) ----------------------------------
std::string Base64Encode(std::string_view bytes);
Result<std::string> Base64Decode(std::string_view text);

// --- endpoint ----------------------------------------------------------------
struct Endpoint {
  std::string scheme;  // "http" (https is parsed but not supported yet)
  std::string host;    // without brackets for IPv6
  std::string port;    // always set ("80" by default for http)
  // "host:port" as used in the Host header.
  std::string HostHeader() const;
  // "http://host:port".
  std::string Origin() const;
};
// Accepts http://host[:port][/path]; the path is dropped (the SDK drops it too).
Result<Endpoint> ParseEndpoint(std::string_view url);

// --- §6.1 ids ----------------------------------------------------------------
bool IsValidSandboxId(std::string_view id);

// --- §7.2 timeouts -------------------------------------------------------------
// SDK semantics: "<n>s" seconds, "<n>m" minutes, n parsed like JS parseInt
// ("1.5m" = 1 minute, "5ms" = 5 seconds); n <= 0, NaN or another suffix is
// invalid. Returns the duration.
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);
// Like ParseDuration, but "session" (and "") mean "no deadline" (nullopt).
Result<std::optional<std::chrono::milliseconds>> ParseTimeout(std::string_view text);

// --- §1.4 config header ---------------------------------------------------------
// A secret for the egress proxy: inside the sandbox, environment variable
// `name` holds a placeholder that the proxy replaces with `value` in HTTPS
// requests to `hosts` (allowNet patterns). The value is never sent back.
struct Secret {
  std::string name;
  std::vector<std::string> hosts;
  std::string value;
};

struct SandboxConfig {
  std::optional<std::int64_t> stop_at_ms;
  int memory_mb = 1280;
  Labels labels;  // omitted when empty
  std::optional<std::vector<std::string>> allow_net;
  std::vector<Secret> secrets;        // omitted when empty; names must be unique
  std::optional<std::string> region;  // sandboxd extension, emitted after the SDK's keys
  // sandboxd extension: "namespaces" | "microvm" (the server checks), emitted last.
  std::optional<std::string> isolation;
};
// The JSON text in the SDK's key order: stop_at_ms, memory_mb, labels,
// volumes ([] always), allow_net, secrets ({NAME: {hosts, value}} in the
// given order), then our extensions region and isolation.
std::string BuildConfigJson(const SandboxConfig& config);
// base64(Latin-1(json)). Characters above U+00FF cannot be encoded (the SDK's
// btoa throws too) → INVALID_ARGUMENT; invalid UTF-8 likewise.
Result<std::string> EncodeConfigHeader(std::string_view json_utf8);

// --- §5.2 list query -----------------------------------------------------------
// application/x-www-form-urlencoded component (URLSearchParams rules).
std::string FormUrlEncode(std::string_view s);
// "labels%5Bk%5D=v&..." (no leading '?'); empty for no labels.
std::string LabelQuery(const Labels& labels);
// Extracts the cursor from a `Link: <url?cursor=X>; rel="next"` header value;
// nullopt when there is no next link.
std::optional<std::string> NextCursorFromLink(std::string_view link);

// --- §1.6 / §5 HTTP errors ---------------------------------------------------------
// Builds an Error from a non-2xx/non-101 response: JSON {code, message} bodies
// keep both; other bodies become HTTP_ERROR with the text.
Error DecodeHttpError(int status, std::string_view body);

// --- §2 JSON-RPC ----------------------------------------------------------------
// Decodes a response message: result.ok → the value (null when absent),
// result.error → Error from the ErrorObject, top-level error → RPC_ERROR.
Result<nlohmann::json> DecodeRpcResponse(const nlohmann::json& response);
// Error from an ErrorObject {constructorName, message, code?}.
Error DecodeErrorObject(const nlohmann::json& error_object);

enum class StreamEvent { kStart, kEnqueue, kEnd, kError, kCancel };
struct StreamNotification {
  StreamEvent event;
  std::int64_t stream_id = 0;
  std::string data;            // decoded bytes (kEnqueue)
  std::optional<Error> error;  // kError / kCancel, when an ErrorObject was sent
};
// nullopt: not a $sandbox.stream.* notification. Error: a malformed one.
Result<std::optional<StreamNotification>> ParseStreamNotification(const nlohmann::json& message);
// The JSON text of an outgoing stream notification (data is raw bytes).
std::string MakeStreamNotification(StreamEvent event, std::int64_t stream_id,
                                   std::string_view data = {});
std::string MakeRequest(std::int64_t id, std::string_view method, const nlohmann::json& params);
// json::parse of a server message, with a fast path for bulk payloads
// (fileRead results, stream enqueues, readFile): the first `"data":"` or
// `"ok":"` string value, when long and free of escapes, is copied into the
// document instead of being lexed character by character. Same result as
// json::parse; a discarded (is_discarded()) value for invalid JSON.
nlohmann::json ParseServerMessage(std::string_view text);

// --- §4.5 process status ----------------------------------------------------------
struct ProcessStatus {
  bool success = false;
  int code = 0;
  std::optional<std::string> signal;  // "SIGKILL", ...
  std::optional<std::string> oom;     // "high-confidence" | "low-confidence"
  // What a shell would report: code, or 128+N when killed by signal N.
  int ExitCode() const;
};
Result<ProcessStatus> DecodeProcessStatus(const nlohmann::json& ok);
// Linux signal number for "SIGTERM"/"TERM"; 0 when unknown.
int SignalNumber(std::string_view name);

// --- time ------------------------------------------------------------------------
std::int64_t NowMs();
// "2026-11-29T08:00:00.000Z".
std::string FormatIsoUtc(std::int64_t ms_since_epoch);

}  // namespace sandboxd::client

// Fast recognition of the one message that carries bulk data from the SDK:
// `$sandbox.stream.enqueue`. The SDK serialises it with JSON.stringify in a
// fixed shape; for that exact shape we take the base64 payload as a view
// instead of running the general JSON parser over ~87 KB of string per 64 KiB
// chunk (profiled: the parser was two thirds of the daemon's CPU on uploads).
// Anything else — other key order, whitespace, escapes — returns nullopt and
// goes through the general parser, so semantics never differ.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace sandboxd::api {

struct StreamChunk {
  int64_t stream_id;
  std::string_view base64;  // points into the message
};

std::optional<StreamChunk> ParseStreamEnqueue(std::string_view text);

}  // namespace sandboxd::api

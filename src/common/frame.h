// The agent link: one byte stream between sandboxd and a sandbox's agent,
// carrying length-prefixed frames. See docs/agent-link.md for the protocol.
//
//   u32 LE payload length | u32 LE channel | u8 type | payload
//
// Channel 0 carries CONTROL frames (one JSON object each). Channels > 0 carry
// raw bytes of one stream each (a process's stdin/stdout/stderr, later files
// and port connections), with per-channel credit-based flow control.
//
// Both ends treat the peer as untrusted: a frame whose declared length exceeds
// kMaxFramePayload, or whose type is unknown, is a protocol error and the link
// is closed. FrameDecoder never buffers more than one frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace sandboxd::link {

enum class FrameType : uint8_t {
  kControl = 1,  // channel 0; payload is a UTF-8 JSON object
  kData = 2,     // raw bytes; sender must hold that much credit on the channel
  kEof = 3,      // sender will send no more data on the channel
  kWindow = 4,   // payload: u32 LE credit increment for the peer's sending side
  kReset = 5,    // sender abandons the channel (e.g. consumer gone); peer stops sending
};

inline constexpr size_t kHeaderSize = 9;
inline constexpr uint32_t kMaxFramePayload = 1u << 20;  // 1 MiB: bounds every frame
inline constexpr uint32_t kMaxDataChunk = 64u * 1024;   // data frames carry at most this
inline constexpr uint32_t kInitialWindow = 256u * 1024; // credit each side starts with, per channel

struct Frame {
  FrameType type = FrameType::kControl;
  uint32_t channel = 0;
  std::string payload;
};

// Appends the encoding of one frame to `out`.
void AppendFrame(std::string& out, FrameType type, uint32_t channel, std::string_view payload);
void AppendWindow(std::string& out, uint32_t channel, uint32_t credit);

// Parses the u32 credit of a kWindow payload; nullopt when malformed.
std::optional<uint32_t> ParseWindow(std::string_view payload);

// Incremental decoder: feed bytes as they arrive, pop complete frames.
class FrameDecoder {
 public:
  // Consumes bytes from `data`; returns how many were consumed (all, unless a
  // complete frame is pending — call Next() and feed the rest again).
  // Returns an error on a protocol violation; the decoder is then unusable.
  Result<size_t> Feed(std::span<const char> data);

  // Returns the next complete frame, if any.
  std::optional<Frame> Next();

 private:
  char header_[kHeaderSize];
  size_t header_len_ = 0;
  std::optional<Frame> current_;
  uint32_t want_ = 0;  // payload bytes still missing for current_
  std::optional<Frame> ready_;
  bool failed_ = false;
};

}  // namespace sandboxd::link

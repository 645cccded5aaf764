// The microVM boot handshake (docs/microvm.md, "Boot handshake"): the two
// CONTROL frames on the agent's virtio-serial port before the agent link
// proper starts.
//
//   guest -> host  {"event":"awaiting-config","version":1}
//                  The guest's init has loaded its modules and opened the
//                  port; it has not touched a disk's filesystem, has no
//                  hostname and no per-sandbox state. The backend may
//                  snapshot the VM here (every restored VM resumes at this
//                  point, blocked reading the next frame).
//   host -> guest  {"op":"config","version":1,"hostname":H,"pids_max":N,
//                   "realtime_ns":T,"entropy":"<hex>"}
//                  Per-sandbox settings, the wall clock, and fresh host
//                  entropy that the guest mixes into its kernel RNG and
//                  reseeds it with (restored siblings share their RNG state
//                  up to this point).
//
// Then the agent link proper begins with the agent's ready event. Both ends
// validate everything; the guest is untrusted to the host and the frames are
// bounded by the frame codec.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.h"

namespace sandboxd::vmboot {

inline constexpr int kVersion = 1;
// Bytes of host entropy per boot; the guest credits them to its input pool.
inline constexpr size_t kEntropyBytes = 64;
inline constexpr size_t kMaxEntropyBytes = 512;

struct BootConfig {
  std::string hostname = "sandbox";
  uint32_t pids_max = 1024;
  int64_t realtime_ns = 0;  // CLOCK_REALTIME of the host when sent
  std::string entropy;      // raw bytes, 1..kMaxEntropyBytes
};

// Whole frames (header included), ready to write to the port/socket.
std::string AwaitingConfigFrame();
std::string ConfigFrame(const BootConfig& c);

// The JSON payload of a CONTROL frame.
bool IsAwaitingConfig(std::string_view json);
Result<BootConfig> ParseConfig(std::string_view json);

}  // namespace sandboxd::vmboot

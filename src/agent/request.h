// Typed requests of the agent link's control channel (docs/agent-link.md).
// Raw JSON is validated here, at the edge; the rest of the agent only sees
// these structs. Every validation failure is an Error with code EINVAL.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/error.h"

namespace sandboxd::agent {

// A pseudo-terminal for the child (docs/agent-link.md, "Terminals").
struct PtySpec {
  uint16_t rows = 0;  // 1..kMaxPtyDimension
  uint16_t cols = 0;
  std::string term = "xterm-256color";  // TERM, unless env sets one
};
inline constexpr int kMaxPtyDimension = 10000;

struct SpawnRequest {
  std::vector<std::string> argv;  // non-empty; argv[0] is looked up on PATH
  std::vector<std::string> env;   // "K=V"
  std::string cwd = "/";
  uid_t uid = 0;
  gid_t gid = 0;
  // Channel ids; 0 means /dev/null.
  uint32_t stdin_channel = 0;
  uint32_t stdout_channel = 0;
  uint32_t stderr_channel = 0;
  // Set: the child's stdin/stdout/stderr are the slave of a new pty, whose
  // output goes to stdout_channel (non-zero) and input comes from
  // stdin_channel; stderr_channel is 0.
  std::optional<PtySpec> pty;
};

struct ResizeRequest {
  pid_t pid = 0;
  uint16_t rows = 0;  // 1..kMaxPtyDimension
  uint16_t cols = 0;
};

// configureNetwork (microVM only): the guest's NIC gets its sandbox address.
struct NetConfigRequest {
  std::string interface;  // a valid interface name (1..15 of [A-Za-z0-9_.-])
  uint32_t address = 0;   // IPv4, host byte order
  int prefix = 0;         // 1..30
  uint32_t gateway = 0;   // in address/prefix, not the address itself
};

struct KillRequest {
  pid_t pid = 0;
  int signal = 0;
};

// `msg` is the whole request object. Missing optional fields get defaults:
// env [], cwd "/", uid/gid of the agent, channels 0, no pty.
Result<SpawnRequest> ParseSpawn(const nlohmann::json& msg);
Result<KillRequest> ParseKill(const nlohmann::json& msg);
Result<ResizeRequest> ParseResize(const nlohmann::json& msg);
Result<NetConfigRequest> ParseNetConfig(const nlohmann::json& msg);

}  // namespace sandboxd::agent

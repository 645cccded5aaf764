// The agent's filesystem ops that answer with one JSON value: the path ops
// of WIRE.md §4.2 (except the streamed readFile/writeFile) and the file
// handle ops of §4.3. Each call is synchronous and may block on the disk (or,
// for fileLock, on another process): callers run them on worker threads,
// inside a CredScope of the request's credentials.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>

#include "agent/fs_util.h"
#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::agent::fs {

// Largest fileRead reply / fileWrite request, in bytes (before base64).
inline constexpr size_t kMaxHandleIo = 512 * 1024;
// Open handles per agent.
inline constexpr size_t kMaxHandles = 1024;

// Deviation from "the same params as WIRE.md": chown's target ids travel as
// `owner` / `group` (number or null, both required), because `uid` / `gid`
// carry the caller's credentials on every agent op.
//
// Every path is opened with UserOpen()/GuardFd() (fs_util.h): the agent's
// own /proc entries and magic links are refused.

// True for the ops RunPathOp() serves.
bool IsPathOp(std::string_view op);
// Runs one path op; `msg` is the whole request. The reply's `ok` value, or an
// Error with errno and a Deno-style message naming the path.
Result<nlohmann::json> RunPathOp(std::string_view op, const nlohmann::json& msg, const Cred& cred);

// Open file handles, agent-wide. Thread-safe.
class FileTable {
 public:
  struct Handle {
    UniqueFd fd;
    std::string path;                 // as given, for error messages
    std::mutex io;                    // serialises read/write/seek on the shared offset
    std::atomic<bool> closed{false};  // fileClose happened: a waiting fileLock gives up
  };

  // open / create: the reply value {"fileHandleId": H}.
  Result<nlohmann::json> Open(std::string_view op, const nlohmann::json& msg, const Cred& cred);
  // The other file* ops. fileLock may block until the lock is granted.
  Result<nlohmann::json> Run(std::string_view op, const nlohmann::json& msg);
  size_t size() const;

 private:
  Result<std::shared_ptr<Handle>> Get(const nlohmann::json& msg) const;

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Handle>> handles_;
  uint64_t next_id_ = 1;
};

bool IsHandleOp(std::string_view op);  // file* ops, not open/create

}  // namespace sandboxd::agent::fs

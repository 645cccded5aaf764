// Building blocks of the agent's filesystem ops (docs/agent-link.md,
// "Filesystem ops"): typed access to untrusted request params, filesystem
// credentials per thread, Deno-style errors, FileInfo JSON, ISO dates,
// base64 and POSIX path arithmetic. Everything here is thread-safe (no
// shared state) unless stated otherwise.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace sandboxd::agent::fs {

// Bounds on untrusted input.
inline constexpr size_t kMaxPathBytes = 4096;  // PATH_MAX
inline constexpr size_t kMaxListItems = 1024;  // exts / match / skip / exclude

// Validating accessors over one JSON object of request params. Each returns
// an EINVAL Error naming the key when the value has the wrong type. A key
// that is absent or JSON null counts as "not given" for optional values.
class Params {
 public:
  // `j` must outlive the Params. A non-object (e.g. a missing "options") is
  // treated as an empty object.
  explicit Params(const nlohmann::json& j) : j_(j) {}

  // A path: string, ≤ kMaxPathBytes, no NUL. Required.
  Result<std::string> Path(const char* key) const;
  Result<std::optional<std::string>> OptPath(const char* key) const;
  Result<std::optional<std::string>> OptString(const char* key, size_t max_len) const;
  Result<bool> Bool(const char* key, bool dflt) const;
  Result<std::optional<int64_t>> OptInt(const char* key, int64_t min, int64_t max) const;
  Result<int64_t> Int(const char* key, int64_t min, int64_t max) const;
  // An optional nested object ("options"); an empty object when absent/null.
  Result<Params> Object(const char* key) const;
  bool Has(const char* key) const;
  Result<std::optional<std::vector<std::string>>> OptStrings(const char* key) const;
  const nlohmann::json& Raw(const char* key) const;  // null json when absent

 private:
  const nlohmann::json& j_;
};

std::unexpected<Error> Invalid(std::string what);

// The credentials and working directory every filesystem op carries.
struct Cred {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string cwd = "/";  // absolute
};
Result<Cred> ParseCred(const nlohmann::json& msg);

// Sets the calling thread's fsuid/fsgid (raw syscalls: per thread, unlike
// glibc's set*id wrappers which apply to all threads) for its lifetime and
// restores 0/0 afterwards. With a non-zero fsuid the kernel drops the
// filesystem capabilities (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_CHOWN, ...) from
// the thread's effective set, so permission checks are the user's.
class CredScope {
 public:
  explicit CredScope(const Cred& cred);
  ~CredScope();
  CredScope(const CredScope&) = delete;
  CredScope& operator=(const CredScope&) = delete;
};
// Clears the calling thread's supplementary groups (raw syscall, per thread).
// Worker threads call this once when they start.
void DropSupplementaryGroups();

// The agent's own /proc entries (/proc/<agent pid or any of its thread ids>/,
// which /proc/self and /proc/thread-self lead to as well) are off limits to
// fs ops: the kernel lets a thread of the same thread group read and write
// them whatever its credentials (environ, maps, mem — writing /proc/1/mem
// would be code execution as root). Call on every fd an op opened from a
// user-supplied path, before using it: 0, or EACCES. Race-free, since it
// inspects what was actually opened.
int GuardFd(int fd);
// open(2) for user-supplied paths: refuses to traverse "magic" links
// (/proc/PID/fd/N, cwd, root, exe: through the agent's own they would reach
// whatever the agent holds open). Returns the fd, or -1 with errno set.
int UserOpen(const char* path, int flags, mode_t mode = 0);
// Opens `path` with O_PATH (plus O_NOFOLLOW unless `follow`) and guards it:
// the fd, or -errno. For ops that act on a path without reading it.
int OpenGuardedPath(const std::string& path, bool follow);

// Drops every capability from the calling thread's effective set except
// those filesystem ops need (DAC, ownership, setfsuid/setfsgid). In
// particular CAP_SYS_PTRACE goes, so /proc of other root processes is
// checked against the caller's fsuid.
void RestrictThreadCapabilities();

// `path` made absolute against cred.cwd (no normalisation, so the kernel sees
// the same components). An empty path stays empty (→ ENOENT from syscalls).
std::string Resolve(const Cred& cred, const std::string& path);

// Deno-style error: "No such file or directory (os error 2): open '/x'".
Error OsError(int err, std::string_view syscall, std::string_view path);
Error OsError2(int err, std::string_view syscall, std::string_view from, std::string_view to);

// FileInfo (WIRE.md §4.0) of a statx result; birthtime falls back to ctime.
nlohmann::json FileInfoJson(const struct statx& st);
// statx of `path` (follow or not) or of an fd (path "", AT_EMPTY_PATH).
int StatxPath(const std::string& path, bool follow, struct statx* st);
int StatxFd(int fd, struct statx* st);

// "2024-01-01T00:00:00.000Z" (years outside 0..9999 as ±YYYYYY like JS).
std::string IsoDate(int64_t sec, int64_t nsec);
// Parses what JS Date.prototype.toISOString() produces and common ISO 8601
// variants (date only; no/any fraction; Z or ±HH:MM). nullopt when invalid.
std::optional<timespec> ParseIsoDate(std::string_view s);
// A Date param: ISO string, or a number of seconds since the epoch (what
// Deno.utime accepts).
Result<timespec> DateParam(const Params& p, const char* key);

std::string Base64Encode(std::string_view bytes);
std::optional<std::string> Base64Decode(std::string_view text);

// POSIX path arithmetic as @std/path does it (purely lexical).
std::string NormalizePath(std::string_view path);
std::string JoinPath(std::string_view a, std::string_view b);  // normalised
std::string BaseName(std::string_view path);
bool IsAbsolute(std::string_view path);

}  // namespace sandboxd::agent::fs

// Pure helpers of `sandbox cp` (no I/O): argument parsing, path arithmetic on
// sandbox (POSIX) paths, and the progress line. Unit-tested in cp_util_test.cc.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sandboxd::cli {

// One side of a copy: a local path, or a path inside a sandbox.
struct Location {
  std::optional<std::string> sandbox;  // set for "ID:/path"
  std::string path;                    // never empty for a sandbox location ("." when "ID:")
  bool remote() const { return sandbox.has_value(); }
};

// "ID:PATH" is remote when ID is a valid sandbox id (WIRE §6.1), so local
// names containing ':' ("./a:b", "a:b" with a non-id prefix) stay local.
// "ID:" alone means the sandbox's working directory (".").
Location ParseLocation(std::string_view arg);

// True when the path has glob metacharacters (*, ?, [) — unescaped.
bool HasGlob(std::string_view path);

// Last component, ignoring trailing slashes ("/a/b/" → "b", "/" → "/").
std::string BaseName(std::string_view path);
// "a" + "b" → "a/b"; keeps a single slash ("a/" + "b" → "a/b").
std::string JoinPath(std::string_view dir, std::string_view name);
// `path` relative to `root` ("/r/x/y" under "/r" → "x/y"; root itself → "");
// nullopt when `path` is not under `root`.
std::optional<std::string> RelativeTo(std::string_view root, std::string_view path);

// "1.5 MiB", "512 B", "2.0 GiB".
std::string FormatBytes(std::uint64_t bytes);
// "  12.0 MiB / 256.0 MiB   4.7%   48.0 MiB/s  ETA 0:05" (ETA "--:--" before
// any rate is known). Fixed pieces, no bar art: fits in 80 columns.
std::string FormatProgress(std::uint64_t done, std::uint64_t total, double elapsed_seconds);

// Progress is shown when stderr is a terminal and the transfer is big.
inline constexpr std::uint64_t kProgressThreshold = 4ull << 20;
inline bool ShouldShowProgress(bool stderr_is_tty, std::uint64_t total) {
  return stderr_is_tty && total > kProgressThreshold;
}

}  // namespace sandboxd::cli

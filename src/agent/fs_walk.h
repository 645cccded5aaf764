// `walk` and `expandGlob` (WIRE.md §4.4) with the semantics of @std/fs 1.0
// walk()/expandGlob(): pre-order, root first, filters on the full path,
// symlinks reported unless followed, globs via @std/path globToRegExp.
// Deviation: a directory already on the current path (by dev/ino) is
// reported but not descended again, so symlink loops terminate when
// followSymlinks is set (@std/fs would recurse until maxDepth).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "agent/fs_util.h"
#include "common/error.h"

namespace sandboxd::agent::fs {

struct WalkEntry {
  std::string path;
  std::string name;
  bool is_file = false;
  bool is_directory = false;
  bool is_symlink = false;
};
nlohmann::json WalkEntryJson(const WalkEntry& e);

// Receives each entry in order; returning false stops the walk (cancelled).
using EntrySink = std::function<bool(const WalkEntry&)>;

// `msg` holds the WIRE params. Runs on the calling thread (inside a
// CredScope); errors carry errno and a Deno-style message.
Status Walk(const nlohmann::json& msg, const Cred& cred, const EntrySink& sink);
Status ExpandGlob(const nlohmann::json& msg, const Cred& cred, const EntrySink& sink);

// @std/path (posix) globToRegExp() and isGlob(); the result is ECMAScript
// regex source anchored with ^...$.
std::string GlobToRegExpSource(std::string_view glob, bool extended, bool globstar);
bool IsGlob(std::string_view s);

}  // namespace sandboxd::agent::fs

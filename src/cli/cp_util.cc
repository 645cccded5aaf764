#include "cli/cp_util.h"

#include <cstdio>

#include "client/wire.h"

namespace sandboxd::cli {

Location ParseLocation(std::string_view arg) {
  auto colon = arg.find(':');
  if (colon != std::string_view::npos && client::IsValidSandboxId(arg.substr(0, colon))) {
    std::string path(arg.substr(colon + 1));
    if (path.empty()) path = ".";
    return Location{std::string(arg.substr(0, colon)), std::move(path)};
  }
  return Location{std::nullopt, std::string(arg)};
}

bool HasGlob(std::string_view path) {
  for (size_t i = 0; i < path.size(); ++i) {
    char ch = path[i];
    if (ch == '\\') {
      ++i;  // escaped
      continue;
    }
    if (ch == '*' || ch == '?' || ch == '[') return true;
  }
  return false;
}

std::string BaseName(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  if (path == "/") return "/";
  auto slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

std::string JoinPath(std::string_view dir, std::string_view name) {
  if (dir.empty()) return std::string(name);
  std::string out(dir);
  if (out.back() != '/') out += '/';
  while (!name.empty() && name.front() == '/') name.remove_prefix(1);
  out += name;
  return out;
}

std::optional<std::string> RelativeTo(std::string_view root, std::string_view path) {
  while (root.size() > 1 && root.back() == '/') root.remove_suffix(1);
  if (path == root) return std::string();
  if (root == "/") {
    if (path.starts_with("/")) return std::string(path.substr(1));
    return std::nullopt;
  }
  if (path.size() > root.size() && path.starts_with(root) && path[root.size()] == '/') {
    return std::string(path.substr(root.size() + 1));
  }
  return std::nullopt;
}

std::string FormatBytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 4) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  return buf;
}

std::string FormatProgress(std::uint64_t done, std::uint64_t total, double elapsed_seconds) {
  double pct = total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0;
  if (pct > 100) pct = 100;
  std::string rate = "--";
  std::string eta = "--:--";
  if (elapsed_seconds > 0 && done > 0) {
    double per_s = static_cast<double>(done) / elapsed_seconds;
    rate = FormatBytes(static_cast<std::uint64_t>(per_s)) + "/s";
    if (done <= total) {
      auto left = static_cast<std::uint64_t>(static_cast<double>(total - done) / per_s + 0.5);
      char buf[32];
      if (left >= 3600) {
        std::snprintf(buf, sizeof buf, "%llu:%02llu:%02llu", static_cast<unsigned long long>(left / 3600),
                      static_cast<unsigned long long>(left / 60 % 60), static_cast<unsigned long long>(left % 60));
      } else {
        std::snprintf(buf, sizeof buf, "%llu:%02llu", static_cast<unsigned long long>(left / 60),
                      static_cast<unsigned long long>(left % 60));
      }
      eta = buf;
    }
  }
  char line[160];
  std::snprintf(line, sizeof line, "%10s / %-10s %5.1f%%  %12s  ETA %s", FormatBytes(done).c_str(),
                FormatBytes(total).c_str(), pct, rate.c_str(), eta.c_str());
  return line;
}

}  // namespace sandboxd::cli

#include "agent/request.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

namespace sandboxd::agent {
namespace {

using nlohmann::json;

// Generous, but keeps a hostile request from making the agent allocate
// per-element structures without bound (the frame itself is ≤ 1 MiB).
constexpr size_t kMaxStrings = 16 * 1024;

std::unexpected<Error> Invalid(std::string what) {
  return std::unexpected<Error>(Error{EINVAL, std::move(what)});
}

// Integer in [min, max], or nullopt when `j` is not such an integer.
std::optional<int64_t> GetInt(const json& j, int64_t min, int64_t max) {
  int64_t v;
  if (j.is_number_unsigned()) {
    uint64_t u = j.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    v = static_cast<int64_t>(u);
  } else if (j.is_number_integer()) {
    v = j.get<int64_t>();
  } else {
    return std::nullopt;
  }
  if (v < min || v > max) return std::nullopt;
  return v;
}

// Strings go to execve()/chdir() as C strings: an embedded NUL would
// silently truncate them, so it is rejected.
Result<std::vector<std::string>> GetStrings(const json& msg, const char* key, bool required) {
  std::vector<std::string> out;
  auto it = msg.find(key);
  if (it == msg.end()) {
    if (required) return Invalid(std::string("missing '") + key + "'");
    return out;
  }
  if (!it->is_array()) return Invalid(std::string("'") + key + "' must be an array of strings");
  if (it->size() > kMaxStrings) return Invalid(std::string("'") + key + "' has too many elements");
  out.reserve(it->size());
  for (const json& e : *it) {
    if (!e.is_string()) return Invalid(std::string("'") + key + "' must be an array of strings");
    const auto& s = e.get_ref<const std::string&>();
    if (s.find('\0') != std::string::npos) {
      return Invalid(std::string("'") + key + "' contains a NUL byte");
    }
    out.push_back(s);
  }
  return out;
}

Result<uint32_t> GetChannel(const json& msg, const char* key) {
  auto it = msg.find(key);
  if (it == msg.end()) return 0u;
  auto v = GetInt(*it, 0, std::numeric_limits<uint32_t>::max());
  if (!v) return Invalid(std::string("'") + key + "' must be a channel number");
  return static_cast<uint32_t>(*v);
}

// uid/gid (id_t)-1 means "unchanged" to setres[ug]id, so it is not a valid id.
Result<uint32_t> GetId(const json& msg, const char* key, uint32_t dflt) {
  auto it = msg.find(key);
  if (it == msg.end()) return dflt;
  auto v = GetInt(*it, 0, std::numeric_limits<uint32_t>::max() - 1);
  if (!v) return Invalid(std::string("'") + key + "' must be an integer id");
  return static_cast<uint32_t>(*v);
}

// TERM values are short names ("xterm-256color"); the bound only keeps a
// hostile request from growing the child's environment.
constexpr size_t kMaxTermLength = 128;

Result<uint16_t> GetDimension(const json& obj, const char* key) {
  auto it = obj.find(key);
  std::optional<int64_t> v;
  if (it != obj.end()) v = GetInt(*it, 1, kMaxPtyDimension);
  if (!v) {
    return Invalid(std::string("'") + key + "' must be an integer in 1.." +
                   std::to_string(kMaxPtyDimension));
  }
  return static_cast<uint16_t>(*v);
}

Result<PtySpec> ParsePty(const json& j) {
  if (!j.is_object()) return Invalid("'pty' must be an object {rows, cols, term?}");
  for (const auto& [key, value] : j.items()) {
    if (key != "rows" && key != "cols" && key != "term") {
      return Invalid("'pty' has an unknown field '" + key.substr(0, 64) + "'");
    }
  }
  PtySpec pty;
  auto rows = GetDimension(j, "rows");
  if (!rows) return std::unexpected(rows.error());
  auto cols = GetDimension(j, "cols");
  if (!cols) return std::unexpected(cols.error());
  pty.rows = *rows;
  pty.cols = *cols;
  if (auto it = j.find("term"); it != j.end()) {
    if (!it->is_string()) return Invalid("'term' must be a string");
    const auto& term = it->get_ref<const std::string&>();
    if (term.empty() || term.size() > kMaxTermLength || term.find('\0') != std::string::npos) {
      return Invalid("'term' must be a non-empty name of at most " +
                     std::to_string(kMaxTermLength) + " bytes");
    }
    pty.term = term;
  }
  return pty;
}

}  // namespace

Result<SpawnRequest> ParseSpawn(const json& msg) {
  SpawnRequest req;
  auto argv = GetStrings(msg, "argv", /*required=*/true);
  if (!argv) return std::unexpected(argv.error());
  if (argv->empty() || (*argv)[0].empty()) return Invalid("'argv' must name a command");
  req.argv = std::move(*argv);

  auto env = GetStrings(msg, "env", /*required=*/false);
  if (!env) return std::unexpected(env.error());
  req.env = std::move(*env);

  if (auto it = msg.find("cwd"); it != msg.end()) {
    if (!it->is_string()) return Invalid("'cwd' must be a string");
    req.cwd = it->get<std::string>();
    if (req.cwd.empty() || req.cwd.find('\0') != std::string::npos) {
      return Invalid("'cwd' must be a non-empty path");
    }
  }

  auto uid = GetId(msg, "uid", getuid());
  if (!uid) return std::unexpected(uid.error());
  auto gid = GetId(msg, "gid", getgid());
  if (!gid) return std::unexpected(gid.error());
  req.uid = *uid;
  req.gid = *gid;

  auto in = GetChannel(msg, "stdin");
  if (!in) return std::unexpected(in.error());
  auto out = GetChannel(msg, "stdout");
  if (!out) return std::unexpected(out.error());
  auto err = GetChannel(msg, "stderr");
  if (!err) return std::unexpected(err.error());
  req.stdin_channel = *in;
  req.stdout_channel = *out;
  req.stderr_channel = *err;
  // One channel carries one stream in one direction: merging stdout and
  // stderr (or reusing stdin) would make EOF and credit ambiguous.
  if ((*in != 0 && (*in == *out || *in == *err)) || (*out != 0 && *out == *err)) {
    return Invalid("stdin/stdout/stderr must use distinct channels");
  }
  if (auto it = msg.find("pty"); it != msg.end()) {
    auto pty = ParsePty(*it);
    if (!pty) return std::unexpected(pty.error());
    // The terminal merges the child's stdout and stderr into its one output.
    if (req.stderr_channel != 0) return Invalid("'stderr' must be 0 with a pty (output is merged)");
    if (req.stdout_channel == 0) return Invalid("'stdout' must name a channel with a pty");
    req.pty = std::move(*pty);
  }
  return req;
}

Result<KillRequest> ParseKill(const json& msg) {
  KillRequest req;
  auto pid_it = msg.find("pid");
  auto sig_it = msg.find("signal");
  std::optional<int64_t> pid;
  std::optional<int64_t> sig;
  if (pid_it != msg.end()) pid = GetInt(*pid_it, 1, std::numeric_limits<pid_t>::max());
  if (sig_it != msg.end()) sig = GetInt(*sig_it, 1, 64);
  if (!pid) return Invalid("'pid' must be a positive integer");
  if (!sig) return Invalid("'signal' must be an integer in 1..64");
  req.pid = static_cast<pid_t>(*pid);
  req.signal = static_cast<int>(*sig);
  return req;
}

Result<ResizeRequest> ParseResize(const json& msg) {
  ResizeRequest req;
  auto pid_it = msg.find("pid");
  std::optional<int64_t> pid;
  if (pid_it != msg.end()) pid = GetInt(*pid_it, 1, std::numeric_limits<pid_t>::max());
  if (!pid) return Invalid("'pid' must be a positive integer");
  req.pid = static_cast<pid_t>(*pid);
  auto rows = GetDimension(msg, "rows");
  if (!rows) return std::unexpected(rows.error());
  auto cols = GetDimension(msg, "cols");
  if (!cols) return std::unexpected(cols.error());
  req.rows = *rows;
  req.cols = *cols;
  return req;
}

namespace {
std::optional<uint32_t> GetIpv4(const json& msg, const char* key) {
  auto it = msg.find(key);
  if (it == msg.end() || !it->is_string()) return std::nullopt;
  in_addr a{};
  if (inet_pton(AF_INET, it->get_ref<const std::string&>().c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}
}  // namespace

Result<NetConfigRequest> ParseNetConfig(const json& msg) {
  NetConfigRequest req;
  auto name = msg.find("interface");
  if (name == msg.end() || !name->is_string()) return Invalid("'interface' must be a string");
  req.interface = name->get<std::string>();
  bool name_ok = !req.interface.empty() && req.interface.size() < 16 && req.interface != "." &&
                 req.interface != "..";
  for (char c : req.interface) {
    name_ok = name_ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-');
  }
  if (!name_ok) return Invalid("'interface' is not an interface name");
  auto address = GetIpv4(msg, "address");
  if (!address) return Invalid("'address' must be an IPv4 address");
  auto gateway = GetIpv4(msg, "gateway");
  if (!gateway) return Invalid("'gateway' must be an IPv4 address");
  auto prefix_it = msg.find("prefix");
  std::optional<int64_t> prefix;
  if (prefix_it != msg.end()) prefix = GetInt(*prefix_it, 1, 30);
  if (!prefix) return Invalid("'prefix' must be an integer 1..30");
  const uint32_t mask = ~uint32_t{0} << (32 - *prefix);
  if ((*address & mask) != (*gateway & mask) || *address == *gateway) {
    return Invalid("'gateway' must be another address of the same subnet");
  }
  req.address = *address;
  req.gateway = *gateway;
  req.prefix = static_cast<int>(*prefix);
  return req;
}

}  // namespace sandboxd::agent

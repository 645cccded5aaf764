#include "daemon/ingress/exposure.h"

#include <fcntl.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdlib>

namespace sandboxd::ingress {

namespace {

constexpr std::string_view kCrockford = "0123456789abcdefghjkmnpqrstvwxyz";
constexpr size_t kIdChars = 20;
constexpr size_t kTokenChars = 10;  // 50 random bits after the 'h'

bool IsCrockford(char c) { return kCrockford.find(c) != std::string_view::npos; }
bool IsLower(char c) { return c >= 'a' && c <= 'z'; }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// "sbx-loc-<20>-<suffix>" → route (label already lower case).
std::optional<HostRoute> ParseLabel(std::string_view label) {
  // sbx - rrr - <20> - suffix
  constexpr size_t kPrefix = 4 + 4 + kIdChars + 1;  // "sbx-" "rrr-" id "-"
  if (label.size() <= kPrefix || label.size() > 63) return std::nullopt;
  if (!label.starts_with("sbx-") || label[7] != '-' || label[kPrefix - 1] != '-')
    return std::nullopt;
  for (size_t i = 4; i < 7; ++i) {
    if (!IsLower(label[i])) return std::nullopt;
  }
  for (size_t i = 8; i < 8 + kIdChars; ++i) {
    if (!IsCrockford(label[i])) return std::nullopt;
  }
  std::string_view suffix = label.substr(kPrefix);
  bool token = suffix.size() == 1 + kTokenChars && suffix[0] == 'h' &&
               std::all_of(suffix.begin() + 1, suffix.end(), IsCrockford);
  if (!token && !PortSuffix(suffix)) return std::nullopt;
  HostRoute r;
  r.sandbox_id =
      "sbx_" + std::string(label.substr(4, 3)) + "_" + std::string(label.substr(8, kIdChars));
  r.suffix = std::string(suffix);
  return r;
}

// Drops ":port" (names here are never IPv6 literals) and one trailing dot.
std::string_view HostPart(std::string_view host) {
  if (auto colon = host.find(':'); colon != std::string_view::npos) host = host.substr(0, colon);
  if (host.ends_with('.')) host.remove_suffix(1);
  return host;
}

}  // namespace

std::optional<uint16_t> PortSuffix(std::string_view s) {
  if (s.empty() || s.size() > 5 || s[0] == '0') return std::nullopt;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v == 0 || v > 65535) return std::nullopt;
  return static_cast<uint16_t>(v);
}

std::string HostFor(const Naming& n, std::string_view sandbox_id, std::string_view suffix) {
  std::string label(sandbox_id);
  for (char& c : label) {
    if (c == '_') c = '-';
  }
  std::string out = label + "-" + std::string(suffix) + "." + n.domain;
  if (n.public_port != 0 && n.public_port != 443) out += ":" + std::to_string(n.public_port);
  return out;
}

std::optional<HostRoute> ParseIngressHost(std::string_view host, std::string_view domain) {
  std::string h = Lower(HostPart(host));
  std::string_view v = h;
  if (v.size() <= domain.size() + 1 || !v.ends_with(domain) ||
      v[v.size() - domain.size() - 1] != '.') {
    return std::nullopt;
  }
  v.remove_suffix(domain.size() + 1);
  if (v.find('.') != std::string_view::npos)
    return std::nullopt;  // exactly one label under the domain
  return ParseLabel(v);
}

std::optional<HostRoute> ParseExposedName(std::string_view name) {
  std::string h = Lower(HostPart(name));
  std::string_view v = h;
  return ParseLabel(v.substr(0, v.find('.')));
}

Result<std::shared_ptr<const SandboxHandles>> OpenSandboxHandles(pid_t init_pid) {
  if (init_pid <= 0) return FailMsg("the sandbox is not running");
  auto h = std::make_shared<SandboxHandles>();
  std::string dir = "/proc/" + std::to_string(init_pid);
  h->proc.Reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!h->proc) return FailErrno("open " + dir);
  h->netns.Reset(::openat(h->proc.get(), "ns/net", O_RDONLY | O_CLOEXEC));
  if (!h->netns) return FailErrno("open " + dir + "/ns/net");
  return std::shared_ptr<const SandboxHandles>(std::move(h));
}

Result<std::string> ExposureSet::Reserve() {
  if (names_.size() + ports_.size() >= kMaxNames) {
    return FailMsg("this sandbox already exposes " + std::to_string(kMaxNames) + " names");
  }
  for (;;) {
    unsigned char b[kTokenChars];
    if (RAND_bytes(b, sizeof b) != 1) std::abort();  // no CSPRNG: nothing sensible to do
    std::string token = "h";
    for (unsigned char c : b) token.push_back(kCrockford[c & 31]);
    if (names_.emplace(token, std::nullopt).second) return token;
  }
}

Result<std::string> ExposureSet::ExposePort(uint16_t port) {
  if (port == 0) return FailMsg("port must be 1..65535");
  if (!ports_.count(port) && names_.size() + ports_.size() >= kMaxNames) {
    return FailMsg("this sandbox already exposes " + std::to_string(kMaxNames) + " names");
  }
  ports_.insert(port);
  return std::to_string(port);
}

Status ExposureSet::Bind(std::string_view suffix, const ExposeTarget& target) {
  if ((target.port == 0) == (target.pid == 0)) return FailMsg("a target is a port or a pid");
  if (auto port = PortSuffix(suffix)) {
    if (target.port != *port) return FailMsg("the name is for port " + std::string(suffix));
    if (auto r = ExposePort(*port); !r) return std::unexpected(r.error());
    return {};
  }
  auto it = names_.find(suffix);
  if (it == names_.end())
    return FailMsg("the name was not handed out by expose/http for this sandbox");
  it->second = target;
  // A port exposed through a token is exposed: its port name routes too.
  if (target.port != 0) ports_.insert(target.port);
  return {};
}

std::optional<ExposeTarget> ExposureSet::Find(std::string_view suffix) const {
  if (auto port = PortSuffix(suffix)) {
    if (ports_.count(*port)) return ExposeTarget{*port, 0};
    return std::nullopt;
  }
  auto it = names_.find(suffix);
  if (it == names_.end()) return std::nullopt;
  return it->second;
}

Result<std::shared_ptr<const SandboxHandles>> ExposureSet::Handles(pid_t init_pid) {
  if (handles_) return handles_;
  if (guest_) {
    // Never the host's /proc/<QEMU>: its root is the host's, so a {pid}
    // would name a host process there.
    if (guest_ip_ == 0)
      return FailMsg("the microVM has no network (the daemon runs with --net off)");
    if (init_pid <= 0) return FailMsg("the sandbox is not running");
    auto h = std::make_shared<SandboxHandles>();
    h->guest_ip = guest_ip_;
    handles_ = std::move(h);
    return handles_;
  }
  auto h = OpenSandboxHandles(init_pid);
  if (!h) return h;
  handles_ = *h;
  return handles_;
}

}  // namespace sandboxd::ingress

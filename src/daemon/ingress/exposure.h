// What a sandbox exposes over the HTTP ingress (exposeHttp), and how the
// ingress names it.
//
// A name is "<label>.<domain>", label = "<sandbox id with '_' as '-'>-<suffix>",
// e.g. sbx-loc-0123456789abcdefghjk-8000.localhost. The suffix is either a
// port number ("8000": that port, once it is exposed) or a reserved token
// ("h" + 10 random chars) bound to a port or a process by the exposeHttp RPC.
// Tokens exist because the npm SDK asks for the name (REST expose/http with
// an empty body) before it says which port the name is for (the RPC), and
// returns that name to the user unchanged (WIRE.md §5.1).
//
// Everything here is plain state and pure functions: no I/O besides
// OpenSandboxHandles. ExposureSet lives on core::Sandbox and is used on the
// daemon's event-loop thread only; SandboxHandles are immutable and may be
// shared with any thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::ingress {

// How URLs handed to clients look. Set once at start-up.
struct Naming {
  std::string domain = "localhost";  // normalised (lower case, no trailing dot)
  uint16_t public_port = 0;          // port in the names we hand out; 0 or 443: none
  bool tls = true;                   // scheme of the "url" we report (the SDK always says https)
  // Why this sandbox cannot be exposed ("" when it can; set per request for
  // sandboxes of a backend the ingress does not reach).
  std::string unsupported;
};

// The part of a Host header the ingress routes on.
struct HostRoute {
  std::string sandbox_id;  // sbx_<region>_<20 chars>
  std::string suffix;      // "8000" or a reserved token
  bool operator==(const HostRoute&) const = default;
};

// "<id>-<suffix>.<domain>" plus ":<port>" unless the public port is 0 or 443.
std::string HostFor(const Naming& n, std::string_view sandbox_id, std::string_view suffix);

// A Host header value (any case, optional trailing dot, optional :port)
// → route; nullopt when it does not name a sandbox service under `domain`.
std::optional<HostRoute> ParseIngressHost(std::string_view host, std::string_view domain);

// The first label of a name we handed out ("sbx-loc-…-8000.localhost:8443"
// or just the label) → route. Does not check the domain (the RPC gets the
// name back from the client, which may not know ours).
std::optional<HostRoute> ParseExposedName(std::string_view name);

// A decimal port suffix ("1".."65535", no leading zero) → the port.
std::optional<uint16_t> PortSuffix(std::string_view suffix);

// Where an exposed name leads: a port, or the port a process listens on
// (looked up for every new upstream connection: the process may start
// listening after it was exposed, and may move).
struct ExposeTarget {
  uint16_t port = 0;  // nonzero: this port
  int64_t pid = 0;    // else: this process (pid inside the sandbox) or a descendant
  bool operator==(const ExposeTarget&) const = default;
};

// Kernel objects of a running sandbox the ingress needs: held open so a
// recycled pid can never point the ingress at another process.
struct SandboxHandles {
  UniqueFd proc;   // /proc/<init pid> (O_PATH): its root and its netns's TCP tables
  UniqueFd netns;  // its network namespace
  // A guest with a kernel of its own (microVM) is reached at its address
  // (host byte order) over its sandbox link, with a marked socket of the
  // daemon's namespace (net::GuestDialSocket); proc and netns are then unset:
  // the host's view of QEMU's process says nothing about the guest's
  // processes and sockets ({pid} targets are resolved by the guest's agent).
  uint32_t guest_ip = 0;
};
Result<std::shared_ptr<const SandboxHandles>> OpenSandboxHandles(pid_t init_pid);

class ExposureSet {
 public:
  static constexpr size_t kMaxNames = 256;

  // A fresh token suffix, reserved until Bind. Fails past kMaxNames.
  Result<std::string> Reserve();
  // Exposes `port` under its port suffix (idempotent); returns the suffix.
  Result<std::string> ExposePort(uint16_t port);
  // Binds `suffix` to `target`: a reserved token (again: rebinds), or a
  // port suffix equal to target.port. Fails for names never handed out.
  Status Bind(std::string_view suffix, const ExposeTarget& target);
  // Where `suffix` leads; nullopt when it is not exposed (unknown, or
  // reserved and not bound yet).
  std::optional<ExposeTarget> Find(std::string_view suffix) const;
  bool empty() const { return names_.empty(); }

  // Opened on first use while the sandbox runs (init_pid > 0), then kept.
  // For a guest: its address, or an error when it has none.
  Result<std::shared_ptr<const SandboxHandles>> Handles(pid_t init_pid);

  // Marks the sandbox as a guest with a kernel of its own (a microVM), at
  // `ip` (host byte order; 0: it has no network, and the ingress cannot reach
  // it). Set once as the sandbox starts, before any Handles().
  void SetGuest(uint32_t ip) {
    guest_ = true;
    guest_ip_ = ip;
  }
  bool guest() const { return guest_; }
  uint32_t guest_ip() const { return guest_ip_; }

 private:
  std::map<std::string, std::optional<ExposeTarget>, std::less<>>
      names_;                 // token → target (nullopt: reserved)
  std::set<uint16_t> ports_;  // exposed port suffixes
  std::shared_ptr<const SandboxHandles> handles_;
  bool guest_ = false;
  uint32_t guest_ip_ = 0;
};

}  // namespace sandboxd::ingress

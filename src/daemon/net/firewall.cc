#include "daemon/net/firewall.h"

#include <nftables/libnftables.h>
#include <sys/socket.h>

#include <cerrno>

#include "daemon/net/link.h"
#include "daemon/net/subnet.h"

namespace sandboxd::net {
namespace {

bool ValidTableName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z'))) return false;
  for (char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

// Names are validated before they get here, so quoting cannot be broken.
std::string Quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// `table inet <t> {}` + `delete table inet <t>` in one transaction removes the
// table whether or not it exists (nft 1.0.6 has no `destroy`).
std::string DeleteTableCommands(std::string_view table) {
  const std::string t(table);
  return "table inet " + t + " {}\ndelete table inet " + t + "\n";
}

std::string TableDefinition(const std::string& table, uint16_t proxy_port, uint16_t dns_port,
                            const std::string& guard_prefix) {
  const std::string proxy = std::to_string(proxy_port);
  const std::string dns = std::to_string(dns_port);
  const std::string mark = std::to_string(kGuestDialMark);
  const std::string guard = guard_prefix.empty() ? "" : Quoted(guard_prefix + "*");
  std::string s;
  s += "table inet " + table + " {\n";
  s += "  set ifaces { type ifname; }\n";
  s += "  set ifaddr { type ifname . ipv4_addr; }\n";
  s += "  set net_on { type ifname; }\n";

  // Before conntrack: spoofed or unexpected packets never create state.
  s += "  chain raw_prerouting {\n";
  s += "    type filter hook prerouting priority raw; policy accept;\n";
  s += "    iifname @ifaces jump sandbox_guard\n";
  if (!guard.empty()) s += "    iifname " + guard + " iifname != @ifaces drop\n";
  s += "  }\n";
  s += "  chain sandbox_guard {\n";
  s += "    meta nfproto ipv6 drop\n";
  s += "    iifname . ip saddr != @ifaddr drop\n";
  s += "    meta l4proto != { tcp, udp } drop\n";
  s += "  }\n";

  // `redirect` rewrites the destination to the primary address of the
  // incoming link (the host end, the sandbox's gateway); conntrack keeps the
  // original for SO_ORIGINAL_DST and un-NATs replies, resets and ICMP errors.
  s += "  chain nat_prerouting {\n";
  s += "    type nat hook prerouting priority dstnat; policy accept;\n";
  s += "    iifname != @ifaces return\n";
  s += "    meta l4proto tcp redirect to :" + proxy + "\n";
  s += "    udp dport 53 redirect to :" + dns + "\n";
  s += "    meta l4proto udp redirect\n";
  s += "  }\n";

  s += "  chain filter_input {\n";
  s += "    type filter hook input priority filter; policy accept;\n";
  s += "    iifname @ifaces jump sandbox_input\n";
  s += "    tcp dport " + proxy + " drop\n";
  s += "    udp dport " + dns + " drop\n";
  s += "  }\n";
  s += "  chain sandbox_input {\n";
  // Answers to the daemon's own connections into a guest (see the header).
  s += "    ct direction reply ct mark " + mark + " accept\n";
  s += "    tcp dport " + proxy + " iifname @net_on accept\n";
  s += "    tcp dport " + proxy + " reject with tcp reset\n";
  // Only queries the sandbox sent to port 53 (UDP to X:dns_port itself
  // was redirected keeping its port, and is refused like any other UDP).
  s += "    udp dport " + dns + " ct original proto-dst 53 accept\n";
  s += "    meta l4proto udp reject with icmp port-unreachable\n";
  s += "    drop\n";
  s += "  }\n";

  s += "  chain filter_output {\n";
  s += "    type filter hook output priority filter; policy accept;\n";
  s += "    oifname @ifaces meta mark " + mark + " ct mark set " + mark + "\n";
  s += "  }\n";

  s += "  chain filter_forward {\n";
  s += "    type filter hook forward priority filter; policy accept;\n";
  s += "    iifname @ifaces drop\n";
  s += "    oifname @ifaces drop\n";
  if (!guard.empty()) {
    s += "    iifname " + guard + " drop\n";
    s += "    oifname " + guard + " drop\n";
  }
  s += "  }\n";
  s += "}\n";
  return s;
}

Result<nft_ctx*> NewContext() {
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!ctx) return FailMsg("nft_ctx_new failed");
  if (nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0) {
    nft_ctx_free(ctx);
    return FailMsg("nft_ctx_buffer_output failed");
  }
  return ctx;
}

// Runs commands on `ctx` as one transaction.
Status Run(nft_ctx* ctx, const std::string& commands, std::string* output) {
  const int rc = nft_run_cmd_from_buffer(ctx, commands.c_str());
  // Reading a buffer also resets it for the next command.
  const char* out = nft_ctx_get_output_buffer(ctx);
  const char* err = nft_ctx_get_error_buffer(ctx);
  if (rc != 0) {
    std::string msg = err && *err ? err : "failed";
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return Fail(Error{EIO, "nft: " + msg});
  }
  if (output) *output = out ? out : "";
  return {};
}

std::string IfaddrElement(std::string_view ifname, uint32_t ip) {
  return "{ " + Quoted(ifname) + " . " + Ipv4ToString(ip) + " }";
}

}  // namespace

Result<UniqueFd> GuestDialSocket(int domain, int type) {
  UniqueFd fd(::socket(domain, type | SOCK_CLOEXEC, 0));
  if (!fd) return FailErrno("socket");
  const uint32_t mark = kGuestDialMark;
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    return FailErrno("setsockopt SO_MARK");
  }
  return fd;
}

Firewall::Firewall(nft_ctx* ctx, std::string table) : ctx_(ctx), table_(std::move(table)) {}

Firewall::~Firewall() { nft_ctx_free(ctx_); }

Result<std::unique_ptr<Firewall>> Firewall::Install(std::string table, uint16_t proxy_port,
                                                    uint16_t dns_port, std::string guard_prefix) {
  if (!ValidTableName(table)) return FailMsg("firewall: bad table name \"" + table + "\"");
  if (proxy_port == 0 || dns_port == 0) return FailMsg("firewall: ports must be set");
  if (!guard_prefix.empty() && !ValidIfname(guard_prefix)) {
    return FailMsg("firewall: bad guard prefix \"" + guard_prefix + "\"");
  }
  auto ctx = NewContext();
  if (!ctx) return std::unexpected(ctx.error());
  std::unique_ptr<Firewall> fw(new Firewall(*ctx, std::move(table)));
  const std::string commands = DeleteTableCommands(fw->table_) +
                               TableDefinition(fw->table_, proxy_port, dns_port, guard_prefix);
  std::lock_guard lock(fw->mu_);
  if (auto st = fw->RunLocked(commands); !st) {
    return std::unexpected(st.error().Wrap("installing table inet " + fw->table_));
  }
  return fw;
}

Status Firewall::RunLocked(const std::string& commands, std::string* output) {
  return Run(ctx_, commands, output);
}

Status Firewall::AddSandbox(std::string_view ifname, uint32_t sandbox_ip, bool outbound) {
  if (!ValidIfname(ifname)) return FailMsg("firewall: bad ifname \"" + std::string(ifname) + "\"");
  const std::string prefix = "add element inet " + table_ + " ";
  std::string c = prefix + "ifaddr " + IfaddrElement(ifname, sandbox_ip) + "\n";
  c += prefix + "ifaces { " + Quoted(ifname) + " }\n";
  if (outbound) c += prefix + "net_on { " + Quoted(ifname) + " }\n";
  std::lock_guard lock(mu_);
  if (auto st = RunLocked(c); !st) {
    return std::unexpected(st.error().Wrap("firewall: adding " + std::string(ifname)));
  }
  return {};
}

Status Firewall::SetOutbound(std::string_view ifname, bool outbound) {
  if (!ValidIfname(ifname)) return FailMsg("firewall: bad ifname \"" + std::string(ifname) + "\"");
  const std::string element = " net_on { " + Quoted(ifname) + " }\n";
  // `add` of an existing element is a no-op, so add-then-delete removes an
  // element whether or not it was there.
  std::string c = "add element inet " + table_ + element;
  if (!outbound) c += "delete element inet " + table_ + element;
  std::lock_guard lock(mu_);
  if (auto st = RunLocked(c); !st) {
    return std::unexpected(st.error().Wrap("firewall: setting outbound of " + std::string(ifname)));
  }
  return {};
}

Status Firewall::RemoveSandbox(std::string_view ifname, uint32_t sandbox_ip) {
  if (!ValidIfname(ifname)) return FailMsg("firewall: bad ifname \"" + std::string(ifname) + "\"");
  std::string c;
  for (const char* verb : {"add", "delete"}) {
    const std::string prefix = std::string(verb) + " element inet " + table_ + " ";
    c += prefix + "ifaces { " + Quoted(ifname) + " }\n";
    c += prefix + "net_on { " + Quoted(ifname) + " }\n";
    c += prefix + "ifaddr " + IfaddrElement(ifname, sandbox_ip) + "\n";
  }
  std::lock_guard lock(mu_);
  if (auto st = RunLocked(c); !st) {
    return std::unexpected(st.error().Wrap("firewall: removing " + std::string(ifname)));
  }
  return {};
}

Status Firewall::Uninstall() {
  std::lock_guard lock(mu_);
  if (auto st = RunLocked(DeleteTableCommands(table_)); !st) {
    return std::unexpected(st.error().Wrap("uninstalling table inet " + table_));
  }
  return {};
}

Status Firewall::DeleteTable(std::string_view table) {
  if (!ValidTableName(table))
    return FailMsg("firewall: bad table name \"" + std::string(table) + "\"");
  auto ctx = NewContext();
  if (!ctx) return std::unexpected(ctx.error());
  auto st = Run(*ctx, DeleteTableCommands(table), nullptr);
  nft_ctx_free(*ctx);
  if (!st) return std::unexpected(st.error().Wrap("deleting table inet " + std::string(table)));
  return {};
}

Result<std::string> Firewall::Dump() {
  std::string out;
  std::lock_guard lock(mu_);
  if (auto st = RunLocked("list table inet " + table_ + "\n", &out); !st) {
    return std::unexpected(st.error().Wrap("listing table inet " + table_));
  }
  return out;
}

}  // namespace sandboxd::net

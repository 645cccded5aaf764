#include "daemon/net/network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <sys/socket.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <fstream>
#include <map>
#include <spdlog/spdlog.h>
#include <sstream>
#include <thread>

#include "daemon/net/dns_server.h"
#include "daemon/net/firewall.h"
#include "daemon/net/link.h"
#include "daemon/net/name_resolver.h"
#include "daemon/net/sandbox_ca.h"
#include "daemon/net/sock_diag.h"
#include "daemon/net/subnet.h"
#include "daemon/net/tls_contexts.h"

namespace sandboxd::net {

namespace asio = boost::asio;

struct NetworkService::Impl {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::thread thread;
  std::unique_ptr<SubnetPool> pool;
  std::unique_ptr<Firewall> firewall;
  std::unique_ptr<NameResolver> resolver;
  std::shared_ptr<DnsServer> dns;
  std::unique_ptr<EgressProxy> proxy;
  std::shared_ptr<asio::ssl::context> upstream_tls;

  std::mutex reg_mu;
  std::map<uint32_t, SandboxEgress> registry;  // sandbox address → policy

  std::optional<SandboxEgress> Lookup(const asio::ip::address& a) {
    if (!a.is_v4()) return std::nullopt;
    std::lock_guard lk(reg_mu);
    auto it = registry.find(a.to_v4().to_uint());
    if (it == registry.end()) return std::nullopt;
    return it->second;
  }
};

NetworkService::NetworkService(NetworkOptions opts) : opts_(std::move(opts)), impl_(std::make_unique<Impl>()) {}

NetworkService::~NetworkService() {
  if (impl_->proxy) impl_->proxy->Stop();
  if (impl_->dns) impl_->dns->Stop();
  impl_->work.reset();
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  if (impl_->firewall) {
    if (auto st = impl_->firewall->Uninstall(); !st) spdlog::warn("network: removing firewall table: {}", st.error().message);
  }
  if (auto links = ListLinks("sx" + opts_.tag); links) {
    for (const auto& l : *links) (void)DeleteLink(l);
  }
}

std::string TableName(const std::string& tag) { return "sandboxd_" + tag; }

namespace {
// Another daemon (or anything else) using part of our range would make
// routes ambiguous: refuse to start rather than misroute sandbox traffic.
Status CheckRangeFree(const Ipv4Range& range, const std::string& own_prefix) {
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) != 0) return FailErrno("getifaddrs");
  uint32_t mask = range.prefix == 0 ? 0 : ~uint32_t{0} << (32 - range.prefix);
  Status st;
  for (ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    if (std::string_view(i->ifa_name).starts_with(own_prefix)) continue;
    uint32_t a = ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
    if ((a & mask) == (range.base & mask)) {
      st = FailMsg("address " + Ipv4ToString(a) + " on " + i->ifa_name + " lies in the sandbox range " +
                   Ipv4ToString(range.base) + "/" + std::to_string(range.prefix) +
                   " (another daemon?); choose another --net-range");
      break;
    }
  }
  ::freeifaddrs(ifs);
  return st;
}
}  // namespace

Result<std::unique_ptr<NetworkService>> NetworkService::Start(NetworkOptions opts) {
  if (opts.tag.empty() || opts.tag.size() > 6) return FailMsg("network tag must be 1-6 characters");
  auto range = ParseIpv4Range(opts.range);
  if (!range) return std::unexpected(range.error().Wrap("--net-range"));
  std::unique_ptr<NetworkService> svc(new NetworkService(opts));
  auto& impl = *svc->impl_;
  impl.pool = std::make_unique<SubnetPool>(*range);

  {  // what the sandbox's trust store starts from, when it gets a CA
    std::ifstream in(opts.system_ca_bundle, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    svc->system_bundle_ = ss.str();
  }

  // Interfaces a previous run of this daemon left behind.
  if (auto links = ListLinks("sx" + opts.tag); links) {
    for (const auto& l : *links) {
      spdlog::info("network: removing stale interface {}", l);
      (void)DeleteLink(l);
    }
  }

  SBX_TRY(CheckRangeFree(*range, "sx" + opts.tag));

  NameResolver::Options ro;
  ro.hosts_file = opts.hosts_file;
  ro.hosts_only = opts.hosts_only;
  auto resolver = NameResolver::Create(impl.io.get_executor(), ro);
  if (!resolver) return std::unexpected(resolver.error().Wrap("resolver"));
  impl.resolver = std::move(*resolver);

  auto tls = MakeUpstreamClientContext(opts.extra_ca_files);
  if (!tls) return std::unexpected(tls.error().Wrap("upstream TLS"));
  impl.upstream_tls = *tls;

  Impl* ip = &impl;
  auto lookup = [ip](const asio::ip::address& a) { return ip->Lookup(a); };
  EgressProxyOptions po;
  po.upstream_tls = impl.upstream_tls;
  impl.proxy = std::make_unique<EgressProxy>(impl.io, *impl.resolver, lookup, po);
  SBX_TRY(impl.proxy->Listen(asio::ip::tcp::endpoint(asio::ip::address_v4::any(), 0)));

  DnsServer::Options dopts;
  dopts.bind = asio::ip::udp::endpoint(asio::ip::address_v4::any(), 0);
  auto dns = DnsServer::Start(impl.io, dopts, *impl.resolver,
                              [ip](const asio::ip::address& a) -> std::shared_ptr<const AllowList> {
                                auto e = ip->Lookup(a);
                                if (!e) return nullptr;
                                e->stats->dns_queries++;
                                return e->policy->reachable_ptr();
                              });
  if (!dns) return std::unexpected(dns.error().Wrap("DNS server"));
  impl.dns = std::move(*dns);

  auto fw = Firewall::Install(TableName(opts.tag), impl.proxy->port(), impl.dns->port(), "sx" + opts.tag);
  if (!fw) return std::unexpected(fw.error().Wrap("firewall"));
  impl.firewall = std::move(*fw);

  impl.thread = std::thread([ip] { ip->io.run(); });
  spdlog::info("network: range {}, egress proxy :{}, resolver :{}, table inet {}", opts.range,
               impl.proxy->port(), impl.dns->port(), TableName(opts.tag));
  return svc;
}

uint16_t NetworkService::proxy_port() const { return impl_->proxy->port(); }
uint16_t NetworkService::dns_port() const { return impl_->dns->port(); }
asio::io_context& NetworkService::io() { return impl_->io; }
void NetworkService::SetObserver(std::function<void(const EgressEvent&)> fn) {
  impl_->proxy->SetObserver(std::move(fn));
}

Result<std::unique_ptr<NetworkAttachment>> NetworkService::Attach(
    int netns_fd, std::shared_ptr<const EgressPolicy> policy, const std::string& guest_tap) {
  auto block = impl_->pool->Allocate();
  if (!block) return FailMsg("the sandbox address range " + opts_.range + " is exhausted");
  std::unique_ptr<NetworkAttachment> a(new NetworkAttachment());
  a->service_ = this;
  a->block_ = *block;
  a->sandbox_ip_ = impl_->pool->SandboxIp(*block);
  a->gateway_ip_ = impl_->pool->HostIp(*block);
  char name[16];
  std::snprintf(name, sizeof name, "sx%s%x", opts_.tag.c_str(), *block);
  a->ifname_ = name;
  a->stats_ = std::make_shared<EgressStats>();
  a->policy_ = policy;
  a->guest_tap_ = guest_tap;
  a->netns_ = UniqueFd(::fcntl(netns_fd, F_DUPFD_CLOEXEC, 0));
  if (!a->netns_) {
    impl_->pool->Release(*block);
    return FailErrno("dup netns fd");
  }
  // Rules first: the link never exists without them.
  if (auto st = impl_->firewall->AddSandbox(a->ifname_, a->sandbox_ip_, policy->AnyOutbound()); !st) {
    impl_->pool->Release(*block);
    a->service_ = nullptr;
    return std::unexpected(st.error().Wrap("firewall"));
  }
  VethConfig vc;
  vc.host_ifname = a->ifname_;
  vc.host_ip = a->gateway_ip_;
  vc.sandbox_ip = a->sandbox_ip_;
  if (!guest_tap.empty()) {
    vc.sandbox_ifname = "uplink";  // beside the tap in QEMU's namespace; the guest's NIC is eth0
    vc.guest_tap = guest_tap;
  }
  if (auto st = CreateVeth(netns_fd, vc); !st) {
    (void)impl_->firewall->RemoveSandbox(a->ifname_, a->sandbox_ip_);
    impl_->pool->Release(*block);
    a->service_ = nullptr;
    return std::unexpected(st.error().Wrap("veth"));
  }
  {
    std::lock_guard lk(impl_->reg_mu);
    impl_->registry[a->sandbox_ip_] = SandboxEgress{policy, a->stats_};
  }
  return a;
}

Result<UniqueFd> NetworkService::ConnectAsSandbox(uint32_t sandbox_ip,
                                                  const std::string& sandbox_id,
                                                  const asio::ip::tcp::endpoint& dst) {
  const auto addr = asio::ip::address(asio::ip::address_v4(sandbox_ip));
  auto e = impl_->Lookup(addr);
  if (!e || e->policy->sandbox_id() != sandbox_id)
    return Fail(Error{ENETUNREACH, "the sandbox's network is gone"});
  if (!e->policy->AnyOutbound())
    return Fail(Error{ECONNREFUSED, "connection refused (no outbound access)"});
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp) != 0)
    return FailErrno("socketpair");
  UniqueFd mine(sp[0]);
  impl_->proxy->Adopt(UniqueFd(sp[1]), addr, dst, sandbox_id);
  return mine;
}

void NetworkService::Detach(NetworkAttachment& a) {
  {
    std::lock_guard lk(impl_->reg_mu);
    impl_->registry.erase(a.sandbox_ip_);
  }
  // The link first: the rules outlive it, never the other way round.
  if (auto st = DeleteLink(a.ifname_); !st) spdlog::warn("network: deleting {}: {}", a.ifname_, st.error().message);
  // Then whatever the daemon still holds open with the sandbox (a killed VM
  // never closes its end; sock_diag.h).
  if (auto n = AbortTcpConnectionsTo(a.sandbox_ip_); !n) {
    spdlog::warn("network: aborting the connections of {}: {}", a.ifname_, n.error().message);
  } else if (*n > 0) {
    spdlog::debug("network: aborted {} connection(s) of {}", *n, a.ifname_);
  }
  if (auto st = impl_->firewall->RemoveSandbox(a.ifname_, a.sandbox_ip_); !st) {
    spdlog::warn("network: firewall elements of {}: {}", a.ifname_, st.error().message);
  }
  impl_->pool->Release(a.block_);
}

Status NetworkService::UpdatePolicy(NetworkAttachment& a, std::shared_ptr<const EgressPolicy> p) {
  SBX_TRY(impl_->firewall->SetOutbound(a.ifname_, p->AnyOutbound()));
  std::lock_guard lk(impl_->reg_mu);
  impl_->registry[a.sandbox_ip_] = SandboxEgress{p, a.stats_};
  return {};
}

NetworkAttachment::~NetworkAttachment() {
  if (service_) service_->Detach(*this);
}

std::shared_ptr<const EgressPolicy> NetworkAttachment::policy() const {
  std::lock_guard lk(mu_);
  return policy_;
}

Status NetworkAttachment::SetAllowNet(const std::vector<std::string>& allow_net) {
  std::lock_guard lk(mu_);
  auto next = policy_->WithAllowNet(allow_net);
  if (!next) return std::unexpected(next.error());
  SBX_TRY(service_->UpdatePolicy(*this, *next));
  policy_ = *next;
  return {};
}

std::string NetworkAttachment::sandbox_ip() const { return Ipv4ToString(sandbox_ip_); }

std::shared_ptr<asio::ssl::context> NetworkAttachment::FetchTlsContext() {
  std::lock_guard lk(mu_);
  if (fetch_tls_) return fetch_tls_;
  auto ctx = MakeUpstreamClientContext(service_->opts_.extra_ca_files);
  if (!ctx) return nullptr;
  if (policy_->ca()) {
    boost::system::error_code ec;
    (*ctx)->add_certificate_authority(asio::buffer(policy_->ca()->CertPem()), ec);
  }
  fetch_tls_ = *ctx;
  return fetch_tls_;
}

}  // namespace sandboxd::net

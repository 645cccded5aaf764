// sandboxd: `serve` (the default) runs the daemon; `token create` mints an org
// token. Flags are parsed here; everything else lives in the libraries.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "daemon/api/http_server.h"
#include "daemon/core/config.h"
#include "daemon/core/ids.h"
#include "daemon/core/manager.h"
#include "daemon/core/store.h"
#include "daemon/ingress/daemon_ingress.h"
#include "daemon/isolation/namespaces/namespaces_backend.h"
#include "daemon/isolation/select_backend.h"
#include "daemon/net/network.h"
#include "daemon/ssh/gateway.h"

namespace fs = std::filesystem;
using namespace sandboxd;

namespace {

std::string ExeDir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

sandboxd::Result<std::unique_ptr<core::Store>> OpenStore(const std::string& data_dir) {
  std::error_code ec;
  fs::create_directories(data_dir, ec);
  if (ec) return FailMsg("creating data dir " + data_dir + ": " + ec.message());
  ::chmod(data_dir.c_str(), 0700);
  return core::Store::Open(data_dir + "/sandboxd.db");
}

struct ServeFlags {
  std::string listen = "127.0.0.1:8080";
  std::string data_dir = "/var/lib/sandboxd";
  std::string region = "loc";
  std::string isolation = "auto";
  std::string image;
  std::string agent;
  std::string vm_kernel, vm_initrd, vm_rootfs;  // microvm; default: ../image/vm/ beside the binary
  bool vm_debug_console = false;
  std::string vm_snapshot = "on";
  int session_grace_ms = 1000;
  size_t max_sandboxes = 256;
  std::string max_lifetime;
  std::string log_level = "info";
  std::string net = "on";
  std::string net_range = "10.89.0.0/16";
  std::string egress_hosts_file;  // test only
  bool egress_hosts_only = false;  // test only
  std::vector<std::string> egress_extra_ca;  // test only
  ingress::IngressFlags ingress;  // exposeHttp
  std::string ssh_listen;    // empty: no SSH gateway
  std::string ssh_hostname;  // what exposeSsh reports (default: the --ssh-listen host)
};

// "HOST:PORT" or "[V6]:PORT" → (host, port).
std::optional<std::pair<std::string, uint16_t>> SplitHostPort(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  std::string host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string port_text = s.substr(colon + 1);
  if (port_text.empty() || port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  int port = std::atoi(port_text.c_str());
  if (port > 65535) return std::nullopt;
  return std::make_pair(host, static_cast<uint16_t>(port));
}

int Serve(const ServeFlags& f) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("sandboxd"));
  spdlog::set_level(spdlog::level::from_str(f.log_level));
  if (!core::IsValidRegion(f.region)) {
    std::fprintf(stderr, "sandboxd: --region must be three lower-case letters (got '%s')\n", f.region.c_str());
    return 2;
  }
  if (f.isolation != "auto" && f.isolation != "namespaces" && f.isolation != "microvm") {
    std::fprintf(stderr, "sandboxd: --isolation %s is not available (supported: auto, namespaces, microvm)\n",
                 f.isolation.c_str());
    return 2;
  }
  auto colon = f.listen.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "sandboxd: --listen must be HOST:PORT\n");
    return 2;
  }
  std::string host = f.listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = std::atoi(f.listen.c_str() + colon + 1);
  if (port < 0 || port > 65535) {
    std::fprintf(stderr, "sandboxd: invalid port in --listen\n");
    return 2;
  }
  core::ManagerOptions opts;
  opts.region = f.region;
  opts.session_grace = std::chrono::milliseconds(f.session_grace_ms);
  opts.max_sandboxes = f.max_sandboxes;
  if (!f.max_lifetime.empty()) {
    auto ms = core::ParseDurationMs(f.max_lifetime);
    if (!ms) {
      std::fprintf(stderr, "sandboxd: --max-lifetime must be a duration like 30m or 2h\n");
      return 2;
    }
    opts.max_lifetime_ms = *ms;
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "sandboxd: must run as root (it creates namespaces, cgroups and mounts)\n");
    return 1;
  }

  {  // Every proxied connection costs descriptors: take all the system allows.
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &rl);
    }
  }
  auto store = OpenStore(f.data_dir);
  if (!store) {
    std::fprintf(stderr, "sandboxd: %s\n", store.error().message.c_str());
    return 1;
  }
  // Sandboxes do not outlive their daemon: records a previous run left live
  // are marked stopped, and the backend reaps what they left on the host.
  auto stale = (*store)->StopAllLive(core::SystemNowMs(), "daemon restarted");
  if (!stale) {
    std::fprintf(stderr, "sandboxd: %s\n", stale.error().message.c_str());
    return 1;
  }

  isolation::NamespacesConfig ns;
  std::string exe_dir = ExeDir();
  ns.rootfs_dir = f.image.empty() ? exe_dir + "/../image/rootfs" : f.image;
  ns.agent_path = f.agent.empty() ? exe_dir + "/sandbox-agent" : f.agent;
  ns.state_dir = f.data_dir + "/sandboxes";
  // One cgroup parent per data dir: a daemon reaps whatever is under its
  // parent at start, so two daemons on one host (tests do that) must not share one.
  std::error_code canon_ec;
  auto canonical = fs::weakly_canonical(f.data_dir, canon_ec).string();
  ns.cgroup_parent = "sandboxd-" + core::Sha256Hex(canon_ec ? f.data_dir : canonical).substr(0, 12);
  std::error_code ec;
  fs::create_directories(ns.state_dir, ec);
  if (!fs::exists(ns.rootfs_dir + "/usr/bin/bash")) {
    std::fprintf(stderr, "sandboxd: no base image at %s (build it with scripts/build-image %s)\n",
                 ns.rootfs_dir.c_str(), ns.rootfs_dir.c_str());
    return 1;
  }
  // The microVM backend boots scripts/vm/build-all's files and shares the
  // state dir and cgroup parent (each backend reaps what the other left).
  isolation::MicroVmConfig vm;
  const std::string vm_dir = exe_dir + "/../image/vm";
  vm.kernel = f.vm_kernel.empty() ? vm_dir + "/vmlinux" : f.vm_kernel;
  vm.initrd = f.vm_initrd.empty() ? vm_dir + "/initrd" : f.vm_initrd;
  vm.rootfs_image = f.vm_rootfs.empty() ? vm_dir + "/rootfs.erofs" : f.vm_rootfs;
  vm.state_dir = ns.state_dir;
  vm.scratch_template = f.data_dir + "/vm/scratch.img";
  vm.cgroup_parent = ns.cgroup_parent;
  vm.debug_console = f.vm_debug_console;
  if (f.vm_snapshot != "on" && f.vm_snapshot != "off") {
    std::fprintf(stderr, "sandboxd: --vm-snapshot must be on or off\n");
    return 2;
  }
  vm.snapshot = f.vm_snapshot == "on";
  vm.snapshot_dir = f.data_dir + "/vm/snapshots";
  vm.snapshot_memory_mb = core::kDefaultMemoryMb;
  vm.snapshot_network = f.net == "on";
  auto backends = isolation::MakeBackends(f.isolation, ns, vm);
  if (!backends) {
    std::fprintf(stderr, "sandboxd: isolation %s: %s\n", f.isolation.c_str(), backends.error().message.c_str());
    return 1;
  }
  // Each record says which backend ran it; that backend reaps it. Both
  // backends share the state dir and the cgroup parent and reap everything
  // there that is not live, so a sandbox of a backend this run lacks (or of a
  // record from before the column) is still reaped, by the other one.
  if (!stale->empty()) {
    std::map<std::string, size_t> per_backend;
    for (const auto& s : *stale) ++per_backend[s.isolation.empty() ? "unrecorded" : s.isolation];
    for (const auto& [name, n] : per_backend) {
      bool held = backends->Find(name) != nullptr;
      spdlog::info("marked {} {} sandboxes of a previous run as stopped{}", n, name,
                   held ? "" : " (reaped by the backends this run has)");
    }
  }
  for (const auto& [name, b] : backends->by_name) b->ReapStale();
  for (const auto& [name, b] : backends->by_name) b->Warm();

  // Outbound networking: one veth per sandbox, the firewall table, the
  // egress proxy and the resolver. Tagged per data dir like the cgroups.
  std::unique_ptr<net::NetworkService> network;
  if (f.net == "on") {
    net::NetworkOptions no;
    no.range = f.net_range;
    no.tag = core::Sha256Hex(canon_ec ? f.data_dir : canonical).substr(0, 6);
    no.hosts_file = f.egress_hosts_file;
    no.hosts_only = f.egress_hosts_only;
    no.extra_ca_files = f.egress_extra_ca;
    no.system_ca_bundle = ns.rootfs_dir + "/etc/ssl/certs/ca-certificates.crt";
    if (!no.hosts_file.empty() || !no.extra_ca_files.empty()) {
      spdlog::warn("test-only egress settings are on (hosts file '{}', {} extra upstream CAs)", no.hosts_file,
                   no.extra_ca_files.size());
    }
    auto svc = net::NetworkService::Start(no);
    if (!svc) {
      std::fprintf(stderr, "sandboxd: network: %s\n", svc.error().message.c_str());
      return 1;
    }
    network = std::move(*svc);
  } else if (f.net != "off") {
    std::fprintf(stderr, "sandboxd: --net must be on or off\n");
    return 2;
  }

  std::optional<std::pair<std::string, uint16_t>> ssh_listen;
  if (!f.ssh_listen.empty()) {
    ssh_listen = SplitHostPort(f.ssh_listen);
    if (!ssh_listen) {
      std::fprintf(stderr, "sandboxd: --ssh-listen must be HOST:PORT\n");
      return 2;
    }
  }

  // Declared before the loop: lookups the ingress queued on the loop hold
  // the ingress's executors, so the loop must drop them first.
  std::unique_ptr<ingress::IngressServer> ingress_server;
  std::string ingress_url, ingress_ca;
  boost::asio::io_context io(1);
  const std::string default_isolation = backends->default_name;
  core::Manager mgr(io, **store, std::move(*backends), opts);
  mgr.SetNetwork(network.get());
  api::HttpServer server(io, mgr, **store);
  if (!f.ingress.listen.empty()) {
    auto ig = ingress::StartDaemonIngress(f.ingress, f.data_dir, io, mgr);
    if (!ig) {
      std::fprintf(stderr, "sandboxd: %s\n", ig.error().message.c_str());
      return 1;
    }
    server.SetIngressNaming(ig->naming);
    ingress_url = ig->url;
    ingress_ca = ig->ca_path;
    ingress_server = std::move(ig->server);
  }
  // The SSH gateway (exposeSsh); destroyed before the loop's objects, after it stopped.
  std::unique_ptr<ssh::Gateway> ssh_gateway;
  if (ssh_listen) {
    ssh::GatewayOptions so;
    so.listen_host = ssh_listen->first;
    so.listen_port = ssh_listen->second;
    so.hostname = f.ssh_hostname;
    so.host_key_path = f.data_dir + "/ssh_host_ed25519_key";
    auto gw = ssh::Gateway::Start(io, mgr, so);
    if (!gw) {
      std::fprintf(stderr, "sandboxd: %s\n", gw.error().message.c_str());
      return 1;
    }
    ssh_gateway = std::move(*gw);
    server.SetExposeSsh([g = ssh_gateway.get()](const std::string& org, const std::string& id) {
      return g->Expose(org, id);
    });
  }
  auto ep = server.Listen(host, static_cast<uint16_t>(port));
  if (!ep) {
    std::fprintf(stderr, "sandboxd: %s\n", ep.error().message.c_str());
    return 1;
  }
  std::string addr = ep->address().is_v6() ? "[" + ep->address().to_string() + "]" : ep->address().to_string();
  std::printf("sandboxd listening on http://%s:%u\n", addr.c_str(), ep->port());
  if (ingress_server) {
    std::printf("sandboxd ingress on %s\n", ingress_url.c_str());
    if (!ingress_ca.empty()) std::printf("sandboxd ingress CA certificate: %s\n", ingress_ca.c_str());
  }
  if (ssh_gateway) {
    auto sep = ssh_gateway->endpoint();
    std::string saddr = sep.address().is_v6() ? "[" + sep.address().to_string() + "]" : sep.address().to_string();
    std::printf("sandboxd ssh on %s:%u\n", saddr.c_str(), sep.port());
  }
  std::fflush(stdout);
  spdlog::info("region {}, isolation {}, data dir {}, network {}", f.region, default_isolation, f.data_dir,
               network ? f.net_range : std::string("off"));

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("signal {}: stopping every sandbox", sig);
    server.Stop();
    if (ingress_server) ingress_server->Stop();
    if (ssh_gateway) ssh_gateway->Stop();
    mgr.Shutdown([&io] { io.stop(); });
  });
  io.run();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"sandboxd: isolated Linux sandboxes on demand, wire-compatible with @deno/sandbox"};
  app.require_subcommand(0, 1);
  ServeFlags f;
  auto add_serve_flags = [&f](CLI::App* c) {
    c->add_option("--listen", f.listen, "HOST:PORT to serve the API on (port 0 picks a free one)");
    c->add_option("--data-dir", f.data_dir, "state: SQLite store, per-sandbox writable layers");
    c->add_option("--region", f.region, "the region this daemon serves (three lower-case letters)");
    c->add_option("--isolation", f.isolation,
                  "the default backend: auto (microvm where a probe VM boots under KVM, else namespaces) | "
                  "namespaces | microvm; a create may ask for the other one (config \"isolation\")");
    c->add_option("--image", f.image, "base root filesystem (default: ../image/rootfs beside the binary)");
    c->add_option("--agent", f.agent, "static sandbox-agent binary (default: beside sandboxd)");
    c->add_option("--vm-kernel", f.vm_kernel, "microvm: guest kernel (default: ../image/vm/vmlinux beside the binary)");
    c->add_option("--vm-initrd", f.vm_initrd, "microvm: initramfs with the agent (default: ../image/vm/initrd)");
    c->add_option("--vm-rootfs", f.vm_rootfs, "microvm: read-only root image (default: ../image/vm/rootfs.erofs)");
    c->add_option("--vm-snapshot", f.vm_snapshot,
                  "microvm: on | off: sandboxes of the default size resume from a snapshot of a booted VM "
                  "(made once into <data-dir>/vm/snapshots) instead of booting")
        ->capture_default_str();
    c->add_flag("--vm-debug-console", f.vm_debug_console,
                "microvm: the guest's console into <data-dir>/sandboxes/<id>/qemu.log (removed with the sandbox)");
    c->add_option("--session-grace-ms", f.session_grace_ms, "how long a session sandbox outlives its last client");
    c->add_option("--max-sandboxes", f.max_sandboxes, "live sandboxes before create answers 503");
    c->add_option("--max-lifetime", f.max_lifetime, "cap on a timed sandbox's lifetime, e.g. 2h (default: none)");
    c->add_option("--log-level", f.log_level, "trace | debug | info | warn | error");
    c->add_option("--net", f.net, "on | off: outbound networking through the egress proxy (off: loopback only)");
    c->add_option("--net-range", f.net_range, "IPv4 range for sandbox links, one /30 each (one range per daemon)");
    c->add_option("--egress-hosts-file", f.egress_hosts_file,
                  "TEST ONLY: hosts-format file the egress resolver answers from");
    c->add_flag("--egress-hosts-only", f.egress_hosts_only,
                "TEST ONLY: names not in --egress-hosts-file do not exist");
    c->add_option("--egress-extra-ca", f.egress_extra_ca, "TEST ONLY: extra CA file trusted for upstreams");
    c->add_option("--ingress-listen", f.ingress.listen,
                  "HOST:PORT of the HTTP ingress for exposeHttp (port 0 picks a free one; default: none)");
    c->add_option("--ingress-domain", f.ingress.domain, "exposed services are <sandbox>-<port>.DOMAIN");
    c->add_option("--ingress-tls", f.ingress.tls,
                  "local-ca (a CA created once in the data dir) | off; --ingress-tls-cert wins");
    c->add_option("--ingress-tls-cert", f.ingress.tls_cert, "PEM certificate chain for the ingress");
    c->add_option("--ingress-tls-key", f.ingress.tls_key, "PEM key of --ingress-tls-cert");
    c->add_option("--ingress-public-port", f.ingress.public_port,
                  "port in exposed URLs (default: the bound one; 443 is left out)");
    c->add_option("--ingress-connect-timeout", f.ingress.connect_timeout,
                  "connecting to an exposed port (then 502), e.g. 5s");
    c->add_option("--ingress-response-timeout", f.ingress.response_timeout,
                  "waiting for an exposed service's response head (then 504), e.g. 60s");
    c->add_option("--ssh-listen", f.ssh_listen,
                  "HOST:PORT of the SSH gateway for exposeSsh (port 0 picks a free one; default: no gateway)");
    c->add_option("--ssh-hostname", f.ssh_hostname, "host name exposeSsh reports (default: the --ssh-listen host)");
  };
  auto* serve = app.add_subcommand("serve", "run the daemon (the default)");
  add_serve_flags(serve);
  add_serve_flags(&app);  // `sandboxd --listen ...` works like `sandboxd serve --listen ...`

  auto* token = app.add_subcommand("token", "manage API tokens");
  token->require_subcommand(1);
  auto* create = token->add_subcommand("create", "create an org token and print it (last line)");
  std::string org;
  std::string token_dir = "/var/lib/sandboxd";
  create->add_option("--org", org, "the organisation the token belongs to")->required();
  create->add_option("--data-dir", token_dir, "the daemon's data dir");

  CLI11_PARSE(app, argc, argv);

  if (create->parsed()) {
    if (org.empty() || org.size() > 128) {
      std::fprintf(stderr, "sandboxd: --org must be 1..128 characters\n");
      return 2;
    }
    auto store = OpenStore(token_dir);
    if (!store) {
      std::fprintf(stderr, "sandboxd: %s\n", store.error().message.c_str());
      return 1;
    }
    auto t = (*store)->CreateToken(org);
    if (!t) {
      std::fprintf(stderr, "sandboxd: %s\n", t.error().message.c_str());
      return 1;
    }
    std::printf("org: %s (the token is shown once; only its hash is stored)\n%s\n", org.c_str(), t->c_str());
    return 0;
  }
  return Serve(f);
}

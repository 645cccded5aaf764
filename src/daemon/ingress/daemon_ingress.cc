#include "daemon/ingress/daemon_ingress.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <nlohmann/json.hpp>

#include "daemon/core/config.h"

namespace sandboxd::ingress {

namespace {

// Lower case, no trailing dot, DNS letters/digits/hyphens in 1..63-char
// labels; "" when not a usable domain.
std::string NormalizeDomain(std::string_view d) {
  if (d.ends_with('.')) d.remove_suffix(1);
  if (d.empty() || d.size() > 200) return {};
  std::string out;
  size_t label = 0;
  for (char c : d) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c == '.') {
      if (label == 0 || out.back() == '-') return {};
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && label > 0)) {
      if (++label > 63) return {};
    } else {
      return {};
    }
    out.push_back(c);
  }
  if (label == 0 || out.back() == '-') return {};
  return out;
}

Result<std::chrono::milliseconds> Duration(const std::string& flag, const std::string& v) {
  auto ms = core::ParseDurationMs(v);
  if (!ms) return FailMsg(flag + " must be a duration like 5s or 2m (got '" + v + "')");
  return std::chrono::milliseconds(*ms);
}

}  // namespace

RouteFn ManagerRouter(boost::asio::io_context& loop, core::Manager& mgr) {
  return [&loop, &mgr](const HostRoute& r, std::function<void(RouteResult)> done) {
    boost::asio::post(loop, [&mgr, r, done = std::move(done)] {
      auto sb = mgr.FindRunningAnyOrg(r.sandbox_id);
      if (!sb) {
        return done(std::unexpected(
            RouteError{404, "SANDBOX_NOT_FOUND",
                       "sandbox " + r.sandbox_id + " is not running (unknown, or ended)"}));
      }
      auto target = sb->exposures().Find(r.suffix);
      if (!target) {
        std::string what = PortSuffix(r.suffix) ? "port " + r.suffix : "name " + r.suffix;
        return done(std::unexpected(RouteError{
            404, "NOT_EXPOSED",
            "sandbox " + r.sandbox_id + " does not expose " + what + " (see sandbox.exposeHttp)"}));
      }
      auto handles = sb->exposures().Handles(sb->init_pid());
      if (!handles) {
        return done(std::unexpected(
            RouteError{502, "SANDBOX_UNREACHABLE",
                       "sandbox " + r.sandbox_id + ": " + handles.error().message}));
      }
      if (target->pid == 0 || !sb->exposures().guest()) {
        return done(Upstream{r.sandbox_id, *handles, *target});
      }
      // The guest's process table is the guest kernel's: ask its agent which
      // port the process (or a descendant) listens on.
      const int64_t pid = target->pid;
      sb->link().Call(
          "listeningPort", {{"pid", pid}},
          [id = r.sandbox_id, h = *handles, done](Result<nlohmann::json> port) {
            if (!port || !port->is_number_unsigned() || port->get<uint64_t>() == 0 ||
                port->get<uint64_t>() > 65535) {
              const bool gone = !port && port.error().code == ESRCH;
              const std::string why = port ? "bad answer from the agent" : port.error().message;
              return done(std::unexpected(RouteError{502, gone ? "PROCESS_EXITED" : "NOT_LISTENING",
                                                     "sandbox " + id + ": " + why}));
            }
            done(Upstream{id, h, ExposeTarget{static_cast<uint16_t>(port->get<uint64_t>()), 0}});
          });
    });
  };
}

Result<DaemonIngress> StartDaemonIngress(const IngressFlags& flags, const std::string& data_dir,
                                         boost::asio::io_context& loop, core::Manager& mgr) {
  auto colon = flags.listen.rfind(':');
  if (colon == std::string::npos) return FailMsg("--ingress-listen must be HOST:PORT");
  std::string host = flags.listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = std::atoi(flags.listen.c_str() + colon + 1);
  if (port < 0 || port > 65535) return FailMsg("--ingress-listen: invalid port");
  std::string domain = NormalizeDomain(flags.domain);
  if (domain.empty())
    return FailMsg("--ingress-domain must be a DNS name like localhost or sbx.example.com");
  if (flags.public_port < 0 || flags.public_port > 65535)
    return FailMsg("--ingress-public-port must be 0..65535");
  auto connect_timeout = Duration("--ingress-connect-timeout", flags.connect_timeout);
  if (!connect_timeout) return std::unexpected(connect_timeout.error());
  auto response_timeout = Duration("--ingress-response-timeout", flags.response_timeout);
  if (!response_timeout) return std::unexpected(response_timeout.error());

  ServerOptions so;
  so.host = host;
  so.port = static_cast<uint16_t>(port);
  DaemonIngress out;
  if (!flags.tls_cert.empty() || !flags.tls_key.empty()) {
    if (flags.tls_cert.empty() || flags.tls_key.empty()) {
      return FailMsg("--ingress-tls-cert and --ingress-tls-key go together");
    }
    if (flags.tls == "off") return FailMsg("--ingress-tls off contradicts --ingress-tls-cert");
    auto t = TlsProvider::FromFiles(flags.tls_cert, flags.tls_key);
    if (!t) return std::unexpected(t.error());
    so.tls = *t;
  } else if (flags.tls == "local-ca") {
    auto t = TlsProvider::LocalCa(data_dir, domain);
    if (!t) return std::unexpected(t.error());
    so.tls = *t;
    out.ca_path = (*t)->ca_path();
  } else if (flags.tls != "off") {
    return FailMsg("--ingress-tls must be local-ca or off");
  }

  auto env = std::make_shared<ProxyEnv>();
  env->domain = domain;
  env->route = ManagerRouter(loop, mgr);
  env->connect_timeout = *connect_timeout;
  env->response_timeout = *response_timeout;
  UseSandboxDialers(*env);
  bool tls = so.tls != nullptr;
  auto server = IngressServer::Start(std::move(so), std::move(env));
  if (!server) return std::unexpected(server.error());
  out.server = std::move(*server);
  auto ep = out.server->endpoint();
  out.naming.domain = domain;
  out.naming.public_port =
      flags.public_port != 0 ? static_cast<uint16_t>(flags.public_port) : ep.port();
  out.naming.tls = tls;
  std::string addr =
      ep.address().is_v6() ? "[" + ep.address().to_string() + "]" : ep.address().to_string();
  out.url = std::string(tls ? "https://" : "http://") + addr + ":" + std::to_string(ep.port());
  spdlog::info("ingress: {} for *.{}{}", out.url, domain,
               tls ? (out.ca_path.empty() ? " (TLS from files)" : " (local CA)") : "");
  return out;
}

}  // namespace sandboxd::ingress

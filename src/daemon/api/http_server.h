// The daemon's single HTTP origin (WIRE.md §1.1): WebSocket upgrades for
// create/connect and the REST routes (kill, extend, list), with bearer-token
// auth scoped to the token's org. Event-loop thread only.
#pragma once

#include <boost/asio.hpp>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <memory>
#include <optional>
#include <string>

#include "daemon/core/manager.h"
#include "daemon/core/store.h"
#include "daemon/ingress/exposure.h"

namespace sandboxd::api {

// Resolves bearer tokens to orgs, caching positive answers.
class Authenticator {
 public:
  explicit Authenticator(core::Store& store) : store_(store) {}
  // The org of `authorization` ("Bearer ddo_..."), or nullopt.
  std::optional<std::string> OrgFor(std::string_view authorization);

 private:
  core::Store& store_;
  std::map<std::string, std::string> cache_;  // token hash → org
};

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, core::Manager& mgr, core::Store& store);
  // Binds and starts accepting; returns the bound endpoint.
  Result<boost::asio::ip::tcp::endpoint> Listen(const std::string& host, uint16_t port);
  void Stop();

  // How POST /api/v3/sandbox/{id}/expose/http names exposed services; unset
  // (no ingress), it answers 409 INGRESS_DISABLED. Set before Listen.
  void SetIngressNaming(ingress::Naming n) { ingress_naming_ = std::move(n); }

  // POST /api/v3/sandbox/{id}/expose/ssh: answered by the SSH gateway when
  // the daemon runs one (else 409 SSH_DISABLED). Set before Listen.
  using ExposeSshFn = std::function<core::ApiResult<nlohmann::json>(const std::string& org, const std::string& id)>;
  void SetExposeSsh(ExposeSshFn fn) { expose_ssh_ = std::move(fn); }

 private:
  void AcceptNext();

  boost::asio::io_context& io_;
  core::Manager& mgr_;
  Authenticator auth_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::optional<ingress::Naming> ingress_naming_;
  ExposeSshFn expose_ssh_;
};

}  // namespace sandboxd::api

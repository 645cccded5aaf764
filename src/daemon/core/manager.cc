#include "daemon/core/manager.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "common/base64.h"
#include "daemon/core/ids.h"
#include "daemon/net/allowlist.h"
#include "daemon/net/network.h"
#include "daemon/net/sandbox_ca.h"
#include "daemon/net/subnet.h"

namespace sandboxd::core {

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {
// The create options as persisted: everything but secret values.
std::string PersistableConfig(const CreateConfig& c) {
  nlohmann::json j;
  j["memory_mb"] = c.memory_mb;
  if (c.stop_at_ms) j["stop_at_ms"] = *c.stop_at_ms;
  if (c.allow_net) j["allow_net"] = *c.allow_net;
  nlohmann::json secrets = nlohmann::json::object();
  for (const auto& [name, s] : c.secrets) secrets[name] = {{"hosts", s.hosts}};
  if (!c.secrets.empty()) j["secrets"] = secrets;
  if (c.isolation) j["isolation"] = *c.isolation;
  return j.dump();
}
}  // namespace

Manager::Manager(boost::asio::io_context& io, Store& store, isolation::BackendSet backends, ManagerOptions opts,
                 NowMsFn now)
    : io_(io), store_(store), backends_(std::move(backends)), opts_(std::move(opts)), now_(std::move(now)) {}

Manager::~Manager() { pool_.join(); }

ConfigLimits Manager::Limits() const {
  ConfigLimits l;
  l.region = opts_.region;
  l.now_ms = now_();
  l.max_lifetime_ms = opts_.max_lifetime_ms;
  return l;
}

void Manager::Create(const std::string& org, CreateConfig cfg, CreateFn done) {
  if (shutting_down_) {
    done(std::unexpected(ApiError{503, "SHUTTING_DOWN", "the server is shutting down"}));
    return;
  }
  if (live_.size() + creating_ >= opts_.max_sandboxes) {
    done(std::unexpected(ApiError{503, "CAPACITY_EXHAUSTED",
                                  "this server runs its maximum of " + std::to_string(opts_.max_sandboxes) +
                                      " sandboxes"}));
    return;
  }
  // The backend: the create config's (our extension), else the daemon's default.
  const std::string isolation = cfg.isolation.value_or(backends_.default_name);
  isolation::Backend* backend = backends_.Find(isolation);
  if (!backend) {
    auto why = backends_.unavailable.find(isolation);
    done(std::unexpected(ApiError{400, "ISOLATION_UNAVAILABLE",
                                  "isolation '" + isolation + "' is not available on this server" +
                                      (why != backends_.unavailable.end() ? " (" + why->second + ")" : "")}));
    return;
  }
  std::string id = NewSandboxId(opts_.region);
  int64_t now = now_();
  auto sb = std::make_shared<Sandbox>(io_, id, org, std::move(cfg), now);
  sb->isolation_ = isolation;
  // Secrets never enter the sandbox: inside, the variable holds a placeholder
  // that the egress proxy swaps for the value on the wire to approved hosts.
  std::vector<net::SecretBinding> bindings;
  std::vector<std::string> secret_hosts;
  for (const auto& [name, s] : sb->config().secrets) {
    std::string hex;
    for (unsigned char c : RandomBytes(16)) {
      static constexpr char kHex[] = "0123456789abcdef";
      hex += kHex[c >> 4];
      hex += kHex[c & 15];
    }
    sb->env()[name] = "sbx_placeholder_" + hex;
    auto hosts = net::AllowList::Parse(s.hosts);
    if (!hosts) {  // validated at the edge already
      done(std::unexpected(ApiError::InvalidConfig("secret '" + name + "': " + hosts.error().message)));
      return;
    }
    for (const auto& e : hosts->entries()) {  // the names the CA may vouch for (no ports)
      switch (e.kind) {
        case net::AllowEntry::Kind::kName: secret_hosts.push_back(e.host); break;
        case net::AllowEntry::Kind::kWildcard: secret_hosts.push_back("*." + e.host); break;
        case net::AllowEntry::Kind::kAddress: secret_hosts.push_back(e.address.to_string()); break;
      }
    }
    bindings.push_back({name, sb->env()[name], s.value, std::move(*hosts)});
  }
  if (net_ && !bindings.empty()) {
    // The sandbox's TLS clients must trust the proxy's CA for the hosts it
    // intercepts; every common runtime is told where it is.
    sb->env()["SSL_CERT_FILE"] = kSandboxTrustBundle;
    sb->env()["REQUESTS_CA_BUNDLE"] = kSandboxTrustBundle;
    sb->env()["NODE_EXTRA_CA_CERTS"] = kSandboxCaFile;
    sb->env()["DENO_CERT"] = kSandboxCaFile;
  }

  SandboxRecord rec;
  rec.id = id;
  rec.org = org;
  rec.region = opts_.region;
  rec.labels = sb->config().labels;
  rec.config_json = PersistableConfig(sb->config());
  rec.state = "creating";
  rec.created_ms = now;
  rec.stop_at_ms = sb->config().stop_at_ms;
  rec.isolation = isolation;
  if (auto st = store_.InsertSandbox(rec); !st) {
    done(std::unexpected(ApiError::Internal(st.error().message)));
    return;
  }

  isolation::SandboxSpec spec;
  spec.id = id;
  spec.memory_mb = sb->config().memory_mb;
  spec.network = net_ != nullptr;
  ++creating_;
  boost::asio::post(pool_, [this, backend, spec, sb, bindings = std::move(bindings), secret_hosts = std::move(secret_hosts),
                            done = std::move(done)]() mutable {
    auto inst = backend->Start(spec);
    std::unique_ptr<net::NetworkAttachment> attachment;
    if (inst && net_) {
      auto a = AttachNetwork(**inst, sb, std::move(bindings), secret_hosts);
      if (a) {
        attachment = std::move(*a);
      } else {
        (void)(*inst)->Destroy();
        inst = std::unexpected(a.error());
      }
    }
    boost::asio::post(io_, [this, sb, inst = std::move(inst), attachment = std::move(attachment),
                            done = std::move(done)]() mutable {
      --creating_;
      if (!inst) {
        spdlog::error("sandbox {}: start failed: {}", sb->id(), inst.error().message);
        (void)store_.UpdateState(sb->id(), "failed", now_(), inst.error().message);
        done(std::unexpected(ApiError{500, "SANDBOX_START_FAILED", "could not start the sandbox: " +
                                                                        inst.error().message}));
        return;
      }
      sb->instance_ = std::move(*inst);
      sb->net_ = std::move(attachment);
      if (sb->instance_->HasGuestKernel()) {
        // The ingress reaches a microVM's services at the guest's address.
        sb->exposures().SetGuest(sb->net_ ? sb->net_->sandbox_ip_u32() : 0);
      }
      sb->link_ = std::make_shared<AgentLink>(io_, sb->instance_->TakeLinkFd(), opts_.agent_call_timeout);
      std::weak_ptr<Sandbox> weak = sb;
      sb->link_->Start(
          [weak](const nlohmann::json& ev) {
            if (auto s = weak.lock()) s->OnAgentEvent(ev);
          },
          [this, weak](const Error& e) {
            auto s = weak.lock();
            if (!s || !s->running()) return;
            spdlog::warn("sandbox {}: agent link lost: {}", s->id(), e.message);
            StartStop(s, "the sandbox's agent exited (" + e.message + ")", /*failed=*/true);
          });
      sb->on_last_detach_ = [this, weak] {
        auto s = weak.lock();
        if (!s || !s->running() || s->stop_at_ms_) return;
        s->grace_timer_.expires_after(opts_.session_grace);
        s->grace_timer_.async_wait([this, weak](boost::system::error_code ec) {
          auto s = weak.lock();
          if (ec || !s || !s->running() || s->attachments() > 0 || s->stop_at_ms_) return;
          StartStop(s, "session ended", false);
        });
      };
      live_[sb->id()] = sb;
      (void)store_.UpdateState(sb->id(), "running", std::nullopt);
      if (shutting_down_) {
        StartStop(sb, "server shutting down", false);
        done(std::unexpected(ApiError{503, "SHUTTING_DOWN", "the server is shutting down"}));
        return;
      }
      spdlog::info("sandbox {}: running (org {}, {}, {} MiB, {}, {})", sb->id(), sb->org(), sb->isolation_,
                   sb->config().memory_mb, sb->stop_at_ms_ ? "timed" : "session",
                   sb->net_ ? "network " + sb->net_->sandbox_ip() : std::string("no network"));
      if (sb->net_ && !sb->net_->guest_tap().empty())
        return ConfigureGuestNetwork(sb, std::move(done));
      if (sb->net_ && sb->net_->policy()->ca()) return InstallTrust(sb, std::move(done));
      HandOut(sb, std::move(done));
    });
  });
}

Result<std::unique_ptr<net::NetworkAttachment>> Manager::AttachNetwork(isolation::Instance& inst,
                                                                       const std::shared_ptr<Sandbox>& sb,
                                                                       std::vector<net::SecretBinding> bindings,
                                                                       const std::vector<std::string>& secret_hosts) {
  std::shared_ptr<net::SandboxCa> ca;
  if (!bindings.empty()) {
    auto c = net::SandboxCa::Create(sb->id(), secret_hosts);
    if (!c) return std::unexpected(c.error().Wrap("sandbox CA"));
    ca = std::move(*c);
  }
  auto policy = net::EgressPolicy::Build(sb->id(), sb->config().allow_net.value_or(std::vector<std::string>{}),
                                         std::move(bindings), std::move(ca));
  if (!policy) return std::unexpected(policy.error());
  UniqueFd netns(::open(("/proc/" + std::to_string(inst.InitPid()) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  if (!netns) return FailErrno("open the sandbox's network namespace");
  const auto t0 = std::chrono::steady_clock::now();
  auto a = net_->Attach(netns.get(), *policy, inst.GuestTap());
  if (!a) return std::unexpected(a.error().Wrap("network"));
  spdlog::debug("sandbox {}: network attached{} in {} us", sb->id(), inst.GuestTap().empty() ? "" : " to the guest's tap",
                std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
  return std::move(*a);
}

// A guest with its own network stack (microVM) owns the sandbox address: its
// agent configures eth0 with it (docs/agent-link.md, configureNetwork). The
// sandbox is handed out only after this, so its first command has a network.
void Manager::ConfigureGuestNetwork(const std::shared_ptr<Sandbox>& sb, CreateFn done) {
  const auto& net = *sb->net_;
  nlohmann::json p = {{"interface", "eth0"},
                      {"address", net.sandbox_ip()},
                      {"prefix", net.prefix()},
                      {"gateway", net::Ipv4ToString(net.gateway_ip())}};
  std::weak_ptr<Sandbox> weak = sb;
  sb->link().Call(
      "configureNetwork", p,
      [this, weak, done = std::move(done), t0 = std::chrono::steady_clock::now()](
          Result<nlohmann::json> r) mutable {
        auto s = weak.lock();
        spdlog::debug("sandbox {}: guest network configured in {} us", s ? s->id() : "?",
                      std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::steady_clock::now() - t0)
                          .count());
        if (!s || !s->running())
          return done(std::unexpected(ApiError{500, "SANDBOX_START_FAILED", "sandbox stopped"}));
        if (!r) {
          const std::string what = "could not configure the guest's network: " + r.error().message;
          StartStop(s, what, true);
          return done(std::unexpected(ApiError{500, "SANDBOX_START_FAILED", what}));
        }
        if (s->net_->policy()->ca()) return InstallTrust(s, std::move(done));
        HandOut(s, std::move(done));
      });
}

// The last step of a create: the sandbox's deadline (a timed sandbox) counts
// from here on, so a deadline that passed while it was still being set up
// (a slow boot, the guest's network, the egress CA) stops it after the client
// got it, never half-way through its setup.
void Manager::HandOut(const std::shared_ptr<Sandbox>& sb, CreateFn done) {
  ArmStopTimer(sb);
  done(sb);
}

// Writes the proxy CA into the sandbox's trust store (as root, through the
// agent): the CA alone, and the system bundle with the CA appended, which is
// also installed as the default bundle so tools that ignore the environment
// trust it too. The sandbox is handed out only after this.
void Manager::InstallTrust(const std::shared_ptr<Sandbox>& sb, CreateFn done) {
  const std::string& ca = sb->net_->policy()->ca()->CertPem();
  std::string bundle = net_->system_ca_bundle();
  if (!bundle.empty() && bundle.back() != '\n') bundle += '\n';
  bundle += ca;
  struct File {
    const char* path;
    std::string content;
  };
  auto files = std::make_shared<std::vector<File>>(
      std::vector<File>{{kSandboxCaFile, ca}, {kSandboxTrustBundle, std::move(bundle)}});
  auto step = std::make_shared<std::function<void(size_t)>>();
  std::weak_ptr<Sandbox> weak = sb;
  auto fail = [this, weak, done](const std::string& what) {
    auto s = weak.lock();
    if (s && s->running()) StartStop(s, "could not install the egress CA: " + what, true);
    done(std::unexpected(ApiError{500, "SANDBOX_START_FAILED", "could not install the egress CA: " + what}));
  };
  *step = [this, weak, files, step, fail, done](size_t i) {
    auto s = weak.lock();
    if (!s || !s->running()) return done(std::unexpected(ApiError{500, "SANDBOX_START_FAILED", "sandbox stopped"}));
    if (i == files->size()) {
      // Resetting *step destroys this lambda and its captures (`this`
      // included): keep what is needed in locals first.
      auto finish = done;
      Manager* mgr = this;
      *step = nullptr;  // break the cycle
      return mgr->HandOut(s, std::move(finish));
    }
    const auto& f = (*files)[i];
    nlohmann::json root = {{"uid", 0}, {"gid", 0}, {"cwd", "/"}};
    nlohmann::json p = root;
    p["path"] = f.path;
    s->link().Call("create", p, [weak, files, step, fail, root, i](Result<nlohmann::json> r) {
      auto s = weak.lock();
      if (!s || !s->running()) return fail("sandbox stopped");
      if (!r || !r->contains("fileHandleId")) return fail(r ? "create: no handle" : r.error().message);
      auto handle = (*r)["fileHandleId"];
      nlohmann::json w = root;
      w["fileHandleId"] = handle;
      w["data"] = Base64Encode((*files)[i].content);
      s->link().Call("fileWrite", w, [weak, step, fail, root, handle, i](Result<nlohmann::json> r) {
        auto s = weak.lock();
        if (!s || !s->running()) return fail("sandbox stopped");
        if (!r) return fail(r.error().message);
        nlohmann::json c = root;
        c["fileHandleId"] = handle;
        s->link().Call("fileClose", c, [step, fail, i](Result<nlohmann::json> r) {
          if (!r) return fail(r.error().message);
          if (*step) (*step)(i + 1);
        });
      });
    });
  };
  (*step)(0);
}

void Manager::ArmStopTimer(const std::shared_ptr<Sandbox>& sb) {
  sb->stop_timer_.cancel();
  if (!sb->stop_at_ms_) return;
  auto delay = std::chrono::milliseconds(std::max<int64_t>(0, *sb->stop_at_ms_ - now_()));
  sb->stop_timer_.expires_after(delay);
  std::weak_ptr<Sandbox> weak = sb;
  sb->stop_timer_.async_wait([this, weak](boost::system::error_code ec) {
    auto s = weak.lock();
    if (ec || !s || !s->running()) return;
    StartStop(s, "sandbox timeout reached", false);
  });
}

ApiResult<std::shared_ptr<Sandbox>> Manager::FindRunning(const std::string& org, const std::string& id) {
  auto it = live_.find(id);
  if (it == live_.end() || it->second->org() != org || !it->second->running()) {
    return std::unexpected(ApiError::NotFound("sandbox " + id + " not found or not running"));
  }
  return it->second;
}

std::shared_ptr<Sandbox> Manager::FindRunningAnyOrg(const std::string& id) const {
  auto it = live_.find(id);
  if (it == live_.end() || !it->second->running()) return nullptr;
  return it->second;
}

ApiResult<void> Manager::Kill(const std::string& org, const std::string& id, const std::string& reason) {
  auto it = live_.find(id);
  if (it != live_.end() && it->second->org() == org) {
    if (it->second->running()) StartStop(it->second, reason, false);
    return {};
  }
  auto rec = store_.GetSandbox(id);
  if (rec && *rec && (*rec)->org == org) return {};  // already stopped: idempotent
  return std::unexpected(ApiError::NotFound("sandbox " + id + " not found"));
}

ApiResult<std::vector<std::string>> Manager::SetAllowNet(const std::string& org, const std::string& id,
                                                         const std::vector<std::string>& allow_net) {
  auto sb = FindRunning(org, id);
  if (!sb) return std::unexpected(sb.error());
  if (!(*sb)->net_) {
    return std::unexpected(ApiError{409, "NETWORK_DISABLED", "this server runs sandboxes without outbound networking"});
  }
  for (const auto& h : allow_net) {
    if (auto e = net::ParseAllowEntry(h); !e) return std::unexpected(ApiError::InvalidConfig("allowNet: " + e.error().message));
  }
  if (auto st = (*sb)->net_->SetAllowNet(allow_net); !st) {
    return std::unexpected(ApiError::Internal("updating the firewall: " + st.error().message));
  }
  spdlog::info("sandbox {}: allowNet replaced ({} entries)", id, allow_net.size());
  return allow_net;
}

ApiResult<int64_t> Manager::Extend(const std::string& org, const std::string& id, int64_t stop_at_ms) {
  auto sb = FindRunning(org, id);
  if (!sb) return std::unexpected(sb.error());
  auto& s = **sb;
  if (!s.stop_at_ms_) {
    return std::unexpected(
        ApiError{400, "INVALID_TIMEOUT", "a \"session\" sandbox cannot be extended; create it with a duration"});
  }
  int64_t current = *s.stop_at_ms_;
  int64_t granted = std::max(current, std::min(stop_at_ms, current + opts_.max_extend_ms));
  if (opts_.max_lifetime_ms) granted = std::min(granted, s.created_ms_ + *opts_.max_lifetime_ms);
  granted = std::max(granted, current);
  s.stop_at_ms_ = granted;
  (void)store_.UpdateStopAt(id, granted);
  ArmStopTimer(*sb);
  return granted;
}

ApiResult<ListPage> Manager::List(ListQuery q) {
  q.stopped_after_ms = now_() - opts_.stopped_retention_ms;
  auto page = store_.ListSandboxes(q);
  if (!page) return std::unexpected(ApiError{400, "INVALID_QUERY", page.error().message});
  return std::move(*page);
}

void Manager::StartStop(const std::shared_ptr<Sandbox>& sb, const std::string& reason, bool failed) {
  if (sb->state_ != SandboxState::kRunning) return;
  sb->state_ = SandboxState::kStopping;
  sb->stop_timer_.cancel();
  sb->grace_timer_.cancel();
  spdlog::info("sandbox {}: stopping ({})", sb->id(), reason);
  // The stop time is when it stopped serving; teardown finishes moments later.
  (void)store_.UpdateState(sb->id(), "stopping", now_());
  // Disconnect clients first: kill() in the SDK waits for the socket to close.
  auto attachments = sb->attachments_;
  for (Attachment* a : attachments) a->CloseFromServer(failed ? 1011 : 1001, reason);
  sb->FailAllWaiters(Error{EPIPE, "sandbox stopped: " + reason});
  if (sb->link_) sb->link_->Close();
  ++destroying_;
  auto instance = std::move(sb->instance_);
  auto network = std::move(sb->net_);
  boost::asio::post(pool_, [this, sb, failed, reason, instance = std::move(instance),
                            network = std::move(network)]() mutable {
    Status st;
    if (instance) st = instance->Destroy();
    instance.reset();
    network.reset();  // veth, firewall elements, proxy registry entry
    boost::asio::post(io_, [this, sb, failed, reason, st = std::move(st)] {
      --destroying_;
      if (!st) spdlog::error("sandbox {}: teardown incomplete: {}", sb->id(), st.error().message);
      sb->state_ = SandboxState::kStopped;
      (void)store_.UpdateState(sb->id(), failed ? "failed" : "stopped", std::nullopt, failed ? reason : "");
      live_.erase(sb->id());
      spdlog::info("sandbox {}: stopped", sb->id());
      if (shutting_down_ && live_.empty() && destroying_ == 0 && creating_ == 0 && on_all_destroyed_) {
        auto fn = std::move(on_all_destroyed_);
        on_all_destroyed_ = nullptr;
        fn();
      }
    });
  });
}

void Manager::Shutdown(std::function<void()> done) {
  shutting_down_ = true;
  on_all_destroyed_ = std::move(done);
  auto live = live_;
  for (auto& [id, sb] : live) StartStop(sb, "server shutting down", false);
  if (live_.empty() && destroying_ == 0 && creating_ == 0 && on_all_destroyed_) {
    auto fn = std::move(on_all_destroyed_);
    on_all_destroyed_ = nullptr;
    fn();
  }
}

}  // namespace sandboxd::core

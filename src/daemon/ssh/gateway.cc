#include "daemon/ssh/gateway.h"

#include <fcntl.h>
#include <libssh/callbacks.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include "daemon/ssh/connection.h"

namespace sandboxd::ssh {

using tcp = boost::asio::ip::tcp;

namespace {
constexpr auto kResolveTimeout = std::chrono::seconds(10);
constexpr const char* kUnknownUser =
    "unknown SSH username (exposeSsh() hands one out; it is valid while its sandbox runs)";

void LogFromLibssh(int priority, const char* function, const char* message, void*) {
  if (priority <= SSH_LOG_WARN) {
    spdlog::warn("libssh {}: {}", function ? function : "", message ? message : "");
  } else {
    spdlog::debug("libssh {}: {}", function ? function : "", message ? message : "");
  }
}
}  // namespace

Gateway::Gateway(boost::asio::io_context& io, core::Manager& mgr, GatewayOptions opts)
    : io_(io), mgr_(mgr), opts_(std::move(opts)), acceptor_(io) {}

Result<std::unique_ptr<Gateway>> Gateway::Start(boost::asio::io_context& io, core::Manager& mgr,
                                                GatewayOptions opts) {
  ssh_init();
  ssh_set_log_callback(LogFromLibssh);
  ssh_set_log_level(spdlog::should_log(spdlog::level::trace) ? SSH_LOG_PROTOCOL : SSH_LOG_WARN);
  if (opts.hostname.empty()) {
    // A wildcard listen address is no host name: report the machine's name.
    boost::system::error_code ec;
    auto addr = boost::asio::ip::make_address(opts.listen_host, ec);
    opts.hostname =
        !ec && addr.is_unspecified() ? boost::asio::ip::host_name(ec) : opts.listen_host;
    if (opts.hostname.empty()) opts.hostname = opts.listen_host;
  }
  auto key = LoadOrCreateHostKey(opts.host_key_path);
  if (!key) return std::unexpected(key.error().Wrap("ssh host key"));
  std::string fingerprint = Fingerprint(key->get());

  std::unique_ptr<Gateway> gw(new Gateway(io, mgr, std::move(opts)));
  gw->bind_ = ssh_bind_new();
  if (gw->bind_ == nullptr) return FailMsg("ssh_bind_new failed");
  // The bind takes ownership of the key.
  if (ssh_bind_options_set(gw->bind_, SSH_BIND_OPTIONS_IMPORT_KEY, key->release()) != SSH_OK ||
      ssh_bind_options_set(gw->bind_, SSH_BIND_OPTIONS_BANNER, "sandboxd") != SSH_OK) {
    return FailMsg(std::string("configuring the ssh server: ") + ssh_get_error(gw->bind_));
  }
  SBX_TRY(gw->Listen());
  spdlog::info("ssh: listening on {}:{}, host key {}", gw->endpoint_.address().to_string(),
               gw->endpoint_.port(), fingerprint);
  return gw;
}

Gateway::~Gateway() {
  Stop();
  // Connections got a disconnect message; give them a moment to say goodbye,
  // then cut the ones still stuck (e.g. in a key exchange) and join them all.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  auto all_done = [this] {
    for (auto& w : workers_) {
      if (!w.done->load()) return false;
    }
    return true;
  };
  while (!all_done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (auto& w : workers_) {
    if (!w.done->load() && w.socket) ::shutdown(w.socket.get(), SHUT_RDWR);
  }
  ReapWorkers(/*all=*/true);
  if (bind_) ssh_bind_free(bind_);
}

Status Gateway::Listen() {
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(opts_.listen_host, ec);
  if (ec) return FailMsg("invalid --ssh-listen address '" + opts_.listen_host + "'");
  tcp::endpoint ep(addr, opts_.listen_port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return FailMsg("ssh: listening on " + opts_.listen_host + ":" +
                   std::to_string(opts_.listen_port) + ": " + ec.message());
  }
  endpoint_ = acceptor_.local_endpoint();
  AcceptNext();
  return {};
}

void Gateway::AcceptNext() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (!ec) Serve(std::move(s));
    {
      std::lock_guard lk(mu_);
      if (stopping_) return;
    }
    AcceptNext();
  });
}

void Gateway::Serve(tcp::socket s) {
  ReapWorkers(/*all=*/false);
  boost::system::error_code ec;
  auto remote = s.remote_endpoint(ec);
  std::string peer =
      ec ? std::string("?") : remote.address().to_string() + ":" + std::to_string(remote.port());
  if (workers_.size() >= opts_.max_connections) {
    spdlog::warn("ssh {}: refused: {} connections are open already", peer, workers_.size());
    return;  // `s` closes
  }
  s.set_option(tcp::no_delay(true), ec);
  // libssh owns the connection from here: a descriptor of its own, in
  // non-blocking mode (it writes only what poll() says fits and buffers the
  // rest, so a client that reads slowly never blocks the thread in send()).
  int fd = ::fcntl(s.native_handle(), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) {
    spdlog::warn("ssh {}: dup: {}", peer, std::strerror(errno));
    return;
  }
  s.close(ec);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  auto mailbox = Mailbox::Create();
  if (!mailbox) {
    ::close(fd);
    spdlog::warn("ssh {}: {}", peer, mailbox.error().message);
    return;
  }
  Worker w;
  w.socket = UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
  w.mailbox = *mailbox;
  w.done = std::make_shared<std::atomic<bool>>(false);
  w.thread = std::thread([this, fd, peer, mb = *mailbox, done = w.done] {
    ServeThread(fd, peer, mb);
    done->store(true);
  });
  workers_.push_back(std::move(w));
}

void Gateway::ServeThread(int fd, std::string peer, std::shared_ptr<Mailbox> mailbox) {
  ssh_session session = ssh_new();
  if (session == nullptr) {
    ::close(fd);
    return;
  }
  int rc;
  std::string error;
  {
    std::lock_guard lk(bind_mu_);
    rc = ssh_bind_accept_fd(bind_, session, fd);  // the session owns fd from here, even on failure
    if (rc != SSH_OK) error = ssh_get_error(bind_);
  }
  if (rc != SSH_OK) {
    spdlog::warn("ssh {}: cannot start a session: {}", peer, error);
    ssh_free(session);
    return;
  }
  Connection conn(*this, session, std::move(mailbox), peer);
  conn.Run();
}

void Gateway::ReapWorkers(bool all) {
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (all || it->done->load()) {
      if (it->thread.joinable()) it->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

void Gateway::Stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  boost::system::error_code ec;
  acceptor_.close(ec);
  for (auto& w : workers_) {
    w.mailbox->Post({.kind = ToSsh::Kind::kDisconnect, .data = "the server is shutting down"});
  }
}

core::ApiResult<nlohmann::json> Gateway::Expose(const std::string& org, const std::string& id) {
  auto sb = mgr_.FindRunning(org, id);
  if (!sb) return std::unexpected(sb.error());
  // Usernames of sandboxes that stopped are forgotten here, so the registry
  // never holds more than the live sandboxes.
  users_.Prune(
      [this](const SandboxRef& ref) { return mgr_.FindRunning(ref.org, ref.id).has_value(); });
  std::string username = users_.Expose(org, id);
  return nlohmann::json{
      {"hostname", opts_.hostname}, {"username", username}, {"port", endpoint_.port()}};
}

Gateway::Login Gateway::ResolveOnLoop(const std::string& username,
                                      const std::shared_ptr<Mailbox>& mailbox,
                                      const std::string& peer) {
  auto ref = users_.Lookup(username);
  if (!ref) return {nullptr, kUnknownUser};
  auto sb = mgr_.FindRunning(ref->org, ref->id);
  if (!sb) return {nullptr, "sandbox " + ref->id + " is not running"};
  auto bridge = std::make_shared<Bridge>(io_, *sb, mailbox, peer);
  if (!bridge->Attach()) return {nullptr, "sandbox " + ref->id + " is not running"};
  return {std::move(bridge), ""};
}

Gateway::Login Gateway::Resolve(const std::string& username, std::shared_ptr<Mailbox> mailbox,
                                const std::string& peer) {
  struct Slot {
    bool done = false;
    bool abandoned = false;
    Login login;
  };
  auto slot = std::make_shared<Slot>();
  {
    std::lock_guard lk(mu_);
    if (stopping_) return {nullptr, "the server is shutting down"};
  }
  boost::asio::post(io_, [this, slot, username, mailbox, peer] {
    Login login = ResolveOnLoop(username, mailbox, peer);
    std::shared_ptr<Bridge> orphan;
    {
      std::lock_guard lk(mu_);
      if (slot->abandoned) {
        orphan = std::move(login.bridge);
      } else {
        slot->login = std::move(login);
        slot->done = true;
      }
    }
    cv_.notify_all();
    if (orphan) orphan->Close();  // the connection gave up waiting
  });
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, kResolveTimeout, [&] { return slot->done || stopping_; });
  if (!slot->done) {
    slot->abandoned = true;
    return {nullptr,
            stopping_ ? "the server is shutting down" : "the server did not answer in time"};
  }
  return std::move(slot->login);
}

}  // namespace sandboxd::ssh

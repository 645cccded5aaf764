// The egress proxy in-process, on loopback: the firewall is replaced by the
// original-destination seam, the sandbox by a client socket, the upstream by
// an echo server. The firewall and real sandboxes are covered by the
// daemon's integration tests (tests/security/egress.test.mjs).
#include "daemon/net/egress_proxy.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>

#include "daemon/net/name_resolver.h"
#include "daemon/net/test_client_hello.h"

namespace sandboxd::net {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

std::string ClientHello(const char* sni) { return TestClientHello(sni); }

// Echoes every connection's bytes back.
class EchoServer {
 public:
  explicit EchoServer(asio::io_context& io) : acceptor_(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {
    Accept();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int accepted() const { return accepted_; }

 private:
  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      ++accepted_;
      auto sock = std::make_shared<tcp::socket>(std::move(s));
      auto buf = std::make_shared<std::array<char, 65536>>();
      Echo(sock, buf);
      Accept();
    });
  }
  static void Echo(std::shared_ptr<tcp::socket> s, std::shared_ptr<std::array<char, 65536>> buf) {
    s->async_read_some(asio::buffer(*buf), [s, buf](boost::system::error_code ec, size_t n) {
      if (ec) return;
      asio::async_write(*s, asio::buffer(buf->data(), n), [s, buf](boost::system::error_code wec, size_t) {
        if (!wec) Echo(s, buf);
      });
    });
  }
  tcp::acceptor acceptor_;
  std::atomic<int> accepted_{0};
};

class EgressProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hosts_path_ = ::testing::TempDir() + "egress_hosts_" + std::to_string(::getpid());
    std::ofstream(hosts_path_) << "127.0.0.1 allowed.test internal.test\n";
    NameResolver::Options ro;
    ro.hosts_file = hosts_path_;
    ro.hosts_only = true;
    resolver_ = std::move(*NameResolver::Create(io_.get_executor(), ro));
    echo_ = std::make_unique<EchoServer>(io_);
    SetPolicy({"allowed.test", "127.0.0.1:1"});
    EgressProxyOptions o;
    o.sniff_timeout = std::chrono::milliseconds(300);
    o.connect_timeout = std::chrono::milliseconds(2000);
    uint16_t echo_port = echo_->port();
    o.original_dst = [echo_port](tcp::socket&) {
      return std::optional<tcp::endpoint>(tcp::endpoint(asio::ip::address_v4::loopback(), echo_port));
    };
    proxy_ = std::make_unique<EgressProxy>(
        io_, *resolver_,
        [this](const asio::ip::address& a) -> std::optional<SandboxEgress> {
          std::lock_guard lk(mu_);
          if (!known_ || !a.is_loopback()) return std::nullopt;
          return SandboxEgress{policy_, stats_};
        },
        o);
    ASSERT_TRUE(proxy_->Listen(tcp::endpoint(asio::ip::address_v4::loopback(), 0)));
    proxy_->SetObserver([this](const EgressEvent& ev) {
      std::lock_guard lk(mu_);
      events_.push_back(ev);
    });
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    proxy_->Stop();
    io_.stop();
    thread_.join();
    std::remove(hosts_path_.c_str());
  }
  void SetPolicy(const std::vector<std::string>& allow) {
    auto p = EgressPolicy::Build("sbx_test", allow, {}, nullptr);
    ASSERT_TRUE(p) << p.error().message;
    std::lock_guard lk(mu_);
    policy_ = *p;
  }

  // A blocking client "inside the sandbox".
  int Dial() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(proxy_->port());
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    return fd;
  }
  static void SendAll(int fd, const std::string& s) {
    ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
  }
  // Reads exactly n bytes (or until EOF/error within 5 s).
  static std::string ReadN(int fd, size_t n) {
    std::string out;
    char buf[65536];
    while (out.size() < n) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) break;
      ssize_t r = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
      if (r <= 0) break;
      out.append(buf, static_cast<size_t>(r));
    }
    return out;
  }
  // True if the proxy ended the connection (EOF or reset) within `ms`.
  static bool EndedWithin(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0) return false;
    char c;
    return ::recv(fd, &c, 1, 0) <= 0;
  }
  EgressEvent LastEvent() {
    for (int i = 0; i < 200; ++i) {
      {
        std::lock_guard lk(mu_);
        if (!events_.empty()) return events_.back();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return {};
  }

  asio::io_context io_;
  std::string hosts_path_;
  std::unique_ptr<NameResolver> resolver_;
  std::unique_ptr<EchoServer> echo_;
  std::unique_ptr<EgressProxy> proxy_;
  std::thread thread_;
  std::mutex mu_;
  bool known_ = true;
  std::shared_ptr<const EgressPolicy> policy_;
  std::shared_ptr<EgressStats> stats_ = std::make_shared<EgressStats>();
  std::vector<EgressEvent> events_;
};

TEST_F(EgressProxyTest, AllowedSniIsSplicedWithTheHelloReplayed) {
  int fd = Dial();
  std::string hello = ClientHello("allowed.test");
  SendAll(fd, hello);
  SendAll(fd, "after-the-hello");
  EXPECT_EQ(ReadN(fd, hello.size() + 15), hello + "after-the-hello");
  ::close(fd);
  auto ev = LastEvent();
  EXPECT_TRUE(ev.allowed);
  EXPECT_EQ(ev.host, "allowed.test");
  EXPECT_EQ(ev.mode, "splice");
  EXPECT_EQ(stats_->connections_allowed.load(), 1u);
}

TEST_F(EgressProxyTest, HalfCloseIsPassedOn) {
  int fd = Dial();
  std::string hello = ClientHello("ALLOWED.test.");
  SendAll(fd, hello);
  ::shutdown(fd, SHUT_WR);
  EXPECT_EQ(ReadN(fd, hello.size()), hello);
  EXPECT_TRUE(EndedWithin(fd, 2000));  // echo saw EOF, closed; we see EOF
  ::close(fd);
}

TEST_F(EgressProxyTest, DeniedSniIsResetAtOnce) {
  int fd = Dial();
  SendAll(fd, ClientHello("denied.test"));
  EXPECT_TRUE(EndedWithin(fd, 1000));
  ::close(fd);
  auto ev = LastEvent();
  EXPECT_FALSE(ev.allowed);
  EXPECT_EQ(ev.host, "denied.test");
  EXPECT_EQ(echo_->accepted(), 0);
  EXPECT_EQ(stats_->connections_denied.load(), 1u);
}

TEST_F(EgressProxyTest, InternalAddressNeedsAnEntryNamingIt) {
  SetPolicy({"internal.test"});  // resolves to 127.0.0.1, which no entry names
  int fd = Dial();
  SendAll(fd, ClientHello("internal.test"));
  EXPECT_TRUE(EndedWithin(fd, 1000));
  ::close(fd);
  auto ev = LastEvent();
  EXPECT_FALSE(ev.allowed);
  EXPECT_NE(ev.reason.find("internal"), std::string::npos) << ev.reason;
  EXPECT_EQ(echo_->accepted(), 0);
}

TEST_F(EgressProxyTest, UnknownProtocolIsRefused) {
  int fd = Dial();
  SendAll(fd, "SSH-2.0-OpenSSH_9.2\r\n");
  EXPECT_TRUE(EndedWithin(fd, 1000));
  ::close(fd);
  EXPECT_FALSE(LastEvent().allowed);
  EXPECT_EQ(echo_->accepted(), 0);
}

TEST_F(EgressProxyTest, SilentClientIsDroppedAfterTheSniffTimeout) {
  int fd = Dial();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(EndedWithin(fd, 3000));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  ::close(fd);
  EXPECT_FALSE(LastEvent().allowed);
}

TEST_F(EgressProxyTest, IpLiteralEntrySplicesAnyProtocolToTheDialledAddress) {
  SetPolicy({"127.0.0.1"});
  int fd = Dial();
  SendAll(fd, "SSH-2.0-anything\r\n");
  EXPECT_EQ(ReadN(fd, 18), "SSH-2.0-anything\r\n");
  ::close(fd);
  auto ev = LastEvent();
  EXPECT_TRUE(ev.allowed);
  EXPECT_EQ(ev.host, "127.0.0.1");
}

TEST_F(EgressProxyTest, UnknownSourceIsClosed) {
  {
    std::lock_guard lk(mu_);
    known_ = false;
  }
  int fd = Dial();
  std::string hello = ClientHello("allowed.test");
  (void)::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL);  // may already be reset
  EXPECT_TRUE(EndedWithin(fd, 1000));
  ::close(fd);
  EXPECT_EQ(echo_->accepted(), 0);
}

TEST_F(EgressProxyTest, ConnectionsPerSandboxAreCapped) {
  // The fixture's cap is the default (512); hold that many, then one more fails.
  std::vector<int> fds;
  std::string hello = ClientHello("allowed.test");
  for (int i = 0; i < 512; ++i) {
    int fd = Dial();
    SendAll(fd, hello);
    fds.push_back(fd);
  }
  for (int fd : fds) ASSERT_EQ(ReadN(fd, hello.size()), hello);  // all 512 are spliced
  EXPECT_EQ(stats_->open_connections.load(), 512);
  int extra = Dial();
  (void)::send(extra, hello.data(), hello.size(), MSG_NOSIGNAL);
  EXPECT_TRUE(EndedWithin(extra, 1000));
  ::close(extra);
  for (int fd : fds) ::close(fd);
  for (int i = 0; i < 200 && stats_->open_connections.load() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(stats_->open_connections.load(), 0) << "slots are given back when connections end";
}

TEST_F(EgressProxyTest, LargeSplicedTransfer) {
  int fd = Dial();
  std::string hello = ClientHello("allowed.test");
  SendAll(fd, hello);
  ASSERT_EQ(ReadN(fd, hello.size()), hello);
  std::string blob(8 << 20, 'x');
  for (size_t i = 0; i < blob.size(); i += 4096) blob[i] = static_cast<char>(i >> 12);
  std::thread writer([&] { SendAll(fd, blob); });
  EXPECT_EQ(ReadN(fd, blob.size()), blob);
  writer.join();
  ::close(fd);
}

}  // namespace
}  // namespace sandboxd::net

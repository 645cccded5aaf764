// bench-egress: what the egress proxy costs. Runs the real proxy in-process
// on loopback (the firewall's redirect is replaced by the original-destination
// seam; it is a kernel NAT lookup either way) against in-process upstreams:
//   connect   — connect + a TLS ClientHello + its echo, direct vs through the
//               proxy (sniff, policy, pinned resolve, upstream connect, splice):
//               p50/p99 and the added p50.
//   spliced   — MB/s of a download through an allowed, spliced connection.
//   intercept — MB/s of an HTTPS download through TLS interception: the
//               sandbox's TLS ends at the proxy (sandbox CA), the proxy's TLS
//               to the upstream is verified, the body goes through redaction.
// Prints figures; asserts nothing about time.
#include <netinet/in.h>
#include <pthread.h>
#include <time.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>
#include <spdlog/spdlog.h>
#include <vector>

#include "daemon/net/egress_proxy.h"
#include "daemon/net/name_resolver.h"
#include "daemon/net/sandbox_ca.h"
#include "daemon/net/test_client_hello.h"
#include "daemon/net/tls_contexts.h"

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace sandboxd;
using Clock = std::chrono::steady_clock;

namespace {

std::string ClientHello(const char* sni) { return net::TestClientHello(sni); }

int Dial(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    std::perror("connect");
    std::exit(1);
  }
  return fd;
}

bool ReadExactly(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, buf + got, n - got, 0);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

// Port A: echoes. Port B: after the first bytes, sends `bytes` then closes.
// Port C: TLS (cert from `tls`), answers any request with an N-byte body.
struct Upstreams {
  asio::io_context io;
  tcp::acceptor echo{io, tcp::endpoint(asio::ip::address_v4::loopback(), 0)};
  tcp::acceptor source{io, tcp::endpoint(asio::ip::address_v4::loopback(), 0)};
  tcp::acceptor https{io, tcp::endpoint(asio::ip::address_v4::loopback(), 0)};
  std::shared_ptr<asio::ssl::context> tls;
  size_t bytes = 0;
  std::string block = std::string(1 << 20, 'b');

  void AcceptEcho() {
    echo.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      auto sock = std::make_shared<tcp::socket>(std::move(s));
      sock->set_option(tcp::no_delay(true));
      auto buf = std::make_shared<std::array<char, 16384>>();
      Echo(sock, buf);
      AcceptEcho();
    });
  }
  static void Echo(std::shared_ptr<tcp::socket> s, std::shared_ptr<std::array<char, 16384>> buf) {
    s->async_read_some(asio::buffer(*buf), [s, buf](boost::system::error_code ec, size_t n) {
      if (ec) return;
      asio::async_write(*s, asio::buffer(buf->data(), n), [s, buf](boost::system::error_code wec, size_t) {
        if (!wec) Echo(s, buf);
      });
    });
  }
  void AcceptSource() {
    source.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      auto sock = std::make_shared<tcp::socket>(std::move(s));
      auto buf = std::make_shared<std::array<char, 16384>>();
      sock->async_read_some(asio::buffer(*buf), [this, sock, buf](boost::system::error_code rec, size_t) {
        if (rec) return;
        SendBlocks(sock, std::make_shared<size_t>(bytes));
      });
      AcceptSource();
    });
  }
  template <class S>
  void SendBlocksT(std::shared_ptr<S> s, std::shared_ptr<size_t> left, std::function<void()> after) {
    if (*left == 0) return after();
    size_t n = std::min(*left, block.size());
    asio::async_write(*s, asio::buffer(block.data(), n), [this, s, left, n, after](boost::system::error_code ec, size_t) {
      if (ec) return;
      *left -= n;
      SendBlocksT(s, left, after);
    });
  }
  void SendBlocks(std::shared_ptr<tcp::socket> s, std::shared_ptr<size_t> left) {
    SendBlocksT(s, left, [s] {
      boost::system::error_code ec;
      s->shutdown(tcp::socket::shutdown_send, ec);
    });
  }
  void AcceptHttps() {
    https.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      auto ts = std::make_shared<asio::ssl::stream<tcp::socket>>(std::move(s), *tls);
      ts->async_handshake(asio::ssl::stream_base::server, [this, ts](boost::system::error_code hec) {
        if (hec) return;
        auto buf = std::make_shared<asio::streambuf>();
        asio::async_read_until(*ts, *buf, "\r\n\r\n", [this, ts, buf](boost::system::error_code rec, size_t) {
          if (rec) return;
          auto head = std::make_shared<std::string>("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                                    "Connection: close\r\nContent-Length: " +
                                                    std::to_string(bytes) + "\r\n\r\n");
          asio::async_write(*ts, asio::buffer(*head), [this, ts, head](boost::system::error_code wec, size_t) {
            if (wec) return;
            SendBlocksT(ts, std::make_shared<size_t>(bytes), [ts] { ts->async_shutdown([ts](auto) {}); });
          });
        });
      });
      AcceptHttps();
    });
  }
};

// CPU seconds a thread has used: what the proxy costs, apart from the
// client and upstream sharing the same two cores in this bench.
double ThreadCpu(std::thread& t) {
  clockid_t cid;
  pthread_getcpuclockid(t.native_handle(), &cid);
  timespec ts{};
  clock_gettime(cid, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

void Report(const char* what, std::vector<double> us) {
  std::sort(us.begin(), us.end());
  auto pct = [&](double p) { return us[std::min(us.size() - 1, static_cast<size_t>(p * us.size()))]; };
  std::printf("%-34s p50 %8.1f us   p99 %8.1f us   (n=%zu)\n", what, pct(0.5), pct(0.99), us.size());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench-egress: added latency and throughput of the egress proxy (loopback, in-process)"};
  int iterations = 2000;
  size_t mib = 1024;
  size_t intercept_mib = 512;
  app.add_option("--iterations", iterations, "connects per latency series");
  app.add_option("--mib", mib, "MiB per spliced transfer");
  app.add_option("--intercept-mib", intercept_mib, "MiB per intercepted transfer");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  Upstreams up;
  auto upstream_ca = net::SandboxCa::Create("bench-upstream", {"bench.test"});
  up.tls = *(*upstream_ca)->ServerContextFor("bench.test");
  std::string ca_path = "/tmp/bench-egress-ca-" + std::to_string(::getpid()) + ".pem";
  std::ofstream(ca_path) << (*upstream_ca)->CertPem();
  up.AcceptEcho();
  up.AcceptSource();
  up.AcceptHttps();
  std::thread up_thread([&] { up.io.run(); });

  asio::io_context io;
  std::string hosts = "/tmp/bench-egress-hosts-" + std::to_string(::getpid());
  std::ofstream(hosts) << "127.0.0.1 bench.test\n";
  net::NameResolver::Options ro;
  ro.hosts_file = hosts;
  ro.hosts_only = true;
  auto resolver = std::move(*net::NameResolver::Create(io.get_executor(), ro));
  const std::string secret = "the-real-secret-value";
  auto sandbox_ca = net::SandboxCa::Create("sbx_bench", {"bench.test"});
  auto hosts_list = net::AllowList::Parse({"bench.test"});
  std::vector<net::SecretBinding> secrets{{"KEY", "sbx_placeholder_00000000000000000000000000000000", secret, *hosts_list}};
  // Loopback must be named for the proxy to connect to it at all.
  auto plain_policy = *net::EgressPolicy::Build("sbx_bench", {"bench.test", "127.0.0.1:1"}, {}, nullptr);
  auto secret_policy = *net::EgressPolicy::Build("sbx_bench", {"127.0.0.1:1"}, secrets, *sandbox_ca);
  auto stats = std::make_shared<net::EgressStats>();
  std::atomic<uint16_t> dst_port{0};
  std::atomic<bool> use_secrets{false};
  net::EgressProxyOptions po;
  po.upstream_tls = *net::MakeUpstreamClientContext({ca_path});
  po.original_dst = [&](tcp::socket&) {
    return std::optional<tcp::endpoint>(tcp::endpoint(asio::ip::address_v4::loopback(), dst_port.load()));
  };
  net::EgressProxy proxy(io, *resolver, [&](const asio::ip::address&) {
    return std::optional<net::SandboxEgress>(net::SandboxEgress{use_secrets ? secret_policy : plain_policy, stats});
  }, po);
  if (!proxy.Listen(tcp::endpoint(asio::ip::address_v4::loopback(), 0))) return 1;
  std::thread proxy_thread([&] { io.run(); });

  // --- connect latency
  std::string hello = ClientHello("bench.test");
  std::string back(hello.size(), '\0');
  auto series = [&](uint16_t port) {
    std::vector<double> us;
    for (int i = 0; i < iterations; ++i) {
      auto t0 = Clock::now();
      int fd = Dial(port);
      ::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL);
      if (!ReadExactly(fd, back.data(), back.size())) {
        std::fprintf(stderr, "echo failed\n");
        std::exit(1);
      }
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      ::close(fd);
    }
    return us;
  };
  dst_port = up.echo.local_endpoint().port();
  series(up.echo.local_endpoint().port());  // warm up
  auto direct = series(up.echo.local_endpoint().port());
  auto proxied = series(proxy.port());
  Report("connect+hello echo, direct", direct);
  Report("connect+hello echo, via proxy", proxied);
  std::sort(direct.begin(), direct.end());
  std::sort(proxied.begin(), proxied.end());
  std::printf("%-34s p50 %8.1f us   p99 %8.1f us\n", "added by the proxy", proxied[proxied.size() / 2] - direct[direct.size() / 2],
              proxied[proxied.size() * 99 / 100] - direct[direct.size() * 99 / 100]);

  // --- spliced throughput
  up.bytes = mib << 20;
  auto download = [&](uint16_t port) {
    int fd = Dial(port);
    auto t0 = Clock::now();
    ::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL);
    std::vector<char> buf(1 << 20);
    size_t got = 0;
    for (;;) {
      ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    ::close(fd);
    if (got != up.bytes) std::fprintf(stderr, "short transfer: %zu of %zu\n", got, up.bytes);
    return static_cast<double>(got) / 1e6 / s;
  };
  dst_port = up.source.local_endpoint().port();
  std::vector<double> d_rates, p_rates;
  for (int i = 0; i < 3; ++i) d_rates.push_back(download(up.source.local_endpoint().port()));
  double cpu0 = ThreadCpu(proxy_thread);
  for (int i = 0; i < 3; ++i) p_rates.push_back(download(proxy.port()));
  double splice_cpu = ThreadCpu(proxy_thread) - cpu0;
  std::sort(d_rates.begin(), d_rates.end());
  std::sort(p_rates.begin(), p_rates.end());
  std::printf("%-34s %8.0f MB/s (median of 3, %zu MiB)\n", "download, direct", d_rates[1], mib);
  std::printf("%-34s %8.0f MB/s (median of 3, %zu MiB)\n", "download, spliced via proxy", p_rates[1], mib);
  std::printf("%-34s %8.0f MB per proxy CPU-second\n", "  proxy cost, spliced", 3.0 * static_cast<double>(mib << 20) / 1e6 / splice_cpu);

  // --- intercepted throughput (TLS in and out, redaction on the body)
  use_secrets = true;
  up.bytes = intercept_mib << 20;
  dst_port = up.https.local_endpoint().port();
  SSL_CTX* cctx = SSL_CTX_new(TLS_client_method());
  BIO* cabio = BIO_new_mem_buf((*sandbox_ca)->CertPem().data(), static_cast<int>((*sandbox_ca)->CertPem().size()));
  X509* cacert = PEM_read_bio_X509(cabio, nullptr, nullptr, nullptr);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), cacert);
  SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, nullptr);
  std::vector<double> i_rates;
  double icpu0 = ThreadCpu(proxy_thread);
  for (int i = 0; i < 3; ++i) {
    int fd = Dial(proxy.port());
    auto t0 = Clock::now();
    SSL* ssl = SSL_new(cctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "bench.test");
    SSL_set1_host(ssl, "bench.test");
    if (SSL_connect(ssl) != 1) {
      ERR_print_errors_fp(stderr);
      return 1;
    }
    std::string req = "GET /big HTTP/1.1\r\nHost: bench.test\r\nAuthorization: Bearer "
                      "sbx_placeholder_00000000000000000000000000000000\r\n\r\n";
    SSL_write(ssl, req.data(), static_cast<int>(req.size()));
    std::vector<char> buf(1 << 20);
    size_t got = 0;
    for (;;) {
      int r = SSL_read(ssl, buf.data(), static_cast<int>(buf.size()));
      if (r <= 0) break;
      got += static_cast<size_t>(r);
      if (got >= up.bytes) {
        // Chunked re-framing adds a little; stop at the terminating chunk.
        if (std::string_view(buf.data(), static_cast<size_t>(r)).ends_with("0\r\n\r\n")) break;
      }
    }
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    i_rates.push_back(static_cast<double>(up.bytes) / 1e6 / s);
    SSL_free(ssl);
    ::close(fd);
  }
  double intercept_cpu = ThreadCpu(proxy_thread) - icpu0;
  std::sort(i_rates.begin(), i_rates.end());
  std::printf("%-34s %8.0f MB/s (median of 3, %zu MiB, TLS in and out + redaction)\n", "download, intercepted",
              i_rates[1], intercept_mib);
  std::printf("%-34s %8.0f MB per proxy CPU-second\n", "  proxy cost, intercepted",
              3.0 * static_cast<double>(intercept_mib << 20) / 1e6 / intercept_cpu);
  std::printf("substituted requests: %llu\n", static_cast<unsigned long long>(stats->requests_substituted.load()));

  proxy.Stop();
  io.stop();
  up.io.stop();
  proxy_thread.join();
  up_thread.join();
  std::remove(ca_path.c_str());
  std::remove(hosts.c_str());
  return 0;
}

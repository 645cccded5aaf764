// The ingress proxy against in-process services on loopback: the dialers are
// replaced by plain sockets (no network namespace, no root), the router by a
// table. Services and clients are blocking Asio/Beast code on their own
// threads, so the bytes on the wire are what the tests check.
#include "daemon/ingress/proxy.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "daemon/ingress/server.h"
#include "daemon/ingress/tls.h"

namespace sandboxd::ingress {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using namespace std::chrono_literals;

constexpr const char* kId = "sbx_loc_0123456789abcdefghjk";
constexpr const char* kLabel = "sbx-loc-0123456789abcdefghjk";

// A service: accepts on 127.0.0.1:0 and runs `handler` for each connection
// on its own thread.
class Service {
 public:
  using Handler = std::function<void(tcp::socket&)>;
  explicit Service(Handler h)
      : handler_(std::move(h)), acceptor_(io_, tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] {
      for (;;) {
        boost::system::error_code ec;
        tcp::socket s(io_);
        acceptor_.accept(s, ec);
        if (ec || stop_) return;
        ++accepted_;
        std::lock_guard lock(mu_);
        conns_.emplace_back([this, s = std::move(s)]() mutable {
          try {
            handler_(s);
          } catch (...) {
          }
        });
      }
    });
  }
  ~Service() {
    stop_ = true;
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    thread_.join();
    std::lock_guard lock(mu_);
    for (auto& t : conns_) t.join();
  }
  uint16_t port() const { return port_; }
  int accepted() const { return accepted_; }

 private:
  Handler handler_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::thread> conns_;
};

// Answers every request with 200 and a body describing the request
// ("METHOD TARGET\n" + headers + "\n" + body), keep-alive.
void Echo(tcp::socket& s) {
  beast::flat_buffer buf;
  for (;;) {
    http::request_parser<http::string_body> p;
    p.body_limit(64 << 20);
    boost::system::error_code ec;
    http::read(s, buf, p, ec);
    if (ec) return;
    auto req = p.release();
    std::string body = std::string(req.method_string()) + " " + std::string(req.target()) + "\n";
    for (auto const& f : req)
      body += std::string(f.name_string()) + ": " + std::string(f.value()) + "\n";
    body += "\n" + req.body();
    http::response<http::string_body> res{http::status::ok, 11};
    res.set("X-Service", "echo");
    res.body() = body;
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    http::response_serializer<http::string_body> sr{res};
    if (req.method() == http::verb::head) {
      http::write_header(s, sr, ec);
    } else {
      http::write(s, sr, ec);
    }
    if (ec || !req.keep_alive()) return;
  }
}

struct Fixture : ::testing::Test {
  void Start(std::shared_ptr<TlsProvider> tls = nullptr) {
    auto env = std::make_shared<ProxyEnv>();
    env->domain = "localhost";
    env->route = [this](const HostRoute& r, std::function<void(RouteResult)> done) {
      std::lock_guard lock(mu);
      if (r.sandbox_id != kId)
        return done(std::unexpected(RouteError{404, "SANDBOX_NOT_FOUND", "no sandbox"}));
      auto it = routes.find(r.suffix);
      if (it == routes.end())
        return done(std::unexpected(RouteError{404, "NOT_EXPOSED", "not exposed"}));
      done(Upstream{kId, handles, ExposeTarget{it->second, 0}});
    };
    env->port_of = [](const Upstream& u) -> Result<uint16_t> { return u.target.port; };
    env->socket_for = [](const Upstream&, int family) -> Result<UniqueFd> {
      UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!fd) return FailErrno("socket");
      return fd;
    };
    env->response_timeout = 500ms;
    env->connect_timeout = 1s;
    env->guest_relay_port = relay_port;
    ServerOptions so;
    so.tls = std::move(tls);
    auto s = IngressServer::Start(std::move(so), env);
    ASSERT_TRUE(s) << s.error().message;
    server = std::move(*s);
  }
  void Expose(const std::string& suffix, uint16_t port) {
    std::lock_guard lock(mu);
    routes[suffix] = port;
  }
  std::string Host(const std::string& suffix) {
    return std::string(kLabel) + "-" + suffix + ".localhost";
  }

  tcp::socket Connect() {
    tcp::socket s(io);
    s.connect(server->endpoint());
    return s;
  }

  std::mutex mu;
  std::map<std::string, uint16_t> routes;
  std::shared_ptr<const SandboxHandles> handles;  // set: a guest (microVM)
  uint16_t relay_port = 0;
  std::unique_ptr<IngressServer> server;
  asio::io_context io;
};

http::response<http::string_body> Get(tcp::socket& s, beast::flat_buffer& buf,
                                      const std::string& host, const std::string& target = "/",
                                      bool keep_alive = true) {
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, host);
  req.keep_alive(keep_alive);
  http::write(s, req);
  http::response<http::string_body> res;
  http::read(s, buf, res);
  return res;
}

TEST_F(Fixture, KeepAliveRequestsWithForwardedHeaders) {
  Service svc(Echo);
  Start();
  Expose("8000", svc.port());
  auto c = Connect();
  beast::flat_buffer buf;
  for (int i = 0; i < 3; ++i) {
    auto res = Get(c, buf, Host("8000") + ":1234", "/a?x=" + std::to_string(i));
    ASSERT_EQ(res.result_int(), 200u);
    EXPECT_EQ(res["X-Service"], "echo");
    const std::string& b = res.body();
    EXPECT_NE(b.find("GET /a?x=" + std::to_string(i) + "\n"), std::string::npos) << b;
    EXPECT_NE(b.find("Host: " + Host("8000") + ":1234\n"), std::string::npos) << b;
    EXPECT_NE(b.find("X-Forwarded-For: 127.0.0.1\n"), std::string::npos) << b;
    EXPECT_NE(b.find("X-Forwarded-Proto: http\n"), std::string::npos) << b;
    EXPECT_NE(b.find("X-Forwarded-Host: " + Host("8000") + ":1234\n"), std::string::npos) << b;
  }
  EXPECT_EQ(svc.accepted(), 1) << "one upstream connection for the kept-alive client connection";
}

// A microVM guest: dialled at its address (127.0.0.1 stands in for it), and
// when that port is refused, through the guest agent's loopback relay.
TEST_F(Fixture, AGuestIsDialledAtItsAddressThenThroughItsLoopbackRelay) {
  Service direct(Echo);
  // Ports with nothing behind them on "the guest's address".
  tcp::acceptor closed1(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  tcp::acceptor closed2(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  const uint16_t loopback_only = closed1.local_endpoint().port();
  const uint16_t nothing = closed2.local_endpoint().port();
  closed1.close();
  closed2.close();
  // The guest agent's relay: a server on "127.0.0.1:loopback_only inside".
  std::mutex relay_mu;
  std::vector<std::string> asked;
  Service relay([&](tcp::socket& s) {
    asio::streambuf line;
    boost::system::error_code ec;
    asio::read_until(s, line, "\n", ec);
    std::string l{asio::buffers_begin(line.data()), asio::buffers_end(line.data())};
    {
      std::lock_guard lock(relay_mu);
      asked.push_back(l);
    }
    if (l != std::to_string(loopback_only) + "\r\n") {
      asio::write(s, asio::buffer("-refused\r\n", 10), ec);
      return;
    }
    asio::write(s, asio::buffer("+\r\n", 3), ec);
    Echo(s);
  });
  auto h = std::make_shared<SandboxHandles>();
  h->guest_ip = 0x7f000001;
  handles = h;
  relay_port = relay.port();
  Start();
  Expose("8000", direct.port());
  Expose("7001", loopback_only);
  Expose("7002", nothing);

  auto c = Connect();
  beast::flat_buffer buf;
  auto res = Get(c, buf, Host("8000"));
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(relay.accepted(), 0) << "a port the guest's address answers needs no relay";

  auto c2 = Connect();
  beast::flat_buffer buf2;
  res = Get(c2, buf2, Host("7001"), "/via-relay");
  ASSERT_EQ(res.result_int(), 200u) << res.body();
  EXPECT_NE(res.body().find("GET /via-relay\n"), std::string::npos) << res.body();

  auto c3 = Connect();
  beast::flat_buffer buf3;
  res = Get(c3, buf3, Host("7002"));
  EXPECT_EQ(res.result_int(), 502u);
  EXPECT_EQ(res["X-Sandboxd-Error"], "UPSTREAM_UNREACHABLE");
  EXPECT_NE(res.body().find("nothing listens on port " + std::to_string(nothing)),
            std::string::npos)
      << res.body();
  std::lock_guard lock(relay_mu);
  EXPECT_EQ(asked, (std::vector<std::string>{std::to_string(loopback_only) + "\r\n",
                                             std::to_string(nothing) + "\r\n"}));
}

TEST_F(Fixture, ClientForwardedHeadersAreNotTrusted) {
  Service svc(Echo);
  Start();
  Expose("8000", svc.port());
  auto c = Connect();
  beast::flat_buffer buf;
  http::request<http::empty_body> req{http::verb::get, "/", 11};
  req.set(http::field::host, Host("8000"));
  req.set("X-Forwarded-For", "1.2.3.4");
  req.set("X-Forwarded-Proto", "https");
  req.set("X-Forwarded-Host", "evil.example");
  req.set(http::field::connection, "X-Drop-Me");
  req.set("X-Drop-Me", "1");
  http::write(c, req);
  http::response<http::string_body> res;
  http::read(c, buf, res);
  const std::string& b = res.body();
  EXPECT_NE(b.find("X-Forwarded-For: 1.2.3.4, 127.0.0.1\n"), std::string::npos) << b;
  EXPECT_NE(b.find("X-Forwarded-Proto: http\n"), std::string::npos) << b;
  EXPECT_EQ(b.find("evil.example"), std::string::npos) << b;
  EXPECT_EQ(b.find("X-Drop-Me"), std::string::npos) << "hop-by-hop (listed in Connection): " << b;
}

TEST_F(Fixture, ErrorsAreAnsweredNotHung) {
  // Accepts, reads the request, never answers.
  Service silent([](tcp::socket& s) {
    char b[4096];
    boost::system::error_code ec;
    s.read_some(asio::buffer(b), ec);
    std::this_thread::sleep_for(2s);
  });
  // Accepts and closes at once.
  Service rude([](tcp::socket& s) { s.close(); });
  Start();
  Expose("8001", silent.port());
  Expose("8002", rude.port());
  uint16_t closed_port;
  {
    tcp::acceptor a(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    closed_port = a.local_endpoint().port();
  }
  Expose("8003", closed_port);

  struct Case {
    std::string host;
    unsigned status;
    std::string code;
  } cases[] = {
      {"localhost", 404, "UNKNOWN_HOST"},
      {"sbx-loc-0123456789abcdefghjk-8000.example.com", 404, "UNKNOWN_HOST"},
      {"sbx-loc-zzzzzzzzzzzzzzzzzzzz-8000.localhost", 404, "SANDBOX_NOT_FOUND"},
      {Host("9999"), 404, "NOT_EXPOSED"},
      {Host("8001"), 504, "UPSTREAM_TIMEOUT"},
      {Host("8002"), 502, "UPSTREAM_CLOSED"},
      {Host("8003"), 502, "UPSTREAM_UNREACHABLE"},
  };
  for (const auto& cs : cases) {
    auto c = Connect();
    beast::flat_buffer buf;
    auto t0 = std::chrono::steady_clock::now();
    auto res = Get(c, buf, cs.host);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s) << cs.host;
    EXPECT_EQ(res.result_int(), cs.status) << cs.host << ": " << res.body();
    EXPECT_EQ(res["X-Sandboxd-Error"], cs.code) << cs.host;
    EXPECT_FALSE(res.keep_alive());
    EXPECT_NE(res.body().find("sandboxd ingress: "), std::string::npos);
  }
}

TEST_F(Fixture, MalformedRequests) {
  Start();
  auto send = [&](const std::string& raw) {
    auto c = Connect();
    asio::write(c, asio::buffer(raw));
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    boost::system::error_code ec;
    http::read(c, buf, res, ec);
    return ec ? 0u : res.result_int();
  };
  EXPECT_EQ(send("GET / HTTP/1.1\r\n\r\n"), 400u) << "no Host";
  EXPECT_EQ(send("GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n"), 400u);
  EXPECT_EQ(send("CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n"), 405u);
  EXPECT_EQ(send("GET / HTTP/1.1\r\nHost: " + Host("1") +
                 "\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400u);
  EXPECT_EQ(
      send("GET / HTTP/1.1\r\nHost: " + Host("1") + "\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
      501u);
  EXPECT_EQ(send("GET http://elsewhere/ HTTP/1.1\r\nHost: " + Host("1") + "\r\n\r\n"), 400u);
  EXPECT_EQ(send("garbage\r\n\r\n"), 400u);
}

TEST_F(Fixture, ChunkedRequestBodyStreamsThrough) {
  Service svc(Echo);
  Start();
  Expose("8000", svc.port());
  auto c = Connect();
  std::string head =
      "POST /up HTTP/1.1\r\nHost: " + Host("8000") + "\r\nTransfer-Encoding: chunked\r\n\r\n";
  asio::write(c, asio::buffer(head + "5\r\nhello\r\n"));
  std::this_thread::sleep_for(50ms);
  asio::write(c, asio::buffer(std::string("6\r\n world\r\n0\r\n\r\n")));
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(c, buf, res);
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_TRUE(res.body().ends_with("\nhello world")) << res.body();
  EXPECT_NE(res.body().find("Transfer-Encoding: chunked\n"), std::string::npos);

  // A large Content-Length body, in pieces.
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
  http::request<http::string_body> req{http::verb::put, "/big", 11};
  req.set(http::field::host, Host("8000"));
  req.body() = big;
  req.prepare_payload();
  http::write(c, req);
  http::response<http::string_body> res2;
  http::read(c, buf, res2);
  ASSERT_EQ(res2.result_int(), 200u);
  EXPECT_TRUE(res2.body().ends_with("\n\n" + big));
}

TEST_F(Fixture, ResponsesStreamAsProduced) {
  // An event stream: one event, then wait until the test saw it, then more.
  std::promise<void> seen;
  auto seen_f = seen.get_future().share();
  Service svc([seen_f](tcp::socket& s) {
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::read(s, buf, req);
    std::string head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
    auto chunk = [](const std::string& d) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "%zx\r\n", d.size());
      return std::string(hex) + d + "\r\n";
    };
    asio::write(s, asio::buffer(head + chunk("data: one\n\n")));
    seen_f.wait_for(5s);
    asio::write(s, asio::buffer(chunk("data: two\n\n") + "0\r\n\r\n"));
  });
  Start();
  Expose("8000", svc.port());
  auto c = Connect();
  std::string req = "GET /events HTTP/1.1\r\nHost: " + Host("8000") + "\r\n\r\n";
  asio::write(c, asio::buffer(req));
  std::string got;
  char b[4096];
  while (got.find("data: one") == std::string::npos) {
    size_t n = c.read_some(asio::buffer(b));
    got.append(b, n);
  }
  EXPECT_EQ(got.find("data: two"), std::string::npos);
  seen.set_value();
  while (got.find("0\r\n\r\n") == std::string::npos) {
    size_t n = c.read_some(asio::buffer(b));
    got.append(b, n);
  }
  EXPECT_NE(got.find("data: two"), std::string::npos);
  EXPECT_NE(got.find("text/event-stream"), std::string::npos);
}

TEST_F(Fixture, CloseDelimitedResponseIsRechunked) {
  // An HTTP/1.0 server (python's http.server): no length, closes after.
  Service svc([](tcp::socket& s) {
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::read(s, buf, req);
    asio::write(
        s,
        asio::buffer(std::string("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold school")));
  });
  Start();
  Expose("8000", svc.port());
  auto c = Connect();
  beast::flat_buffer buf;
  for (int i = 0; i < 2; ++i) {
    auto res = Get(c, buf, Host("8000"));
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_EQ(res.body(), "old school");
    EXPECT_TRUE(res.chunked());
    EXPECT_TRUE(res.keep_alive()) << "the client connection outlives the upstream one";
  }
  EXPECT_EQ(svc.accepted(), 2);
}

TEST_F(Fixture, HeadAndNoContent) {
  Service svc(Echo);
  Start();
  Expose("8000", svc.port());
  auto c = Connect();
  http::request<http::empty_body> req{http::verb::head, "/", 11};
  req.set(http::field::host, Host("8000"));
  http::write(c, req);
  beast::flat_buffer buf;
  http::response_parser<http::empty_body> p;
  p.skip(true);
  http::read(c, buf, p);
  EXPECT_EQ(p.get().result_int(), 200u);
  EXPECT_TRUE(p.get().has_content_length());
  auto res = Get(c, buf, Host("8000"));  // the connection is still in step
  EXPECT_EQ(res.result_int(), 200u);
}

TEST_F(Fixture, UpgradeRelaysBytesBothWays) {
  Service svc([](tcp::socket& s) {
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::read(s, buf, req);
    if (req[http::field::upgrade] != "websocket" || req[http::field::connection] != "Upgrade")
      return;
    asio::write(s, asio::buffer(std::string("HTTP/1.1 101 Switching Protocols\r\nUpgrade: "
                                            "websocket\r\nConnection: Upgrade\r\n\r\nhi")));
    char b[256];
    for (;;) {  // echo, upper-cased
      boost::system::error_code ec;
      size_t n = s.read_some(asio::buffer(b), ec);
      if (ec) return;
      for (size_t i = 0; i < n; ++i) b[i] = static_cast<char>(std::toupper(b[i]));
      asio::write(s, asio::buffer(b, n));
    }
  });
  Start();
  Expose("8000", svc.port());
  auto c = Connect();
  std::string req = "GET /ws HTTP/1.1\r\nHost: " + Host("8000") +
                    "\r\nUpgrade: websocket\r\nConnection: keep-alive, "
                    "Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
  asio::write(c, asio::buffer(req));
  std::string got;
  char b[1024];
  while (got.find("\r\n\r\nhi") == std::string::npos) got.append(b, c.read_some(asio::buffer(b)));
  EXPECT_TRUE(got.starts_with("HTTP/1.1 101 "));
  asio::write(c, asio::buffer(std::string("ping")));
  got.clear();
  while (got.size() < 4) got.append(b, c.read_some(asio::buffer(b)));
  EXPECT_EQ(got, "PING");
}

TEST_F(Fixture, TlsWithTheLocalCa) {
  Service svc(Echo);
  char dir[] = "/tmp/ingress-proxy-test-XXXXXX";
  ASSERT_TRUE(::mkdtemp(dir));
  auto tls = TlsProvider::LocalCa(dir, "localhost");
  ASSERT_TRUE(tls);
  Start(*tls);
  Expose("8000", svc.port());

  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.add_certificate_authority(asio::buffer((*tls)->ca_pem()));
  ctx.set_verify_mode(asio::ssl::verify_peer);
  asio::ssl::stream<tcp::socket> s(io, ctx);
  s.next_layer().connect(server->endpoint());
  std::string host = Host("8000");
  SSL_set_tlsext_host_name(s.native_handle(), host.c_str());
  X509_VERIFY_PARAM_set1_host(SSL_get0_param(s.native_handle()), host.c_str(), host.size());
  s.handshake(asio::ssl::stream_base::client);
  http::request<http::empty_body> req{http::verb::get, "/secure", 11};
  req.set(http::field::host, host);
  http::write(s, req);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(s, buf, res);
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_NE(res.body().find("X-Forwarded-Proto: https\n"), std::string::npos) << res.body();

  // Plain HTTP on the same port still works.
  auto c = Connect();
  auto plain = Get(c, buf, host);
  EXPECT_EQ(plain.result_int(), 200u);
  std::filesystem::remove_all(dir);
}

TEST_F(Fixture, EarlyResponseBeforeTheBodyEnds) {
  // Refuses uploads at once without reading them.
  Service svc([](tcp::socket& s) {
    beast::flat_buffer buf;
    http::request_parser<http::string_body> p;
    http::read_header(s, buf, p);
    asio::write(s, asio::buffer(std::string("HTTP/1.1 413 Payload Too Large\r\nContent-Length: "
                                            "3\r\nConnection: close\r\n\r\nno\n")));
    std::this_thread::sleep_for(200ms);
  });
  Start();
  Expose("8000", svc.port());
  auto c = Connect();
  std::string head =
      "POST / HTTP/1.1\r\nHost: " + Host("8000") + "\r\nContent-Length: 100000\r\n\r\n";
  asio::write(c, asio::buffer(head + std::string(1000, 'x')));
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(c, buf, res);
  EXPECT_EQ(res.result_int(), 413u);
  EXPECT_FALSE(res.keep_alive());
}

}  // namespace
}  // namespace sandboxd::ingress

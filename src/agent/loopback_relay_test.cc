// The guest side of the loopback relay, on the host's loopback: the relay
// answers only its "gateway" (127.0.0.1 here) and connects it to
// 127.0.0.1:<port>.
#include "agent/loopback_relay.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "common/fd.h"

namespace sandboxd::agent {
namespace {

uint16_t PortOf(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

UniqueFd Dial(uint16_t port, uint32_t from = INADDR_LOOPBACK) {
  UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in src{.sin_family = AF_INET, .sin_port = 0};
  src.sin_addr.s_addr = htonl(from);
  EXPECT_EQ(::bind(c.get(), reinterpret_cast<sockaddr*>(&src), sizeof src), 0);
  sockaddr_in dst{.sin_family = AF_INET, .sin_port = htons(port)};
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(c.get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst), 0);
  return c;
}

// Everything until EOF, or what came within `ms`.
std::string ReadAll(int fd, int ms = 3000) {
  std::string out;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms) != 1) return out;
    char buf[256];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

TEST(LoopbackRelay, RelaysToLoopbackForTheGatewayOnly) {
  // A service on 127.0.0.1 that answers "pong:<what it got>" after EOF.
  UniqueFd svc(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in lo{.sin_family = AF_INET, .sin_port = 0};
  lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(svc.get(), reinterpret_cast<sockaddr*>(&lo), sizeof lo), 0);
  ASSERT_EQ(::listen(svc.get(), 4), 0);
  std::thread service([&] {
    UniqueFd c(::accept4(svc.get(), nullptr, nullptr, SOCK_CLOEXEC));
    std::string got = ReadAll(c.get());
    std::string reply = "pong:" + got;
    ::send(c.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
  });

  auto relay = StartLoopbackRelay(INADDR_LOOPBACK, 0);
  ASSERT_TRUE(relay) << relay.error().message;
  auto again = StartLoopbackRelay(INADDR_LOOPBACK, 0);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *relay) << "one relay per process";

  UniqueFd c = Dial(*relay);
  const std::string hello = std::to_string(PortOf(svc.get())) + "\r\nping";
  ASSERT_EQ(::send(c.get(), hello.data(), hello.size(), 0), static_cast<ssize_t>(hello.size()));
  ASSERT_EQ(::shutdown(c.get(), SHUT_WR), 0);  // the half close reaches the service
  EXPECT_EQ(ReadAll(c.get()), "+\r\npong:ping");
  service.join();

  // Refused, malformed: a "-" line, then closed.
  UniqueFd closed(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::bind(closed.get(), reinterpret_cast<sockaddr*>(&lo), sizeof lo), 0);
  const uint16_t nobody = PortOf(closed.get());  // bound, not listening
  UniqueFd r = Dial(*relay);
  const std::string line = std::to_string(nobody) + "\n";
  ::send(r.get(), line.data(), line.size(), 0);
  EXPECT_EQ(ReadAll(r.get()).substr(0, 1), "-");
  for (const char* bad : {"0\r\n", "65536\r\n", "x\r\n", "123456789\r\n"}) {
    UniqueFd b = Dial(*relay);
    ::send(b.get(), bad, std::strlen(bad), 0);
    EXPECT_EQ(ReadAll(b.get()), "-bad request\r\n") << bad;
  }

  // Anyone but the gateway: closed without a word.
  ASSERT_TRUE(StartLoopbackRelay(INADDR_LOOPBACK + 1, 0));
  UniqueFd stranger = Dial(*relay);
  ::send(stranger.get(), hello.data(), hello.size(), 0);
  EXPECT_EQ(ReadAll(stranger.get()), "");
  UniqueFd gw = Dial(*relay, INADDR_LOOPBACK + 1);  // 127.0.0.2 is loopback too
  ::send(gw.get(), "1\r\n", 3, 0);
  EXPECT_EQ(ReadAll(gw.get()).substr(0, 1), "-") << "the gateway is answered";
}

}  // namespace
}  // namespace sandboxd::agent

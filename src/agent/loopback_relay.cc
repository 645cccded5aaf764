#include "agent/loopback_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/fd.h"

namespace sandboxd::agent {
namespace {

std::atomic<uint32_t> g_gateway{0};
std::atomic<int> g_active{0};

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// One direction until EOF or an error; then the other side learns (half
// close on EOF, both ways on an error so the other direction ends too).
void Pump(int from, int to) {
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::recv(from, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      ::shutdown(to, SHUT_WR);
      return;
    }
    if (n < 0 || !WriteAll(to, buf, static_cast<size_t>(n))) {
      ::shutdown(to, SHUT_RDWR);
      ::shutdown(from, SHUT_RDWR);
      return;
    }
  }
}

// "<port>\r\n" (or "\n"), read byte by byte so nothing after it is consumed;
// 0 when malformed or not sent within the socket's receive timeout.
uint16_t ReadPortLine(int fd) {
  std::string line;
  while (line.size() < 8) {
    char c;
    ssize_t n = ::recv(fd, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n != 1) return 0;
    if (c == '\n') break;
    line.push_back(c);
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  unsigned port = 0;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), port);
  if (ec != std::errc() || end != line.data() + line.size() || port == 0 || port > 65535) return 0;
  return static_cast<uint16_t>(port);
}

void Serve(UniqueFd client) {
  struct Done {
    ~Done() { g_active--; }
  } done;
  timeval tv{5, 0};  // for the port line only
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const uint16_t port = ReadPortLine(client.get());
  if (port == 0) return (void)WriteAll(client.get(), "-bad request\r\n", 14);
  tv = timeval{0, 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  auto server = std::make_shared<UniqueFd>(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!*server) return (void)WriteAll(client.get(), "-no socket\r\n", 12);
  sockaddr_in lo{};
  lo.sin_family = AF_INET;
  lo.sin_port = htons(port);
  lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(server->get(), reinterpret_cast<sockaddr*>(&lo), sizeof lo) != 0) {
    const std::string no = std::string("-") + std::strerror(errno) + "\r\n";
    return (void)WriteAll(client.get(), no.data(), no.size());
  }
  if (!WriteAll(client.get(), "+\r\n", 3)) return;
  const int one = 1;
  ::setsockopt(server->get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto down = std::make_shared<UniqueFd>(std::move(client));
  // Both directions at once: one blocked write must not stop the other.
  std::thread up([down, server] { Pump(down->get(), server->get()); });
  Pump(server->get(), down->get());
  up.join();
}

void AcceptLoop(UniqueFd listener) {
  for (;;) {
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    UniqueFd c(::accept4(listener.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
    if (!c) {
      if (errno != EINTR && errno != ECONNABORTED) ::usleep(10000);  // EMFILE and such
      continue;
    }
    const uint32_t gw = g_gateway.load();
    if (gw == 0 || peer.sin_family != AF_INET || ntohl(peer.sin_addr.s_addr) != gw) continue;
    if (g_active.fetch_add(1) >= kMaxRelays) {
      g_active--;
      continue;
    }
    const int one = 1;
    ::setsockopt(c.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread(Serve, std::move(c)).detach();
  }
}

}  // namespace

Result<uint16_t> StartLoopbackRelay(uint32_t gateway, uint16_t port) {
  static std::mutex mu;
  static uint16_t started = 0;
  std::lock_guard lock(mu);
  g_gateway = gateway;
  if (started != 0) return started;
  UniqueFd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!l) return FailErrno("loopback relay: socket");
  const int one = 1;
  ::setsockopt(l.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_port = htons(port);
  any.sin_addr.s_addr = htonl(INADDR_ANY);
  if (::bind(l.get(), reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) {
    return FailErrno("loopback relay: bind port " + std::to_string(port));
  }
  if (::listen(l.get(), 64) != 0) return FailErrno("loopback relay: listen");
  socklen_t len = sizeof any;
  if (::getsockname(l.get(), reinterpret_cast<sockaddr*>(&any), &len) != 0) {
    return FailErrno("loopback relay: getsockname");
  }
  // Detached: in a VM the agent lives as long as the machine.
  std::thread(AcceptLoop, std::move(l)).detach();
  started = ntohs(any.sin_port);
  return started;
}

}  // namespace sandboxd::agent

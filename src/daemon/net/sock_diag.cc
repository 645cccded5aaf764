#include "daemon/net/sock_diag.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/fd.h"

namespace sandboxd::net {
namespace {

struct DiagRequest {
  nlmsghdr nlh;
  inet_diag_req_v2 req;
};

// Connections, not listeners or TIME_WAIT leftovers (which hold nothing).
constexpr uint32_t kStates = ~((1u << TCP_LISTEN) | (1u << TCP_TIME_WAIT) | (1u << TCP_CLOSE));

Status SendRequest(int fd, const DiagRequest& r) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, &r, sizeof r, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) !=
      static_cast<ssize_t>(sizeof r)) {
    return FailErrno("sock_diag send");
  }
  return {};
}

// The ids of the dumped sockets connected to `peer` (network byte order).
Result<std::vector<inet_diag_sockid>> Dump(int fd, uint32_t peer) {
  DiagRequest r{};
  r.nlh.nlmsg_len = sizeof r;
  r.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  r.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  r.nlh.nlmsg_seq = 1;
  r.req.sdiag_family = AF_INET;
  r.req.sdiag_protocol = IPPROTO_TCP;
  r.req.idiag_states = kStates;
  SBX_TRY(SendRequest(fd, r));
  std::vector<inet_diag_sockid> ids;
  alignas(nlmsghdr) char buf[32 * 1024];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno("sock_diag dump");
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE) return ids;
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        return Fail(Error::Errno("sock_diag dump", -e->error));
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
      const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      if (m->id.idiag_dst[0] == peer) ids.push_back(m->id);
    }
  }
}

// 0, or the errno of the kernel's answer.
int Destroy(int fd, const inet_diag_sockid& id) {
  DiagRequest r{};
  r.nlh.nlmsg_len = sizeof r;
  r.nlh.nlmsg_type = SOCK_DESTROY;
  r.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  r.nlh.nlmsg_seq = 2;
  r.req.sdiag_family = AF_INET;
  r.req.sdiag_protocol = IPPROTO_TCP;
  r.req.idiag_states = kStates;
  r.req.id = id;
  if (!SendRequest(fd, r)) return errno ? errno : EIO;
  alignas(nlmsghdr) char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_ERROR) return -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
    }
  }
}

}  // namespace

Result<int> AbortTcpConnectionsTo(uint32_t peer_ip) {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd) return FailErrno("socket(NETLINK_SOCK_DIAG)");
  auto ids = Dump(fd.get(), htonl(peer_ip));
  if (!ids) return Fail(ids.error());
  int aborted = 0;
  for (const auto& id : *ids) {
    const int err = Destroy(fd.get(), id);
    if (err == 0) {
      ++aborted;
    } else if (err == EOPNOTSUPP) {
      return Fail(Error::Errno("SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY)", err));
    }  // ENOENT: it closed meanwhile
  }
  return aborted;
}

}  // namespace sandboxd::net

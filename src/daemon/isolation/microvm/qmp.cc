#include "daemon/isolation/microvm/qmp.h"

#include <poll.h>
#include <sys/socket.h>

#include <cstring>
#include <thread>

namespace sandboxd::isolation::microvm {
namespace {

// QMP replies here are small; a longer line is not a reply of ours.
constexpr size_t kMaxLine = 1 << 20;

int MillisLeft(QmpClient::Clock::time_point deadline) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - QmpClient::Clock::now());
  return static_cast<int>(std::max<int64_t>(left.count(), 0));
}

Status SendAll(int fd, const std::string& data, int pass_fd,
               QmpClient::Clock::time_point deadline) {
  size_t off = 0;
  bool fd_sent = pass_fd < 0;
  while (off < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    int r = ::poll(&p, 1, MillisLeft(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return FailErrno("poll (QMP)");
    if (r == 0) return FailMsg("QMP: timed out sending a command");
    iovec iov{const_cast<char*>(data.data() + off), data.size() - off};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    if (!fd_sent) {
      // The fd rides on the first byte of the command, where QEMU looks for it.
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return FailErrno("QMP: send");
    fd_sent = true;
    off += static_cast<size_t>(n);
  }
  return {};
}

}  // namespace

Result<nlohmann::json> QmpClient::ReadMessage(Clock::time_point deadline) {
  for (;;) {
    if (auto nl = buf_.find('\n'); nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object())
        return FailMsg("QMP: not a JSON object: " + line.substr(0, 200));
      return j;
    }
    if (buf_.size() > kMaxLine) return FailMsg("QMP: reply too long");
    pollfd p{sock_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, MillisLeft(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return FailErrno("poll (QMP)");
    if (r == 0) return FailMsg("QMP: no reply in time");
    char chunk[4096];
    ssize_t n = ::recv(sock_.get(), chunk, sizeof chunk, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return FailErrno("QMP: recv");
    if (n == 0) return FailMsg("QMP: QEMU closed the monitor");
    buf_.append(chunk, static_cast<size_t>(n));
  }
}

Result<QmpClient> QmpClient::Connect(UniqueFd sock, Clock::time_point deadline) {
  QmpClient c(std::move(sock));
  auto greeting = c.ReadMessage(deadline);
  if (!greeting) return Fail(greeting.error().Wrap("QMP greeting"));
  if (!greeting->contains("QMP")) return FailMsg("QMP: unexpected greeting");
  auto caps = c.Execute("qmp_capabilities", nlohmann::json::object(), deadline);
  if (!caps) return Fail(caps.error());
  return c;
}

Result<nlohmann::json> QmpClient::Execute(const std::string& command,
                                          const nlohmann::json& arguments,
                                          Clock::time_point deadline, int pass_fd) {
  nlohmann::json cmd = {{"execute", command}};
  if (!arguments.empty()) cmd["arguments"] = arguments;
  SBX_TRY(SendAll(sock_.get(), cmd.dump() + "\n", pass_fd, deadline));
  for (;;) {
    auto msg = ReadMessage(deadline);
    if (!msg) return Fail(msg.error().Wrap("QMP " + command));
    if (msg->contains("event")) continue;  // asynchronous: STOP, MIGRATION, ...
    if (auto r = msg->find("return"); r != msg->end()) return *r;
    if (auto e = msg->find("error"); e != msg->end() && e->is_object()) {
      std::string desc = e->value("desc", std::string("(no description)"));
      return FailMsg("QMP " + command + ": " + desc);
    }
    return FailMsg("QMP " + command + ": unexpected reply " + msg->dump().substr(0, 200));
  }
}

Status SaveVmState(QmpClient& qmp, int state_fd, QmpClient::Clock::time_point deadline) {
  // Stopped first, so the state is exactly the VM at this instant and the
  // migration needs one pass (nothing dirties memory meanwhile).
  SBX_TRY(qmp.Execute("stop", {}, deadline));
  // No bandwidth cap: this is a local file (QEMU's default caps migration
  // at 128 MiB/s).
  SBX_TRY(qmp.Execute("migrate-set-parameters", {{"max-bandwidth", int64_t{1} << 40}}, deadline));
  SBX_TRY(qmp.Execute("getfd", {{"fdname", "snapshot"}}, deadline, state_fd));
  SBX_TRY(qmp.Execute("migrate", {{"uri", "fd:snapshot"}}, deadline));
  for (;;) {
    auto st = qmp.Execute("query-migrate", {}, deadline);
    if (!st) return Fail(st.error());
    std::string status = st->value("status", std::string());
    if (status == "completed") return {};
    if (status == "failed" || status == "cancelled") {
      return FailMsg("migration " + status + ": " +
                     st->value("error-desc", std::string("(no reason given)")));
    }
    if (QmpClient::Clock::now() >= deadline)
      return FailMsg("migration did not complete in time (" + status + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace sandboxd::isolation::microvm

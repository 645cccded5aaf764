// The QMP client against a scripted fake QEMU on a socketpair: the
// handshake, events between replies, errors, the fd passed with getfd, and
// the save sequence.
#include "daemon/isolation/microvm/qmp.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <thread>

namespace sandboxd::isolation::microvm {
namespace {

using nlohmann::json;

// The QEMU side: reads one command line (and an fd, if one came along).
struct FakeQemu {
  UniqueFd sock;
  std::string buf;
  std::vector<std::string> commands;

  json Read(int* fd_out = nullptr) {
    while (buf.find('\n') == std::string::npos) {
      char data[4096];
      iovec iov{data, sizeof data};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = ::recvmsg(sock.get(), &msg, 0);
      if (n <= 0) return json();
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_type == SCM_RIGHTS && fd_out) std::memcpy(fd_out, CMSG_DATA(c), sizeof(int));
      }
      buf.append(data, static_cast<size_t>(n));
    }
    auto nl = buf.find('\n');
    json j = json::parse(buf.substr(0, nl));
    buf.erase(0, nl + 1);
    commands.push_back(j.value("execute", std::string()));
    return j;
  }
  void Send(const json& j) {
    std::string line = j.dump() + "\r\n";
    ASSERT_EQ(::write(sock.get(), line.data(), line.size()), static_cast<ssize_t>(line.size()));
  }
  void Greet() {
    Send({{"QMP", {{"version", {{"qemu", {{"major", 7}}}}}, {"capabilities", json::array()}}}});
    EXPECT_EQ(Read()["execute"], "qmp_capabilities");
    Send({{"return", json::object()}});
  }
};

std::pair<UniqueFd, FakeQemu> Pair() {
  int sp[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  return {UniqueFd(sp[0]), FakeQemu{UniqueFd(sp[1]), {}, {}}};
}

auto Deadline(int ms = 5000) { return QmpClient::Clock::now() + std::chrono::milliseconds(ms); }

TEST(Qmp, CommandsEventsAndErrors) {
  auto [ours, qemu] = Pair();
  std::thread t([&q = qemu] {
    q.Greet();
    EXPECT_EQ(q.Read()["execute"], "query-status");
    q.Send({{"event", "RESUME"}, {"timestamp", {{"seconds", 1}}}});  // skipped
    q.Send({{"return", {{"status", "running"}}}});
    auto cmd = q.Read();
    EXPECT_EQ(cmd["arguments"]["x"], 1);
    q.Send({{"error", {{"class", "GenericError"}, {"desc", "boom"}}}});
  });
  auto c = QmpClient::Connect(std::move(ours), Deadline());
  ASSERT_TRUE(c) << c.error().message;
  auto st = c->Execute("query-status", {}, Deadline());
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ((*st)["status"], "running");
  auto bad = c->Execute("bogus", {{"x", 1}}, Deadline());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("boom"), std::string::npos) << bad.error().message;
  t.join();
}

TEST(Qmp, SilenceAndHangUpAreErrorsInTime) {
  {
    auto [ours, qemu] = Pair();
    auto t0 = QmpClient::Clock::now();
    EXPECT_FALSE(QmpClient::Connect(std::move(ours), Deadline(200)));  // no greeting
    EXPECT_LT(QmpClient::Clock::now() - t0, std::chrono::seconds(3));
  }
  {
    auto [ours, qemu] = Pair();
    qemu.sock.Reset();  // QEMU died
    auto c = QmpClient::Connect(std::move(ours), Deadline());
    ASSERT_FALSE(c);
    EXPECT_NE(c.error().message.find("closed"), std::string::npos) << c.error().message;
  }
}

TEST(Qmp, SaveVmStateStopsPassesTheFdAndWaitsForCompletion) {
  auto [ours, qemu] = Pair();
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  UniqueFd state_r(pipefd[0]), state_w(pipefd[1]);
  std::thread t([&q = qemu] {
    q.Greet();
    EXPECT_EQ(q.Read()["execute"], "stop");
    q.Send({{"return", json::object()}});
    q.Send({{"event", "STOP"}});
    auto params = q.Read();
    EXPECT_EQ(params["execute"], "migrate-set-parameters");
    EXPECT_GE(params["arguments"]["max-bandwidth"].get<int64_t>(), int64_t{1} << 30);
    q.Send({{"return", json::object()}});
    int fd = -1;
    auto getfd = q.Read(&fd);
    EXPECT_EQ(getfd["arguments"]["fdname"], "snapshot");
    ASSERT_GE(fd, 0) << "no fd came with getfd";
    EXPECT_EQ(::write(fd, "RAM+devices", 11), 11);  // what migration writes
    ::close(fd);
    q.Send({{"return", json::object()}});
    EXPECT_EQ(q.Read()["arguments"]["uri"], "fd:snapshot");
    q.Send({{"return", json::object()}});
    EXPECT_EQ(q.Read()["execute"], "query-migrate");
    q.Send({{"return", {{"status", "active"}}}});
    EXPECT_EQ(q.Read()["execute"], "query-migrate");
    q.Send({{"event", "MIGRATION"}, {"data", {{"status", "completed"}}}});
    q.Send({{"return", {{"status", "completed"}}}});
  });
  auto c = QmpClient::Connect(std::move(ours), Deadline());
  ASSERT_TRUE(c) << c.error().message;
  auto st = SaveVmState(*c, state_w.get(), Deadline());
  EXPECT_TRUE(st) << st.error().message;
  t.join();
  state_w.Reset();
  char buf[32] = {};
  EXPECT_EQ(::read(state_r.get(), buf, sizeof buf), 11);
  EXPECT_STREQ(buf, "RAM+devices");
}

TEST(Qmp, FailedMigrationSaysWhy) {
  auto [ours, qemu] = Pair();
  std::thread t([&q = qemu] {
    q.Greet();
    for (const char* cmd : {"stop", "migrate-set-parameters", "getfd", "migrate"}) {
      EXPECT_EQ(q.Read()["execute"], cmd);
      q.Send({{"return", json::object()}});
    }
    EXPECT_EQ(q.Read()["execute"], "query-migrate");
    q.Send({{"return", {{"status", "failed"}, {"error-desc", "No space left on device"}}}});
  });
  auto c = QmpClient::Connect(std::move(ours), Deadline());
  ASSERT_TRUE(c);
  auto st = SaveVmState(*c, 1, Deadline());
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("No space left"), std::string::npos) << st.error().message;
  t.join();
}

}  // namespace
}  // namespace sandboxd::isolation::microvm

// Black-box tests of sandbox-agent: the real static binary is started on a
// socketpair and driven through the agent link, as sandboxd would.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "agent/test_link_client.h"

namespace sandboxd::agent {
namespace {

using link::FrameType;
using link::kInitialWindow;
using nlohmann::json;
using testing::AgentUnderTest;
using testing::Ms;

json SpawnReq(std::vector<std::string> argv, uint32_t in, uint32_t out, uint32_t err,
              std::string cwd = "/") {
  return json{{"op", "spawn"},
              {"argv", argv},
              {"env", {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/"}},
              {"cwd", cwd},
              {"uid", getuid()},
              {"gid", getgid()},
              {"stdin", in},
              {"stdout", out},
              {"stderr", err}};
}

int ErrnoOf(const json& resp) {
  if (!resp.is_object() || !resp.contains("err")) return 0;
  return resp["err"].value("errno", 0);
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    agent_ = AgentUnderTest::Start(SANDBOX_AGENT_PATH);
    ASSERT_NE(agent_, nullptr);
    ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->ready; }));
  }
  void TearDown() override {
    if (agent_) {
      EXPECT_EQ(agent_->violation, "");
    }
  }

  // Spawns and returns the pid, or -1 (with a test failure).
  int64_t Spawn(const json& req) {
    json resp = agent_->Call(req);
    EXPECT_TRUE(resp.contains("ok")) << resp.dump();
    if (!resp.contains("ok")) return -1;
    return resp["ok"]["pid"].get<int64_t>();
  }

  bool WaitExitEvent(int64_t pid) {
    return agent_->WaitUntil([&] { return agent_->exits.contains(pid); });
  }

  std::unique_ptr<AgentUnderTest> agent_;
};

TEST_F(AgentTest, FirstMessageIsReadyEvent) {
  ASSERT_FALSE(agent_->events.empty());
  EXPECT_EQ(agent_->events[0], (json{{"event", "ready"}, {"version", 1}}));
}

TEST_F(AgentTest, PingAndUnknownOp) {
  json pong = agent_->Call({{"op", "ping"}});
  EXPECT_EQ(pong["ok"], json::object());
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "frobnicate"}})), ENOSYS);
}

TEST_F(AgentTest, SurvivesHostileControlMessages) {
  for (const std::string& bad : std::vector<std::string>{"", "not json", "[1,2,3]", "42", "{\"id\":-1,\"op\":\"ping\"}",
                          "{\"op\":\"ping\"}", std::string(100000, '[')}) {
    ASSERT_TRUE(agent_->Send(FrameType::kControl, 0, bad));
  }
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", 7}})), EINVAL);
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "spawn"}, {"argv", "sh"}})), EINVAL);
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "spawn"}, {"argv", json::array()}})), EINVAL);
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "spawn"}, {"argv", {"true"}}, {"uid", "root"}})), EINVAL);
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "kill"}, {"pid", 1}, {"signal", 0}})), EINVAL);
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "kill"}, {"pid", 1}, {"signal", 65}})), EINVAL);
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "kill"}, {"pid", "x"}, {"signal", 9}})), EINVAL);
  // Frames for channels that do not exist are ignored.
  ASSERT_TRUE(agent_->Send(FrameType::kData, 99, "x"));
  ASSERT_TRUE(agent_->Send(FrameType::kWindow, 98, "abcd"));
  ASSERT_TRUE(agent_->Send(FrameType::kReset, 97, ""));
  EXPECT_TRUE(agent_->Call({{"op", "ping"}}).contains("ok"));
}

TEST_F(AgentTest, SpawnCollectsBothStreamsAndExitCode) {
  int64_t pid = Spawn(SpawnReq({"sh", "-c", "echo out; echo err >&2; exit 3"}, 0, 1, 2));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(agent_->WaitUntil(
      [&] { return agent_->Out(1).eof && agent_->Out(2).eof && agent_->exits.contains(pid); }));
  EXPECT_EQ(agent_->Out(1).data, "out\n");
  EXPECT_EQ(agent_->Out(2).data, "err\n");
  EXPECT_EQ(agent_->exits[pid], (json{{"event", "exit"}, {"pid", pid}, {"code", 3}, {"signal", 0}}));
}

TEST_F(AgentTest, ChildRunsInOwnSessionWithDefaultSignals) {
  // $$ is the pid; field 6 of /proc/PID/stat is the session id. The exec'd
  // grep inspects its own signal state (the shell's varies while it waits):
  // nothing ignored although the agent ignores SIGPIPE, nothing blocked
  // although the agent blocks SIGCHLD.
  int64_t pid = Spawn(SpawnReq(
      {"sh", "-c",
       "cut -d' ' -f6 /proc/$$/stat; ls /proc/$$/fd; exec grep -E '^(SigIgn|SigBlk)' /proc/self/status"},
      0, 1, 0));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(1).eof && agent_->exits.contains(pid); }));
  const std::string& out = agent_->Out(1).data;
  EXPECT_EQ(out.substr(0, out.find('\n')), std::to_string(pid)) << out;
  EXPECT_NE(out.find("SigIgn:\t0000000000000000"), std::string::npos) << out;
  EXPECT_NE(out.find("SigBlk:\t0000000000000000"), std::string::npos) << out;
  // sh's own fds: 0-2 plus at most the one ls uses for the directory listing
  // (of its own process, not of sh): sh itself must hold only 0, 1, 2.
  EXPECT_NE(out.find("0\n1\n2\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("\n3\n"), std::string::npos) << out;
}

TEST_F(AgentTest, CommandNotFoundIsEnoentWithoutExitEvent) {
  json resp = agent_->Call(SpawnReq({"no-such-command-xyz"}, 0, 1, 2));
  EXPECT_EQ(ErrnoOf(resp), ENOENT) << resp.dump();
  EXPECT_EQ(resp["err"]["message"], "spawn 'no-such-command-xyz': No such file or directory");
  // An explicit path too.
  EXPECT_EQ(ErrnoOf(agent_->Call(SpawnReq({"/nonexistent/bin"}, 0, 0, 0))), ENOENT);
  // A later successful spawn's exit is the only exit event; the failed
  // spawns left no channels behind (the ids are reusable at once).
  int64_t pid = Spawn(SpawnReq({"true"}, 0, 1, 2));
  ASSERT_TRUE(WaitExitEvent(pid));
  agent_->PumpFor(Ms(100));
  EXPECT_EQ(agent_->exits.size(), 1u);
}

TEST_F(AgentTest, MissingCwdIsEnoentNamingThePath) {
  json resp = agent_->Call(SpawnReq({"true"}, 0, 0, 0, "/nope/nowhere"));
  EXPECT_EQ(ErrnoOf(resp), ENOENT) << resp.dump();
  EXPECT_EQ(resp["err"]["message"], "cwd '/nope/nowhere': No such file or directory");
}

TEST_F(AgentTest, UsesPathFromEnvAndCwd) {
  json req = SpawnReq({"pwd"}, 0, 1, 0, "/tmp");
  req["env"] = json::array();  // default PATH applies
  int64_t pid = Spawn(req);
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(1).eof && agent_->exits.contains(pid); }));
  EXPECT_EQ(agent_->Out(1).data, "/tmp\n");
  req = SpawnReq({"pwd"}, 0, 1, 0);
  req["env"] = {"PATH=/nonexistent"};
  EXPECT_EQ(ErrnoOf(agent_->Call(req)), ENOENT);
}

TEST_F(AgentTest, RunsAsRequestedUserWithoutSupplementaryGroups) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
  json req = SpawnReq({"sh", "-c", "id -u; id -g; id -G"}, 0, 1, 2);
  req["uid"] = 65534;
  req["gid"] = 65533;
  int64_t pid = Spawn(req);
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(1).eof && agent_->exits.contains(pid); }));
  EXPECT_EQ(agent_->Out(1).data, "65534\n65533\n65533\n") << agent_->Out(2).data;
}

TEST_F(AgentTest, StdinSentBeforeSpawnResponseIsDelivered) {
  // The daemon may pipeline: request, then stdin DATA and EOF, without
  // waiting for the pid.
  uint64_t id = agent_->Request(SpawnReq({"cat"}, 1, 2, 0));
  ASSERT_TRUE(agent_->SendInput(1, "early bird\n"));
  ASSERT_TRUE(agent_->Send(FrameType::kEof, 1, ""));
  auto resp = agent_->Await(id);
  ASSERT_TRUE(resp && resp->contains("ok")) << (resp ? resp->dump() : "timeout");
  int64_t pid = (*resp)["ok"]["pid"].get<int64_t>();
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(2).eof && agent_->exits.contains(pid); }));
  EXPECT_EQ(agent_->Out(2).data, "early bird\n");
}

TEST_F(AgentTest, RejectsChannelInUse) {
  int64_t pid = Spawn(SpawnReq({"sleep", "100"}, 0, 5, 0));
  ASSERT_GT(pid, 0);
  EXPECT_EQ(ErrnoOf(agent_->Call(SpawnReq({"true"}, 0, 5, 0))), EBUSY);
  EXPECT_EQ(ErrnoOf(agent_->Call(SpawnReq({"true"}, 0, 6, 6))), EINVAL);
  EXPECT_TRUE(agent_->Call({{"op", "kill"}, {"pid", pid}, {"signal", SIGKILL}}).contains("ok"));
  ASSERT_TRUE(WaitExitEvent(pid));
}

TEST_F(AgentTest, StdinRoundTripThroughCat) {
  int64_t pid = Spawn(SpawnReq({"cat"}, 1, 2, 0));
  ASSERT_GT(pid, 0);
  // More than the initial window, so credit must come back as WINDOW frames.
  std::string input;
  for (int i = 0; input.size() < 3 * kInitialWindow; ++i) input += std::to_string(i) + "\n";
  ASSERT_TRUE(agent_->SendInput(1, input));
  ASSERT_TRUE(agent_->Send(FrameType::kEof, 1, ""));
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(2).eof && agent_->exits.contains(pid); }));
  EXPECT_EQ(agent_->Out(2).data, input);
  EXPECT_EQ(agent_->exits[pid]["code"], 0);
}

TEST_F(AgentTest, StdinClosedByProcessIsReset) {
  // The process closes stdin and lives on; the agent must notice and RESET.
  int64_t pid = Spawn(SpawnReq({"sh", "-c", "exec 0<&-; sleep 100"}, 1, 0, 0));
  ASSERT_GT(pid, 0);
  agent_->SendInput(1, "ignored");
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->resets.contains(1); }));
  EXPECT_TRUE(agent_->Call({{"op", "kill"}, {"pid", pid}, {"signal", SIGTERM}}).contains("ok"));
  ASSERT_TRUE(WaitExitEvent(pid));
  EXPECT_EQ(agent_->exits[pid]["signal"], SIGTERM);
}

TEST_F(AgentTest, ResetOfStdoutGivesProcessSigpipe) {
  int64_t pid = Spawn(SpawnReq({"yes"}, 0, 1, 0));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(1).bytes > 0; }));
  ASSERT_TRUE(agent_->Send(FrameType::kReset, 1, ""));
  ASSERT_TRUE(WaitExitEvent(pid));
  EXPECT_EQ(agent_->exits[pid]["signal"], SIGPIPE);
  EXPECT_EQ(agent_->exits[pid]["code"], 128 + SIGPIPE);
}

TEST_F(AgentTest, KillDeliversSignalAndReportsIt) {
  int64_t pid = Spawn(SpawnReq({"sleep", "100"}, 0, 0, 0));
  ASSERT_GT(pid, 0);
  json resp = agent_->Call({{"op", "kill"}, {"pid", pid}, {"signal", SIGKILL}});
  EXPECT_EQ(resp["ok"], nullptr) << resp.dump();
  ASSERT_TRUE(WaitExitEvent(pid));
  EXPECT_EQ(agent_->exits[pid], (json{{"event", "exit"}, {"pid", pid}, {"code", 137}, {"signal", 9}}));
  // Reaped now: the pid is no longer ours.
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "kill"}, {"pid", pid}, {"signal", SIGKILL}})), ESRCH);
}

TEST_F(AgentTest, ListeningPortOfASpawnedServer) {
  // The microVM ingress asks the agent which port a {pid} listens on.
  int64_t pid =
      Spawn(SpawnReq({"python3", "-c",
                      "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',0)); "
                      "s.listen(); print(s.getsockname()[1], flush=True); time.sleep(60)"},
                     0, 1, 0));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(
      agent_->WaitUntil([&] { return agent_->Out(1).data.find('\n') != std::string::npos; }));
  const int port = std::stoi(agent_->Out(1).data);
  json r = agent_->Call({{"op", "listeningPort"}, {"pid", pid}});
  ASSERT_TRUE(r.contains("ok")) << r.dump();
  EXPECT_EQ(r["ok"], port);
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "listeningPort"}, {"pid", 999999}})), ESRCH);
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "listeningPort"}, {"pid", "x"}})), EINVAL);
  agent_->Call({{"op", "kill"}, {"pid", pid}, {"signal", SIGKILL}});
  EXPECT_TRUE(WaitExitEvent(pid));
}

TEST_F(AgentTest, ConfigureNetworkOnlyInAVm) {
  // Outside a VM the host configures the link; the op does not exist.
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "configureNetwork"},
                                  {"interface", "eth0"},
                                  {"address", "10.89.0.2"},
                                  {"prefix", 30},
                                  {"gateway", "10.89.0.1"}})),
            ENOSYS);
}

TEST_F(AgentTest, KillOfUnknownPidIsEsrch) {
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "kill"}, {"pid", getpid()}, {"signal", SIGTERM}})), ESRCH);
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "kill"}, {"pid", 999999}, {"signal", SIGTERM}})), ESRCH);
}

TEST_F(AgentTest, OutputIsFlowControlled) {
  constexpr uint64_t kTotal = 20'000'000;
  agent_->Out(1).auto_window = false;
  int64_t pid = Spawn(SpawnReq({"head", "-c", std::to_string(kTotal), "/dev/zero"}, 0, 1, 0));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(1).bytes >= kInitialWindow; }));
  // Nothing more may come without credit (the client also flags any byte
  // beyond the granted credit as a violation).
  agent_->PumpFor(Ms(300));
  EXPECT_EQ(agent_->Out(1).bytes, kInitialWindow);
  EXPECT_FALSE(agent_->Out(1).eof);
  EXPECT_FALSE(agent_->exits.contains(pid));  // head is blocked on the full pipe

  agent_->Out(1).auto_window = true;
  agent_->Grant(1, kInitialWindow);
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(1).eof && agent_->exits.contains(pid); },
                                Ms(20000)));
  EXPECT_EQ(agent_->Out(1).bytes, kTotal);
  EXPECT_EQ(agent_->exits[pid]["code"], 0);
}

TEST_F(AgentTest, BoundsItsBufferWhenTheDaemonDoesNotRead) {
  constexpr uint64_t kTotal = 20'000'000;
  int64_t id = agent_->Request(SpawnReq({"head", "-c", std::to_string(kTotal), "/dev/zero"}, 0, 1, 0));
  auto resp = agent_->Await(id);
  ASSERT_TRUE(resp && resp->contains("ok"));
  int64_t pid = (*resp)["ok"]["pid"].get<int64_t>();
  // Plenty of credit, but the client stops reading the link: the agent must
  // stop reading the pipe at ~1 MiB of backlog instead of buffering 20 MB.
  agent_->Out(1).auto_window = false;
  agent_->Grant(1, 64u << 20);
  long max_anon_kb = 0;
  for (int i = 0; i < 50; ++i) {  // samples over ~0.5 s; checks an absence
    std::ifstream status("/proc/" + std::to_string(agent_->pid()) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.starts_with("RssAnon:")) max_anon_kb = std::max(max_anon_kb, std::stol(line.substr(8)));
    }
    usleep(10'000);
  }
  EXPECT_LT(max_anon_kb, 4 * 1024);
  EXPECT_FALSE(agent_->exits.contains(pid));
  agent_->Out(1).auto_window = true;
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(1).eof && agent_->exits.contains(pid); },
                                Ms(20000)));
  EXPECT_EQ(agent_->Out(1).bytes, kTotal);
}

TEST_F(AgentTest, SurvivesRandomControlPayloads) {
  std::mt19937 rng(1234);
  const std::vector<std::string> atoms = {"{", "}", "[", "]", ",", ":", "\"op\"", "\"spawn\"",
                                          "\"kill\"", "\"id\"", "\"argv\"", "\"pid\"", "1",
                                          "-1", "1e999", "null", "true", "\"\\u0000\"", "\"x\""};
  for (int i = 0; i < 500; ++i) {
    std::string payload;
    int n = static_cast<int>(rng() % 30);
    for (int j = 0; j < n; ++j) payload += atoms[rng() % atoms.size()];
    ASSERT_TRUE(agent_->Send(FrameType::kControl, 0, payload));
  }
  EXPECT_TRUE(agent_->Call({{"op", "ping"}}).contains("ok"));
}

TEST_F(AgentTest, ReapsOrphansSilently) {
  int64_t pid = Spawn(SpawnReq({"sh", "-c", "sleep 0.1 & exit 0"}, 0, 0, 0));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(WaitExitEvent(pid));
  // The orphaned sleep is reparented to the agent (a subreaper) and must be
  // reaped when it ends: no child, zombie or not, remains.
  ASSERT_TRUE(agent_->WaitUntil([&] { return testing::ChildrenOf(agent_->pid()).empty(); }));
  agent_->PumpFor(Ms(50));
  EXPECT_EQ(agent_->exits.size(), 1u);
}

TEST_F(AgentTest, ClosingTheLinkKillsEverythingAndExits) {
  int64_t a = Spawn(SpawnReq({"sleep", "100"}, 0, 0, 0));
  int64_t b = Spawn(SpawnReq({"sh", "-c", "sleep 100 & wait"}, 0, 1, 0));
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  ASSERT_TRUE(agent_->WaitUntil([&] { return testing::ChildrenOf(b).size() == 1; }));
  pid_t grandchild = testing::ChildrenOf(b)[0].pid;
  agent_->CloseLink();
  auto status = agent_->WaitExit();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status));
  for (pid_t p : {static_cast<pid_t>(a), static_cast<pid_t>(b), grandchild}) {
    // Gone, or at worst a zombie awaiting its new parent.
    ASSERT_TRUE(agent_->WaitUntil([&] {
      auto st = testing::ProcState(p);
      return !st || *st == 'Z';
    })) << "pid " << p << " survived";
  }
}

}  // namespace
}  // namespace sandboxd::agent

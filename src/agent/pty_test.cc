// Black-box tests of `spawn` with a pty and of `resize` (docs/agent-link.md,
// "Terminals"): the real agent binary, driven over the link. The terminal
// translates "\n" to "\r\n" on output (ONLCR) and echoes input, so outputs
// are matched with that in mind.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <string_view>
#include <vector>

#include "agent/test_link_client.h"

namespace sandboxd::agent {
namespace {

using link::FrameType;
using link::kInitialWindow;
using nlohmann::json;
using testing::AgentUnderTest;
using testing::Ms;

json PtySpawn(std::vector<std::string> argv, uint32_t in, uint32_t out, int rows = 24,
              int cols = 80) {
  return json{{"op", "spawn"},
              {"argv", argv},
              {"env", {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/"}},
              {"cwd", "/"},
              {"uid", getuid()},
              {"gid", getgid()},
              {"stdin", in},
              {"stdout", out},
              {"stderr", 0},
              {"pty", {{"rows", rows}, {"cols", cols}}}};
}

int ErrnoOf(const json& resp) {
  if (!resp.is_object() || !resp.contains("err")) return 0;
  return resp["err"].value("errno", 0);
}

size_t Count(std::string_view haystack, std::string_view needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string_view::npos;
       pos = haystack.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

class PtyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/ptmx", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/ptmx";
    agent_ = AgentUnderTest::Start(SANDBOX_AGENT_PATH);
    ASSERT_NE(agent_, nullptr);
    ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->ready; }));
  }
  void TearDown() override {
    if (agent_) {
      EXPECT_EQ(agent_->violation, "");
    }
  }

  int64_t Spawn(const json& req) {
    json resp = agent_->Call(req);
    EXPECT_TRUE(resp.contains("ok")) << resp.dump();
    if (!resp.contains("ok")) return -1;
    return resp["ok"]["pid"].get<int64_t>();
  }

  // Waits for the exit event and EOF on `out`: all output delivered.
  bool WaitDone(int64_t pid, uint32_t out, Ms timeout = testing::kDefaultTimeout) {
    return agent_->WaitUntil([&] { return agent_->exits.contains(pid) && agent_->Out(out).eof; },
                             timeout);
  }

  bool WaitOutput(uint32_t out, std::string_view text) {
    return agent_->WaitUntil([&] { return agent_->Out(out).data.find(text) != std::string::npos; });
  }

  json Resize(int64_t pid, int rows, int cols) {
    return agent_->Call({{"op", "resize"}, {"pid", pid}, {"rows", rows}, {"cols", cols}});
  }

  std::unique_ptr<AgentUnderTest> agent_;
};

TEST_F(PtyTest, ChildHasTheTerminalOfTheRequestedSize) {
  // `: </dev/tty` succeeds only for a process with a controlling terminal.
  int64_t pid =
      Spawn(PtySpawn({"sh", "-c",
                      "stty size; tty; test -t 0 && echo isatty; test -t 2 && echo err-tty; "
                      ": </dev/tty && echo ctty"},
                     0, 2));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(WaitDone(pid, 2));
  const std::string& out = agent_->Out(2).data;
  EXPECT_TRUE(out.starts_with("24 80\r\n/dev/pts/")) << out;
  EXPECT_NE(out.find("\r\nisatty\r\nerr-tty\r\nctty\r\n"), std::string::npos) << out;
  EXPECT_EQ(agent_->exits[pid],
            (json{{"event", "exit"}, {"pid", pid}, {"code", 0}, {"signal", 0}}));
}

TEST_F(PtyTest, TermDefaultsUnlessSet) {
  auto term_of = [&](json req, uint32_t out) {
    int64_t pid = Spawn(req);
    EXPECT_TRUE(WaitDone(pid, out));
    return agent_->Out(out).data;
  };
  json req = PtySpawn({"sh", "-c", "echo $TERM"}, 0, 1);
  EXPECT_EQ(term_of(req, 1), "xterm-256color\r\n");
  req = PtySpawn({"sh", "-c", "echo $TERM"}, 0, 2);
  req["pty"]["term"] = "vt100";
  EXPECT_EQ(term_of(req, 2), "vt100\r\n");
  req = PtySpawn({"sh", "-c", "echo $TERM"}, 0, 3);
  req["pty"]["term"] = "vt100";
  req["env"].push_back("TERM=dumb");
  EXPECT_EQ(term_of(req, 3), "dumb\r\n");
}

TEST_F(PtyTest, TerminalBelongsToTheRequestedUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
  json req =
      PtySpawn({"sh", "-c", "id -u; stat -c '%u %g' \"$(tty)\"; echo direct >\"$(tty)\""}, 0, 1);
  req["uid"] = 65534;
  req["gid"] = 65533;
  int64_t pid = Spawn(req);
  ASSERT_TRUE(WaitDone(pid, 1));
  EXPECT_EQ(agent_->Out(1).data, "65534\r\n65534 65533\r\ndirect\r\n");
  EXPECT_EQ(agent_->exits[pid]["code"], 0);
}

TEST_F(PtyTest, ResizeIsSeenByARunningShell) {
  int64_t pid = Spawn(PtySpawn({"sh", "-c", "stty size; read x; stty size"}, 1, 2));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(WaitOutput(2, "24 80\r\n"));
  json resp = Resize(pid, 30, 100);
  EXPECT_TRUE(resp.contains("ok") && resp["ok"].is_null()) << resp.dump();
  ASSERT_TRUE(agent_->SendInput(1, "\n"));
  ASSERT_TRUE(WaitDone(pid, 2));
  EXPECT_NE(agent_->Out(2).data.find("30 100\r\n"), std::string::npos) << agent_->Out(2).data;
  EXPECT_EQ(agent_->exits[pid]["code"], 0);
}

TEST_F(PtyTest, ResizeSendsSigwinch) {
  int64_t pid = Spawn(PtySpawn(
      {"sh", "-c", "trap 'stty size; exit 3' WINCH; echo ready; while :; do sleep 0.05; done"}, 0,
      2));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(WaitOutput(2, "ready\r\n"));  // the trap is set
  EXPECT_TRUE(Resize(pid, 50, 132).contains("ok"));
  ASSERT_TRUE(WaitDone(pid, 2));
  EXPECT_NE(agent_->Out(2).data.find("50 132\r\n"), std::string::npos) << agent_->Out(2).data;
  EXPECT_EQ(agent_->exits[pid],
            (json{{"event", "exit"}, {"pid", pid}, {"code", 3}, {"signal", 0}}));
}

TEST_F(PtyTest, InteractiveShellReadsStdin) {
  int64_t pid = Spawn(PtySpawn({"sh", "-i"}, 1, 2));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(agent_->SendInput(1, "echo hi\nexit 7\n"));
  ASSERT_TRUE(WaitDone(pid, 2));
  const std::string& out = agent_->Out(2).data;
  // Once echoed by the terminal ("echo hi"), once printed by echo.
  EXPECT_GE(Count(out, "hi\r\n"), 2u) << out;
  EXPECT_EQ(agent_->exits[pid]["code"], 7);
}

TEST_F(PtyTest, EofOnStdinTypesEofCharacter) {
  int64_t pid = Spawn(PtySpawn({"cat"}, 1, 2));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(agent_->SendInput(1, "hello\n"));
  ASSERT_TRUE(agent_->Send(FrameType::kEof, 1, ""));
  ASSERT_TRUE(WaitDone(pid, 2));
  // Echo, then cat's copy; ^D at the start of a line is not echoed.
  EXPECT_EQ(agent_->Out(2).data, "hello\r\nhello\r\n");
  EXPECT_EQ(agent_->exits[pid]["code"], 0);
  EXPECT_FALSE(agent_->resets.contains(1));
}

TEST_F(PtyTest, EofCharacterIsTheTerminals) {
  // The child moved VEOF to ^E; EOF on the channel must type that.
  int64_t pid = Spawn(PtySpawn({"sh", "-c", "stty eof '^E'; echo set; exec cat"}, 1, 2));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(WaitOutput(2, "set\r\n"));
  ASSERT_TRUE(agent_->Send(FrameType::kEof, 1, ""));
  ASSERT_TRUE(WaitDone(pid, 2));
  EXPECT_EQ(agent_->exits[pid]["code"], 0);
}

TEST_F(PtyTest, NoStdinChannelMeansEof) {
  int64_t pid = Spawn(PtySpawn({"cat"}, 0, 2));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(WaitDone(pid, 2));
  EXPECT_EQ(agent_->exits[pid]["code"], 0);
}

TEST_F(PtyTest, LargeOutputArrivesCompleteUnderFlowControl) {
  // ~9.7 MB after ONLCR: every line numbered, so a lost, repeated or
  // reordered chunk shows.
  constexpr int kLines = 1'200'000;
  std::string got;
  got.reserve(10u << 20);
  auto& ch = agent_->Out(1);
  ch.sink = [&](std::string_view d) { got.append(d); };
  ch.auto_window = false;
  int64_t pid = Spawn(PtySpawn({"seq", "1", std::to_string(kLines)}, 0, 1));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(1).bytes >= kInitialWindow; }));
  agent_->PumpFor(Ms(300));
  EXPECT_EQ(agent_->Out(1).bytes, kInitialWindow);  // no credit, no data
  EXPECT_FALSE(agent_->exits.contains(pid));        // seq is blocked on the terminal

  agent_->Out(1).auto_window = true;
  agent_->Grant(1, kInitialWindow);
  ASSERT_TRUE(WaitDone(pid, 1, Ms(60000)));
  std::string want;
  want.reserve(got.size());
  for (int i = 1; i <= kLines; ++i) {
    want += std::to_string(i);
    want += "\r\n";
  }
  EXPECT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "output differs";
  EXPECT_EQ(agent_->exits[pid]["code"], 0);
}

TEST_F(PtyTest, ResetOfOutputHangsUpTheTerminal) {
  int64_t pid = Spawn(PtySpawn({"cat"}, 1, 2));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(agent_->SendInput(1, "x\n"));
  ASSERT_TRUE(WaitOutput(2, "x\r\nx\r\n"));
  ASSERT_TRUE(agent_->Send(FrameType::kReset, 2, ""));
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->exits.contains(pid); }));
  EXPECT_EQ(agent_->exits[pid]["signal"], SIGHUP);
  // Its input has nowhere to go any more.
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->resets.contains(1); }));
}

TEST_F(PtyTest, ResizeAfterHangUpIsEnotty) {
  // The shell survives the hangup (SIGHUP ignored) but has no pty any more.
  int64_t pid =
      Spawn(PtySpawn({"sh", "-c", "trap '' HUP; echo ready; while :; do sleep 0.05; done"}, 1, 2));
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(WaitOutput(2, "ready\r\n"));
  ASSERT_TRUE(agent_->Send(FrameType::kReset, 2, ""));
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->resets.contains(1); }));
  EXPECT_EQ(ErrnoOf(Resize(pid, 30, 100)), ENOTTY);
  EXPECT_FALSE(agent_->exits.contains(pid));
  EXPECT_TRUE(agent_->Call({{"op", "kill"}, {"pid", pid}, {"signal", SIGKILL}}).contains("ok"));
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->exits.contains(pid); }));
}

TEST_F(PtyTest, ProcessClosingTheTerminalEndsBothChannels) {
  int64_t pid =
      Spawn(PtySpawn({"sh", "-c", "echo bye; exec </dev/null >/dev/null 2>&1; sleep 0.2"}, 1, 2));
  ASSERT_GT(pid, 0);
  // No slave fd left, though the process lives on: the output ends (after
  // "bye") and the input is RESET.
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->Out(2).eof && agent_->resets.contains(1); }));
  EXPECT_EQ(agent_->Out(2).data, "bye\r\n");
  ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->exits.contains(pid); }));
  EXPECT_EQ(agent_->exits[pid]["code"], 0);
}

TEST_F(PtyTest, RejectsHostileRequests) {
  // resize: unknown pids, bad sizes (checked before the pid), no pty.
  EXPECT_EQ(ErrnoOf(Resize(999999, 24, 80)), ESRCH);
  EXPECT_EQ(ErrnoOf(Resize(getpid(), 24, 80)), ESRCH);
  EXPECT_EQ(ErrnoOf(agent_->Call({{"op", "resize"}, {"pid", 1}})), EINVAL);
  int64_t plain = Spawn(json{{"op", "spawn"}, {"argv", {"sleep", "100"}}});
  ASSERT_GT(plain, 0);
  EXPECT_EQ(ErrnoOf(Resize(plain, 24, 80)), ENOTTY);
  int64_t pid = Spawn(PtySpawn({"sleep", "100"}, 1, 2));
  ASSERT_GT(pid, 0);
  EXPECT_EQ(ErrnoOf(Resize(pid, 0, 80)), EINVAL);
  EXPECT_EQ(ErrnoOf(Resize(pid, 24, 0)), EINVAL);
  EXPECT_EQ(ErrnoOf(Resize(pid, 10001, 80)), EINVAL);
  EXPECT_EQ(ErrnoOf(Resize(pid, -1, 80)), EINVAL);
  EXPECT_TRUE(Resize(pid, 10000, 10000).contains("ok"));

  // spawn: stderr with a pty, sizes out of range, no output channel.
  json req = PtySpawn({"true"}, 3, 4);
  req["stderr"] = 5;
  EXPECT_EQ(ErrnoOf(agent_->Call(req)), EINVAL);
  EXPECT_EQ(ErrnoOf(agent_->Call(PtySpawn({"true"}, 3, 4, 0, 80))), EINVAL);
  EXPECT_EQ(ErrnoOf(agent_->Call(PtySpawn({"true"}, 3, 4, 24, 10001))), EINVAL);
  EXPECT_EQ(ErrnoOf(agent_->Call(PtySpawn({"true"}, 3, 0))), EINVAL);
  req = PtySpawn({"true"}, 3, 4);
  req["pty"] = "yes";
  EXPECT_EQ(ErrnoOf(agent_->Call(req)), EINVAL);
  // A failed pty spawn leaves no channels behind.
  EXPECT_EQ(ErrnoOf(agent_->Call(PtySpawn({"no-such-command-xyz"}, 3, 4))), ENOENT);
  int64_t ok = Spawn(PtySpawn({"true"}, 3, 4));
  ASSERT_TRUE(WaitDone(ok, 4));

  for (int64_t p : {plain, pid}) {
    EXPECT_TRUE(agent_->Call({{"op", "kill"}, {"pid", p}, {"signal", SIGKILL}}).contains("ok"));
    ASSERT_TRUE(agent_->WaitUntil([&] { return agent_->exits.contains(p); }));
  }
  // Reaped: the pid is no longer ours.
  EXPECT_EQ(ErrnoOf(Resize(pid, 24, 80)), ESRCH);
}

}  // namespace
}  // namespace sandboxd::agent

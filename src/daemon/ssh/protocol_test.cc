// The small translations between SSH and the agent: signal names, pty
// requests and the argv each kind of session runs.
#include <gtest/gtest.h>

#include <csignal>

#include "daemon/ssh/bridge.h"
#include "daemon/ssh/connection.h"

namespace sandboxd::ssh {
namespace {

TEST(SshSignals, NamesMapBothWays) {
  EXPECT_EQ(SignalFromSsh("INT"), SIGINT);
  EXPECT_EQ(SignalFromSsh("TERM"), SIGTERM);
  EXPECT_EQ(SignalFromSsh("KILL"), SIGKILL);
  EXPECT_EQ(SignalFromSsh("USR1"), SIGUSR1);
  EXPECT_FALSE(SignalFromSsh(""));
  EXPECT_FALSE(SignalFromSsh("SIGINT"));
  EXPECT_FALSE(SignalFromSsh("NOPE"));
  EXPECT_EQ(SshSignalName(SIGKILL), "KILL");
  EXPECT_EQ(SshSignalName(SIGSEGV), "SEGV");
  EXPECT_EQ(SshSignalName(0), "");
}

TEST(SshPty, SizesAndTermAreMadeAcceptable) {
  auto p = NormalizePty("xterm", 132, 43);
  EXPECT_EQ(p.term, "xterm");
  EXPECT_EQ(p.cols, 132);
  EXPECT_EQ(p.rows, 43);
  p = NormalizePty("", 0, 0);  // ssh -tt without a local terminal
  EXPECT_EQ(p.term, "xterm-256color");
  EXPECT_EQ(p.cols, 80);
  EXPECT_EQ(p.rows, 24);
  p = NormalizePty("bad term\n", 100000, -5);
  EXPECT_EQ(p.term, "xterm-256color");
  EXPECT_EQ(p.cols, 10000);
  EXPECT_EQ(p.rows, 24);
  EXPECT_EQ(NormalizePty(std::string(129, 'x').c_str(), 80, 24).term, "xterm-256color");
  EXPECT_EQ(NormalizePty(nullptr, 80, 24).term, "xterm-256color");
}

TEST(SshRun, ArgvPerKind) {
  RunSpec shell{.kind = RunSpec::Kind::kShell};
  EXPECT_EQ(ArgvFor(shell, "/bin/bash"), (std::vector<std::string>{"/bin/bash", "-l"}));
  RunSpec exec{.kind = RunSpec::Kind::kExec, .command = "exit 7"};
  EXPECT_EQ(ArgvFor(exec, "/bin/bash"), (std::vector<std::string>{"/bin/bash", "-c", "exit 7"}));
  RunSpec sftp{.kind = RunSpec::Kind::kSftp};
  EXPECT_EQ(ArgvFor(sftp, "/bin/bash"), (std::vector<std::string>{kSftpServer}));
}

}  // namespace
}  // namespace sandboxd::ssh

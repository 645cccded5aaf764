// Integration test: the real daemon, the client library and the `sandbox`
// CLI. The daemon binary comes from $SANDBOXD_BIN, else `sandboxd` next to
// this test binary; without it every test is skipped.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "client/client.h"
#include "client/sandbox.h"

namespace sandboxd::client {
namespace {

namespace fs = std::filesystem;

struct CommandResult {
  int exit_code = -1;
  std::string out;
};

// Runs argv with extra env, stdin from `input` (via a pipe), capturing stdout.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
                         const std::string& input = "") {
  int out_pipe[2], in_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(in_pipe, O_CLOEXEC) != 0) return {};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(in_pipe[0]);
  if (!input.empty()) (void)!write(in_pipe[1], input.data(), input.size());
  close(in_pipe[1]);
  CommandResult r;
  char buf[4096];
  ssize_t n;
  while ((n = read(out_pipe[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<size_t>(n));
  close(out_pipe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string LastLine(const std::string& text) {
  std::string t = Trim(text);
  auto nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

bool HasMountsUnder(const std::string& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" " + dir) != std::string::npos) return true;
  }
  return false;
}

// One daemon for the whole suite.
class Daemon {
 public:
  static Daemon& Get() {
    static Daemon d;
    return d;
  }
  bool ok() const { return !endpoint_.empty() && !token_.empty(); }
  // True when there is no daemon binary at all (skip); a binary that fails
  // to start is a test failure instead.
  bool absent() const { return absent_; }
  const std::string& skip_reason() const { return skip_reason_; }
  const std::string& endpoint() const { return endpoint_; }
  const std::string& token() const { return token_; }
  const std::string& bin() const { return bin_; }

  ~Daemon() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status;
      for (int i = 0; i < 100 && waitpid(pid_, &status, WNOHANG) == 0; ++i) usleep(100'000);
      if (waitpid(pid_, &status, WNOHANG) == 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
      }
    }
    if (stdout_fd_ >= 0) close(stdout_fd_);
    // Never recurse into a directory that still has mounts (a leaked bind
    // mount of / would make remove_all delete host files).
    if (!data_dir_.empty() && !HasMountsUnder(data_dir_)) {
      std::error_code ec;
      fs::remove_all(data_dir_, ec);
    }
  }

 private:
  Daemon() {
    const char* env_bin = std::getenv("SANDBOXD_BIN");
    if (env_bin && *env_bin) {
      bin_ = env_bin;
    } else {
      bin_ = (fs::read_symlink("/proc/self/exe").parent_path() / "sandboxd").string();
    }
    if (access(bin_.c_str(), X_OK) != 0) {
      skip_reason_ = "daemon binary " + bin_ + " not found (set SANDBOXD_BIN)";
      absent_ = true;
      return;
    }
    char tmpl[] = "/tmp/sbx-client-it-XXXXXX";
    if (!mkdtemp(tmpl)) {
      skip_reason_ = "mkdtemp failed";
      return;
    }
    data_dir_ = tmpl;
    auto tok = RunCommand({bin_, "token", "create", "--org", "itest", "--data-dir", data_dir_});
    if (tok.exit_code != 0) {
      skip_reason_ = "sandboxd token create failed (exit " + std::to_string(tok.exit_code) + ")";
      return;
    }
    token_ = LastLine(tok.out);
    Start();
  }

  void Start() {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(p[1], 1);
      execl(bin_.c_str(), bin_.c_str(), "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir_.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(p[1]);
    stdout_fd_ = p[0];
    std::string buf;
    const std::string marker = "sandboxd listening on ";
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{stdout_fd_, POLLIN, 0};
      if (poll(&pfd, 1, 500) <= 0) continue;
      char c[512];
      ssize_t n = read(stdout_fd_, c, sizeof c);
      if (n <= 0) break;
      buf.append(c, static_cast<size_t>(n));
      auto at = buf.find(marker);
      if (at != std::string::npos) {
        auto nl = buf.find('\n', at);
        if (nl == std::string::npos) continue;
        endpoint_ = Trim(buf.substr(at + marker.size(), nl - at - marker.size()));
        return;
      }
    }
    skip_reason_ = "sandboxd serve did not print its listening line: " + buf;
  }

  std::string bin_, data_dir_, endpoint_, token_, skip_reason_;
  bool absent_ = false;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
};

class IntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Daemon& d = Daemon::Get();
    if (d.absent()) GTEST_SKIP() << d.skip_reason();
    ASSERT_TRUE(d.ok()) << d.skip_reason();
    ClientOptions o;
    o.endpoint = d.endpoint();
    o.token = d.token();
    auto c = Client::Create(o);
    ASSERT_TRUE(c.has_value()) << c.error().ToString();
    client_.emplace(*c);
  }

  CommandResult Cli(std::vector<std::string> args, const std::string& input = "") {
    std::vector<std::string> argv = {SANDBOX_CLI_BIN, "--endpoint", Daemon::Get().endpoint()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, {"DENO_DEPLOY_TOKEN=" + Daemon::Get().token()}, input);
  }

  std::optional<Client> client_;
};

TEST_F(IntegrationTest, SpawnCapturesOutputAndExitCode) {
  auto sb = Sandbox::Create(*client_, {});
  ASSERT_TRUE(sb.has_value()) << sb.error().ToString();
  EXPECT_TRUE(IsValidSandboxId(sb->id())) << sb->id();
  auto p = sb->Spawn("sh", {"-c", "echo hi; echo err >&2; exit 3"});
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  EXPECT_GT(p->pid(), 0);
  auto st = p->Wait();
  ASSERT_TRUE(st.has_value()) << st.error().ToString();
  EXPECT_EQ(st->code, 3);
  EXPECT_FALSE(st->success);
  EXPECT_FALSE(st->signal.has_value());
  EXPECT_EQ(p->TakeStdout(), "hi\n");
  EXPECT_EQ(p->TakeStderr(), "err\n");
  EXPECT_TRUE(sb->Close().has_value());
}

TEST_F(IntegrationTest, StdinToCat) {
  auto sb = Sandbox::Create(*client_, {});
  ASSERT_TRUE(sb.has_value()) << sb.error().ToString();
  SpawnOptions o;
  o.stdin_mode = Stdio::kPiped;
  o.stderr_mode = Stdio::kNull;
  std::string got;
  o.on_stdout = [&got](std::string_view chunk) { got += chunk; };
  auto p = sb->Spawn("cat", {}, std::move(o));
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  ASSERT_TRUE(p->WriteStdin("abc").has_value());
  ASSERT_TRUE(p->WriteStdin("def").has_value());
  ASSERT_TRUE(p->CloseStdin().has_value());
  auto st = p->Wait();
  ASSERT_TRUE(st.has_value()) << st.error().ToString();
  EXPECT_TRUE(st->success);
  EXPECT_EQ(got, "abcdef");
}

TEST_F(IntegrationTest, EnvFromCreateAndKillSignal) {
  CreateOptions co;
  co.env = {{"GREETING", "hello"}};
  co.timeout = "2m";
  auto sb = Sandbox::Create(*client_, co);
  ASSERT_TRUE(sb.has_value()) << sb.error().ToString();
  auto p = sb->Spawn("sh", {"-c", "echo $GREETING"});
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  ASSERT_TRUE(p->Wait().has_value());
  EXPECT_EQ(p->TakeStdout(), "hello\n");

  auto sleeper = sb->Spawn("sleep", {"30"});
  ASSERT_TRUE(sleeper.has_value()) << sleeper.error().ToString();
  ASSERT_TRUE(sleeper->Kill("SIGKILL").has_value());
  auto st = sleeper->WaitFor(std::chrono::seconds(20));
  ASSERT_TRUE(st.has_value()) << st.error().ToString();
  EXPECT_EQ(st->signal, "SIGKILL");
  EXPECT_EQ(st->ExitCode(), 137);

  // Timed sandbox: a second connection works, extend moves the deadline, kill ends it.
  auto again = Sandbox::Connect(*client_, sb->id());
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  auto deadline = client_->Extend(sb->id(), "5m");
  ASSERT_TRUE(deadline.has_value()) << deadline.error().ToString();
  EXPECT_GT(*deadline, NowMs());
  EXPECT_TRUE(sb->Kill().has_value());
  EXPECT_TRUE(again->closed() || again->Close().has_value());
}

TEST_F(IntegrationTest, Cli) {
  auto created = Cli({"create", "--label", "a=b"});
  ASSERT_EQ(created.exit_code, 0);
  std::string id = Trim(created.out);
  ASSERT_TRUE(IsValidSandboxId(id)) << id;

  EXPECT_EQ(Cli({"exec", id, "sh", "-c", "exit 7"}).exit_code, 7);
  auto echoed = Cli({"exec", id, "cat"}, "through stdin\n");
  EXPECT_EQ(echoed.exit_code, 0);
  EXPECT_EQ(echoed.out, "through stdin\n");

  auto listed = Cli({"ls", "--json", "--label", "a=b"});
  ASSERT_EQ(listed.exit_code, 0);
  auto arr = nlohmann::json::parse(listed.out, nullptr, false);
  ASSERT_TRUE(arr.is_array()) << listed.out;
  bool found = false;
  for (const auto& e : arr) found = found || (e.value("id", "") == id);
  EXPECT_TRUE(found) << listed.out;

  auto table = Cli({"list"});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.out.find(id), std::string::npos);

  EXPECT_EQ(Cli({"extend", id, "3m"}).exit_code, 0);
  EXPECT_EQ(Cli({"kill", id}).exit_code, 0);
  EXPECT_NE(Cli({"exec", id, "true"}).exit_code, 0);
}

TEST_F(IntegrationTest, ListFollowsPagination) {
  std::string run = std::to_string(getpid());
  std::vector<Sandbox> boxes;
  for (int i = 0; i < 3; ++i) {
    CreateOptions o;
    o.timeout = "1m";
    o.labels = {{"run", run}};
    auto sb = Sandbox::Create(*client_, o);
    ASSERT_TRUE(sb.has_value()) << sb.error().ToString();
    boxes.push_back(std::move(*sb));
  }
  ListOptions lo;
  lo.page_size = 2;
  auto all = client_->List({{"run", run}}, lo);
  ASSERT_TRUE(all.has_value()) << all.error().ToString();
  EXPECT_EQ(all->size(), 3u);
  for (const auto& info : *all) {
    EXPECT_EQ(info.labels.at("run"), run);
    EXPECT_EQ(info.status, "running");
    EXPECT_FALSE(info.created_at.empty());
  }
  for (auto& sb : boxes) EXPECT_TRUE(sb.Kill().has_value());
}

TEST_F(IntegrationTest, CliStreamsLargeStdin) {
  auto created = Cli({"create", "--timeout", "1m"});
  ASSERT_EQ(created.exit_code, 0);
  std::string id = Trim(created.out);
  std::string input;
  for (int i = 0; i < 300'000; ++i) input += static_cast<char>('a' + i % 26);
  input += '\n';
  auto r = Cli({"exec", id, "sh", "-c", "wc -c"}, input);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(Trim(r.out), std::to_string(input.size()));
  EXPECT_EQ(Cli({"kill", id}).exit_code, 0);
}

TEST_F(IntegrationTest, BadTokenIsRejected) {
  ClientOptions o;
  o.endpoint = Daemon::Get().endpoint();
  o.token = "ddo_not_a_real_token";
  auto bad = Client::Create(o);
  ASSERT_TRUE(bad.has_value());
  auto sb = Sandbox::Create(*bad, {});
  ASSERT_FALSE(sb.has_value());
  EXPECT_EQ(sb.error().code, "INVALID_TOKEN");
  EXPECT_EQ(sb.error().http_status, 401);
  auto list = bad->List();
  ASSERT_FALSE(list.has_value());
  EXPECT_EQ(list.error().http_status, 401);

  auto r = RunCommand({SANDBOX_CLI_BIN, "--endpoint", Daemon::Get().endpoint(), "--token", "ddo_bad", "list"});
  EXPECT_NE(r.exit_code, 0);
}

TEST_F(IntegrationTest, InvalidConfigIsRejected) {
  CreateOptions region;
  region.region = "zzz";  // a region this daemon does not serve
  auto sb = Sandbox::Create(*client_, region);
  ASSERT_FALSE(sb.has_value());
  EXPECT_EQ(sb.error().http_status / 100, 4) << sb.error().ToString();

  CreateOptions memory;
  memory.memory_mb = 100;  // below 768
  auto sb2 = Sandbox::Create(*client_, memory);
  ASSERT_FALSE(sb2.has_value());
  EXPECT_EQ(sb2.error().http_status, 400) << sb2.error().ToString();
}

TEST_F(IntegrationTest, UnknownSandbox) {
  auto sb = Sandbox::Connect(*client_, "sbx_ord_00000000000000000000");
  ASSERT_FALSE(sb.has_value());
  EXPECT_EQ(sb.error().http_status, 404);
  EXPECT_EQ(sb.error().code, "SANDBOX_NOT_FOUND");
  EXPECT_FALSE(client_->Kill("sbx_ord_00000000000000000000").has_value());
}

}  // namespace
}  // namespace sandboxd::client

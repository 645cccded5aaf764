// Integration test: the real daemon, the client library and the `sandbox`
// CLI. The daemon binary comes from $SANDBOXD_BIN, else `sandboxd` next to
// this test binary; without it every test is skipped. $SANDBOXD_AGENT, when
// set, is passed as `--agent` (to try an agent built elsewhere).
//
// The filesystem tests (FsIntegrationTest) skip only when the daemon answers
// that fs methods are unsupported (ENOSYS from the agent, or JSON-RPC
// "Method not found"); any other failure fails them.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <set>
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
  std::string err;
};

// Runs argv with extra env, stdin from `input` (via a pipe), capturing stdout
// and stderr (read together with poll, so neither pipe can fill up and stall
// the child).
CommandResult RunCommand(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
                         const std::string& input = "") {
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0 || pipe2(in_pipe, O_CLOEXEC) != 0) return {};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  close(in_pipe[0]);
  if (!input.empty()) (void)!write(in_pipe[1], input.data(), input.size());
  close(in_pipe[1]);
  CommandResult r;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_fds = 2;
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;  // poll ignores negative fds
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
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
    // Its own sandbox address range: other test daemons run beside this one.
    std::random_device rd;
    std::string range = "10." + std::to_string(128 + rd() % 128) + "." + std::to_string(rd() % 64 * 4) + ".0/22";
    pid_ = fork();
    if (pid_ == 0) {
      dup2(p[1], 1);
      const char* agent = std::getenv("SANDBOXD_AGENT");
      if (agent && *agent) {
        execl(bin_.c_str(), bin_.c_str(), "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir_.c_str(),
              "--net-range", range.c_str(), "--agent", agent, static_cast<char*>(nullptr));
      }
      execl(bin_.c_str(), bin_.c_str(), "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir_.c_str(),
            "--net-range", range.c_str(), static_cast<char*>(nullptr));
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

  CommandResult Cli(std::vector<std::string> args, const std::string& input = "",
                    std::vector<std::string> extra_env = {}) {
    std::vector<std::string> argv = {SANDBOX_CLI_BIN, "--endpoint", Daemon::Get().endpoint()};
    argv.insert(argv.end(), args.begin(), args.end());
    extra_env.push_back("DENO_DEPLOY_TOKEN=" + Daemon::Get().token());
    return RunCommand(argv, extra_env, input);
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

// --- network (sandboxd's GET/PUT /api/v3/sandboxes/{id}/network) ---------------
// No upstream is needed: these check what the API reports and refuses.

constexpr char kUnknownId[] = "sbx_ord_00000000000000000000";

std::set<std::string> SecretNames(const NetworkInfo& info) {
  std::set<std::string> names;
  for (const auto& s : info.secrets) names.insert(s.name);
  return names;
}

TEST_F(IntegrationTest, NetworkCreateShowAndReplaceAllowNet) {
  CreateOptions co;
  co.timeout = "2m";
  co.allow_net = std::vector<std::string>{"example.com", "*.example.org:443"};
  co.secrets = {{"API_KEY", {"api.example.com"}, "s3cr3t-value"}};
  auto sb = Sandbox::Create(*client_, co);
  ASSERT_TRUE(sb.has_value()) << sb.error().ToString();

  auto info = client_->GetNetwork(sb->id());
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  ASSERT_TRUE(info->enabled) << info->raw.dump();
  EXPECT_FALSE(info->address.empty());
  EXPECT_EQ(info->allow_net, (std::vector<std::string>{"example.com", "*.example.org:443"}));
  ASSERT_EQ(info->secrets.size(), 1u);
  EXPECT_EQ(info->secrets[0].name, "API_KEY");
  EXPECT_EQ(info->secrets[0].hosts, std::vector<std::string>{"api.example.com"});
  EXPECT_EQ(info->raw.dump().find("s3cr3t-value"), std::string::npos) << "the API must not return secret values";
  // Inside, the variable holds a placeholder, never the value.
  auto p = sb->Spawn("sh", {"-c", "printf %s \"$API_KEY\""});
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  ASSERT_TRUE(p->Wait().has_value());
  std::string inside = p->TakeStdout();
  EXPECT_FALSE(inside.empty());
  EXPECT_EQ(inside.find("s3cr3t-value"), std::string::npos) << inside;

  std::vector<std::string> next = {"a.example.net", "192.0.2.1", "[2001:db8::1]:8443", "*.b.example.net"};
  auto set = client_->SetAllowNet(sb->id(), next);
  ASSERT_TRUE(set.has_value()) << set.error().ToString();
  EXPECT_EQ(set->allow_net, next);
  EXPECT_EQ(SecretNames(*set), std::set<std::string>{"API_KEY"});  // secrets are not touched
  auto again = client_->GetNetwork(sb->id());
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(again->allow_net, next);

  // A bad pattern is refused with the server's message, and changes nothing.
  auto bad = client_->SetAllowNet(sb->id(), {"ok.example.com", "bad host!"});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().http_status, 400) << bad.error().ToString();
  EXPECT_EQ(bad.error().code, "INVALID_CONFIG");
  EXPECT_NE(bad.error().message.find("bad host!"), std::string::npos) << bad.error().message;
  EXPECT_EQ(client_->GetNetwork(sb->id()).value_or(NetworkInfo{}).allow_net, next);

  auto none = client_->SetAllowNet(sb->id(), {});
  ASSERT_TRUE(none.has_value()) << none.error().ToString();
  EXPECT_TRUE(none->allow_net.empty());
  EXPECT_EQ(SecretNames(*none), std::set<std::string>{"API_KEY"});

  ASSERT_TRUE(sb->Kill().has_value());
  auto gone = client_->GetNetwork(sb->id());
  ASSERT_FALSE(gone.has_value());
  EXPECT_EQ(gone.error().http_status, 404) << gone.error().ToString();
}

TEST_F(IntegrationTest, NetworkUnknownSandboxAndBadCreateOptions) {
  auto get = client_->GetNetwork(kUnknownId);
  ASSERT_FALSE(get.has_value());
  EXPECT_EQ(get.error().http_status, 404);
  EXPECT_EQ(get.error().code, "SANDBOX_NOT_FOUND");
  auto put = client_->SetAllowNet(kUnknownId, {"example.com"});
  ASSERT_FALSE(put.has_value());
  EXPECT_EQ(put.error().http_status, 404);

  CreateOptions bad_allow;
  bad_allow.allow_net = std::vector<std::string>{"exa mple.com"};
  auto sb = Sandbox::Create(*client_, bad_allow);
  ASSERT_FALSE(sb.has_value());
  EXPECT_EQ(sb.error().http_status, 400) << sb.error().ToString();

  CreateOptions bad_secret;
  bad_secret.secrets = {{"KEY", {"*"}, "v"}};
  auto sb2 = Sandbox::Create(*client_, bad_secret);
  ASSERT_FALSE(sb2.has_value());
  EXPECT_EQ(sb2.error().http_status, 400) << sb2.error().ToString();

  CreateOptions twice;
  twice.secrets = {{"KEY", {"a.example.com"}, "v"}, {"KEY", {"b.example.com"}, "w"}};
  auto sb3 = Sandbox::Create(*client_, twice);
  ASSERT_FALSE(sb3.has_value());
  EXPECT_EQ(sb3.error().code, kInvalidArgument);
}

TEST_F(IntegrationTest, CliNet) {
  // --secret NAME@HOST takes the value from the CLI's environment.
  auto created = Cli({"create", "--timeout", "2m", "--allow-net", "example.com", "--allow-net", "*.example.org",
                      "--secret", "GH_TOKEN@api.github.com", "--secret", "OTHER=inline-v@x.example.com,y.example.com"},
                     "", {"GH_TOKEN=from-env-value"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  std::string id = Trim(created.out);
  ASSERT_TRUE(IsValidSandboxId(id)) << id;

  auto shown = Cli({"net", "show", id});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("network:     on (address "), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find("allow-net:   example.com\n             *.example.org\n"), std::string::npos)
      << shown.out;
  EXPECT_NE(shown.out.find("GH_TOKEN -> api.github.com"), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find("OTHER -> x.example.com, y.example.com"), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find("dns queries: "), std::string::npos) << shown.out;

  auto json = Cli({"net", "show", "--json", id});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto obj = nlohmann::json::parse(json.out, nullptr, false);
  ASSERT_TRUE(obj.is_object()) << json.out;
  EXPECT_EQ(obj["enabled"], true);
  EXPECT_EQ(obj["allowNet"], nlohmann::json({"example.com", "*.example.org"}));
  EXPECT_EQ(obj["secrets"].size(), 2u) << json.out;
  EXPECT_TRUE(obj["stats"].is_object()) << json.out;
  EXPECT_EQ(json.out.find("from-env-value"), std::string::npos);
  EXPECT_EQ(json.out.find("inline-v"), std::string::npos);

  // The secret reached the server (its name is bound), the value stays out.
  auto inside = Cli({"exec", id, "sh", "-c", "printf %s \"$GH_TOKEN\""});
  EXPECT_EQ(inside.exit_code, 0) << inside.err;
  EXPECT_FALSE(inside.out.empty());
  EXPECT_EQ(inside.out.find("from-env-value"), std::string::npos) << inside.out;

  auto allowed = Cli({"net", "allow", id, "a.example.net", "1.2.3.4:443", "[::1]:443"});
  ASSERT_EQ(allowed.exit_code, 0) << allowed.err;
  EXPECT_EQ(allowed.out, "a.example.net\n1.2.3.4:443\n[::1]:443\n");
  auto after = client_->GetNetwork(id);
  ASSERT_TRUE(after.has_value()) << after.error().ToString();
  EXPECT_EQ(after->allow_net, (std::vector<std::string>{"a.example.net", "1.2.3.4:443", "[::1]:443"}));

  // A bad pattern: non-zero exit, the server's message on stderr, no change.
  auto bad = Cli({"net", "allow", id, "good.example.com", "bad_host!"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("sandbox: net allow " + id + ": "), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("bad_host!"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("status: 400, code: INVALID_CONFIG"), std::string::npos) << bad.err;
  EXPECT_EQ(bad.out, "");
  EXPECT_EQ(client_->GetNetwork(id).value_or(NetworkInfo{}).allow_net.size(), 3u);

  // Neither hosts nor --none: refused before any request; both: a usage error.
  auto nothing = Cli({"net", "allow", id});
  EXPECT_EQ(nothing.exit_code, 1);
  EXPECT_NE(nothing.err.find("--none"), std::string::npos) << nothing.err;
  EXPECT_NE(Cli({"net", "allow", id, "--none", "a.example.net"}).exit_code, 0);
  EXPECT_EQ(client_->GetNetwork(id).value_or(NetworkInfo{}).allow_net.size(), 3u);

  auto none = Cli({"net", "allow", id, "--none"});
  ASSERT_EQ(none.exit_code, 0) << none.err;
  EXPECT_EQ(none.out, "");
  auto empty = Cli({"net", "show", id});
  EXPECT_NE(empty.out.find("allow-net:   (none)\n"), std::string::npos) << empty.out;
  auto none_json = Cli({"net", "allow", "--json", id, "--none"});
  ASSERT_EQ(none_json.exit_code, 0) << none_json.err;
  EXPECT_EQ(nlohmann::json::parse(none_json.out, nullptr, false)["allowNet"], nlohmann::json::array());

  // Unknown ids: the server's 404.
  for (const std::vector<std::string>& args : {std::vector<std::string>{"net", "show", kUnknownId},
                                               std::vector<std::string>{"net", "allow", kUnknownId, "example.com"}}) {
    auto r = Cli(args);
    EXPECT_EQ(r.exit_code, 1) << args[1];
    EXPECT_NE(r.err.find(std::string(kUnknownId) + ": "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("status: 404, code: SANDBOX_NOT_FOUND"), std::string::npos) << r.err;
  }

  EXPECT_EQ(Cli({"kill", id}).exit_code, 0);
  EXPECT_EQ(Cli({"net", "show", id}).exit_code, 1);
}

TEST_F(IntegrationTest, CliCreateIsolation) {
  // Our create-config extension: the backend by name. namespaces is always
  // there; an unknown name is the server's 400.
  auto ns = Cli({"create", "--isolation", "namespaces", "--timeout", "1m"});
  ASSERT_EQ(ns.exit_code, 0) << ns.err;
  std::string id = Trim(ns.out);
  EXPECT_EQ(Cli({"exec", id, "true"}).exit_code, 0);
  EXPECT_EQ(Cli({"kill", id}).exit_code, 0);
  auto bad = Cli({"create", "--isolation", "kvm"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("isolation"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("status: 400"), std::string::npos) << bad.err;
  EXPECT_EQ(bad.out, "");
}

TEST_F(IntegrationTest, CliCreateRefusesBadNetworkOptions) {
  // A secret taken from an unset variable: refused locally, before any request.
  auto unset = Cli({"create", "--secret", "SBX_IT_SURELY_UNSET@api.example.com"});
  EXPECT_EQ(unset.exit_code, 1);
  EXPECT_NE(unset.err.find("SBX_IT_SURELY_UNSET is not set"), std::string::npos) << unset.err;
  EXPECT_EQ(unset.out, "");
  auto no_hosts = Cli({"create", "--secret", "KEY=hunter2"});
  EXPECT_EQ(no_hosts.exit_code, 1);
  EXPECT_EQ(no_hosts.err.find("hunter2"), std::string::npos) << no_hosts.err;
  // Bad patterns: the server's message.
  auto bad_allow = Cli({"create", "--allow-net", "bad_host!"});
  EXPECT_EQ(bad_allow.exit_code, 1);
  EXPECT_NE(bad_allow.err.find("bad_host!"), std::string::npos) << bad_allow.err;
  EXPECT_NE(bad_allow.err.find("status: 400"), std::string::npos) << bad_allow.err;
  auto bad_secret_host = Cli({"create", "--secret", "KEY=v@bad_host!"});
  EXPECT_EQ(bad_secret_host.exit_code, 1);
  EXPECT_NE(bad_secret_host.err.find("bad_host!"), std::string::npos) << bad_secret_host.err;
  EXPECT_EQ(bad_secret_host.out, "");
}

// --- filesystem ---------------------------------------------------------------

// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
std::string PseudoRandom(size_t n, std::uint64_t seed) {
  std::string out(n, '\0');
  std::uint64_t x = seed | 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>(x >> 24);
  }
  return out;
}

std::string ReadLocal(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteLocal(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary);
  out << data;
}

// A tree as "relative path → d | f:<content> | l:<target>".
std::map<std::string, std::string> Snapshot(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    std::string rel = it->path().lexically_relative(root).string();
    if (it->is_symlink()) {
      out[rel] = "l:" + fs::read_symlink(it->path()).string();
    } else if (it->is_directory()) {
      out[rel] = "d";
    } else {
      out[rel] = "f:" + ReadLocal(it->path());
    }
  }
  return out;
}

// A scratch directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sbx-fs-it-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

bool IsUnsupported(const Error& e) {
  return e.code == "ENOSYS" || e.message.find("Method not found") != std::string::npos;
}

class FsIntegrationTest : public IntegrationTest {
 protected:
  void SetUp() override {
    IntegrationTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    CreateOptions o;
    o.timeout = "5m";  // the CLI connects separately
    auto sb = Sandbox::Create(*client_, o);
    ASSERT_TRUE(sb.has_value()) << sb.error().ToString();
    sb_.emplace(std::move(*sb));
    auto probe = sb_->ReadTextFile("/etc/hostname");
    if (!probe && IsUnsupported(probe.error())) {
      GTEST_SKIP() << "the daemon/agent does not support filesystem methods yet: " << probe.error().ToString();
    }
    ASSERT_TRUE(probe.has_value()) << probe.error().ToString();
  }
  void TearDown() override {
    if (sb_) (void)sb_->Kill();
    for (auto& id : extra_) Cli({"kill", id});
  }
  std::string CreateViaCli() {
    auto created = Cli({"create", "--timeout", "5m"});
    EXPECT_EQ(created.exit_code, 0);
    std::string id = Trim(created.out);
    extra_.push_back(id);
    return id;
  }
  // A tree with nested dirs, an empty file, a symlink and a unicode name.
  static void MakeTree(const fs::path& root) {
    fs::create_directories(root / "a" / "b" / "c");
    WriteLocal(root / "a" / "one.txt", "one\n");
    WriteLocal(root / "empty", "");
    WriteLocal(root / "a" / "b" / "h\xC3\xA9llo w\xC3\xB6rld \xE2\x98\x83.txt", "unicode\n");
    WriteLocal(root / "a" / "b" / "c" / "data.bin", PseudoRandom(300'000, 7));
    fs::create_symlink("a/one.txt", root / "link");
  }

  std::optional<Sandbox> sb_;
  std::vector<std::string> extra_;
};

TEST_F(FsIntegrationTest, StreamedRoundTrip20MB) {
  TempDir tmp;
  const std::string data = PseudoRandom(20'000'000, 42);
  WriteLocal(tmp.path() / "up.bin", data);
  int in = open((tmp.path() / "up.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(in, 0);
  std::uint64_t last_progress = 0;
  auto sent = sb_->WriteFileFrom("/tmp/big.bin", in, {}, [&](std::uint64_t n) { last_progress = n; });
  close(in);
  ASSERT_TRUE(sent.has_value()) << sent.error().ToString();
  EXPECT_EQ(*sent, data.size());
  EXPECT_EQ(last_progress, data.size());

  auto st = sb_->Stat("/tmp/big.bin");
  ASSERT_TRUE(st.has_value()) << st.error().ToString();
  EXPECT_TRUE(st->is_file);
  EXPECT_FALSE(st->is_directory);
  EXPECT_EQ(st->size, data.size());
  EXPECT_EQ(st->raw.size(), 21u) << st->raw.dump();

  int out = open((tmp.path() / "down.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(out, 0);
  auto got = sb_->DownloadTo("/tmp/big.bin", out);
  close(out);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, data.size());
  EXPECT_TRUE(ReadLocal(tmp.path() / "down.bin") == data) << "downloaded bytes differ";

  out = open((tmp.path() / "par.bin").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(out, 0);
  auto par = sb_->DownloadToParallel("/tmp/big.bin", out, 4);
  close(out);
  ASSERT_TRUE(par.has_value()) << par.error().ToString();
  EXPECT_EQ(*par, data.size());
  EXPECT_TRUE(ReadLocal(tmp.path() / "par.bin") == data) << "parallel download bytes differ";

  auto inline_read = sb_->ReadFile("/tmp/big.bin");
  ASSERT_TRUE(inline_read.has_value()) << inline_read.error().ToString();
  EXPECT_TRUE(*inline_read == data) << "readFile bytes differ";

  // In-memory WriteFile above the inline limit streams too.
  ASSERT_TRUE(sb_->WriteFile("/tmp/big2.bin", data).has_value());
  auto again = sb_->ReadFile("/tmp/big2.bin");
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_TRUE(*again == data);
}

TEST_F(FsIntegrationTest, InlineWriteStatAndErrors) {
  ASSERT_TRUE(sb_->WriteFile("/tmp/small.txt", "hello").has_value());
  auto text = sb_->ReadTextFile("/tmp/small.txt");
  ASSERT_TRUE(text.has_value()) << text.error().ToString();
  EXPECT_EQ(*text, "hello");
  WriteFileOptions append;
  append.append = true;
  ASSERT_TRUE(sb_->WriteFile("/tmp/small.txt", " world", append).has_value());
  EXPECT_EQ(sb_->ReadFile("/tmp/small.txt").value_or(""), "hello world");
  WriteFileOptions create_new;
  create_new.create_new = true;
  auto exists = sb_->WriteFile("/tmp/small.txt", "x", create_new);
  ASSERT_FALSE(exists.has_value());
  EXPECT_EQ(exists.error().code, "EEXIST") << exists.error().ToString();

  auto missing = sb_->Stat("/tmp/does-not-exist");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, "ENOENT");
  EXPECT_EQ(missing.error().kind, "NotFound");
  auto denied = sb_->WriteFile("/root/x", "x");
  ASSERT_FALSE(denied.has_value());
  EXPECT_EQ(denied.error().code, "EACCES") << denied.error().ToString();
  int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  auto dl = sb_->DownloadTo("/tmp/does-not-exist", devnull);
  close(devnull);
  ASSERT_FALSE(dl.has_value());
  EXPECT_EQ(dl.error().code, "ENOENT");
}

TEST_F(FsIntegrationTest, MkdirReadDirSymlinkRealPathRemove) {
  ASSERT_TRUE(sb_->Mkdir("/tmp/d/e/f", /*recursive=*/true).has_value());
  auto again = sb_->Mkdir("/tmp/d");
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, "EEXIST");
  ASSERT_TRUE(sb_->WriteFile("/tmp/d/file.txt", "x").has_value());
  ASSERT_TRUE(sb_->Symlink("e/f", "/tmp/d/lnk").has_value());
  auto entries = sb_->ReadDir("/tmp/d");
  ASSERT_TRUE(entries.has_value()) << entries.error().ToString();
  std::map<std::string, std::string> kinds;
  for (auto& e : *entries) kinds[e.name] = e.is_symlink ? "l" : e.is_directory ? "d" : e.is_file ? "f" : "?";
  EXPECT_EQ(kinds, (std::map<std::string, std::string>{{"e", "d"}, {"file.txt", "f"}, {"lnk", "l"}}));
  EXPECT_EQ(sb_->RealPath("/tmp/d/lnk").value_or(""), "/tmp/d/e/f");
  EXPECT_EQ(sb_->ReadLink("/tmp/d/lnk").value_or(""), "e/f");
  auto lst = sb_->Lstat("/tmp/d/lnk");
  ASSERT_TRUE(lst.has_value());
  EXPECT_TRUE(lst->is_symlink);
  auto not_empty = sb_->Remove("/tmp/d");
  EXPECT_FALSE(not_empty.has_value());
  ASSERT_TRUE(sb_->Remove("/tmp/d", /*recursive=*/true).has_value());
  EXPECT_EQ(sb_->Stat("/tmp/d").error().code, "ENOENT");
}

TEST_F(FsIntegrationTest, Walk) {
  ASSERT_TRUE(sb_->Mkdir("/tmp/w/x/y", true).has_value());
  ASSERT_TRUE(sb_->WriteFile("/tmp/w/x/y/z.txt", "z").has_value());
  ASSERT_TRUE(sb_->WriteFile("/tmp/w/top.txt", "t").has_value());
  ASSERT_TRUE(sb_->Symlink("top.txt", "/tmp/w/sl").has_value());
  auto entries = sb_->Walk("/tmp/w");
  ASSERT_TRUE(entries.has_value()) << entries.error().ToString();
  ASSERT_FALSE(entries->empty());
  EXPECT_EQ((*entries)[0].path, "/tmp/w");  // root first
  std::map<std::string, std::string> seen;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < entries->size(); ++i) {
    const auto& e = (*entries)[i];
    seen[e.path] = e.is_symlink ? "l" : e.is_directory ? "d" : "f";
    index[e.path] = i;
  }
  EXPECT_EQ(seen, (std::map<std::string, std::string>{{"/tmp/w", "d"},
                                                      {"/tmp/w/x", "d"},
                                                      {"/tmp/w/x/y", "d"},
                                                      {"/tmp/w/x/y/z.txt", "f"},
                                                      {"/tmp/w/top.txt", "f"},
                                                      {"/tmp/w/sl", "l"}}));
  EXPECT_LT(index["/tmp/w/x"], index["/tmp/w/x/y"]);  // directories before contents
  EXPECT_LT(index["/tmp/w/x/y"], index["/tmp/w/x/y/z.txt"]);
  WalkOptions files_only;
  files_only.include_dirs = false;
  files_only.include_symlinks = false;
  auto files = sb_->Walk("/tmp/w", files_only);
  ASSERT_TRUE(files.has_value());
  EXPECT_EQ(files->size(), 2u);
  auto missing = sb_->Walk("/tmp/nope");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, "ENOENT");
}

TEST_F(FsIntegrationTest, CliCpTreeUpAndDown) {
  TempDir tmp;
  MakeTree(tmp.path() / "tree");
  const std::string& id = sb_->id();
  auto up = Cli({"cp", (tmp.path() / "tree").string(), id + ":/tmp"});
  ASSERT_EQ(up.exit_code, 0);
  // /tmp exists, so the tree lands in /tmp/tree.
  EXPECT_EQ(sb_->ReadLink("/tmp/tree/link").value_or(""), "a/one.txt");
  fs::create_directories(tmp.path() / "back");
  auto down = Cli({"cp", id + ":/tmp/tree", (tmp.path() / "back").string()});
  ASSERT_EQ(down.exit_code, 0);
  EXPECT_EQ(Snapshot(tmp.path() / "tree"), Snapshot(tmp.path() / "back" / "tree"));

  // A big single file (parallel download path), to a new name.
  const std::string big = PseudoRandom(9'000'000, 9);
  ASSERT_TRUE(sb_->WriteFile("/tmp/big9.bin", big).has_value());
  ASSERT_EQ(Cli({"cp", id + ":/tmp/big9.bin", (tmp.path() / "big9.bin").string()}).exit_code, 0);
  EXPECT_TRUE(ReadLocal(tmp.path() / "big9.bin") == big) << "cp download of a 9 MB file differs";
  // A single file, to a new name.
  ASSERT_EQ(Cli({"cp", id + ":/tmp/tree/a/one.txt", (tmp.path() / "one-copy").string()}).exit_code, 0);
  EXPECT_EQ(ReadLocal(tmp.path() / "one-copy"), "one\n");
  // Errors: missing source, permission denied inside, unknown sandbox.
  EXPECT_EQ(Cli({"cp", id + ":/tmp/nope", tmp.path().string()}).exit_code, 1);
  EXPECT_EQ(Cli({"cp", (tmp.path() / "one-copy").string(), id + ":/root/x"}).exit_code, 1);
  EXPECT_EQ(Cli({"cp", (tmp.path() / "one-copy").string(), "sbx_ord_00000000000000000000:/tmp"}).exit_code, 1);
  EXPECT_EQ(Cli({"cp", (tmp.path() / "nope").string(), id + ":/tmp"}).exit_code, 1);
}

TEST_F(FsIntegrationTest, CliCpSandboxToSandbox) {
  TempDir tmp;
  MakeTree(tmp.path() / "tree");
  std::string b = CreateViaCli();
  ASSERT_EQ(Cli({"cp", (tmp.path() / "tree").string(), sb_->id() + ":/tmp/src"}).exit_code, 0);
  ASSERT_EQ(Cli({"cp", sb_->id() + ":/tmp/src", b + ":/home/app/dst"}).exit_code, 0);
  ASSERT_EQ(Cli({"cp", b + ":/home/app/dst", (tmp.path() / "back").string()}).exit_code, 0);
  EXPECT_EQ(Snapshot(tmp.path() / "tree"), Snapshot(tmp.path() / "back"));
  // The upload side fails (permission denied): a clean error, not SIGPIPE
  // from the download still feeding the pipe.
  EXPECT_EQ(Cli({"cp", sb_->id() + ":/tmp/src/a/b/c/data.bin", b + ":/root/x"}).exit_code, 1);
}

TEST_F(FsIntegrationTest, CliCpGlob) {
  ASSERT_TRUE(sb_->Mkdir("/tmp/g", true).has_value());
  for (const char* name : {"a.txt", "b.txt", "c.log"}) {
    ASSERT_TRUE(sb_->WriteFile(std::string("/tmp/g/") + name, name).has_value());
  }
  TempDir tmp;
  auto r = Cli({"cp", sb_->id() + ":/tmp/g/*.txt", (tmp.path() / "out").string() + "/"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_EQ(Snapshot(tmp.path() / "out"),
            (std::map<std::string, std::string>{{"a.txt", "f:a.txt"}, {"b.txt", "f:b.txt"}}));
  EXPECT_EQ(Cli({"cp", sb_->id() + ":/tmp/g/*.none", tmp.path().string()}).exit_code, 1);
}

}  // namespace
}  // namespace sandboxd::client

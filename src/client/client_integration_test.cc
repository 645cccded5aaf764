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

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
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

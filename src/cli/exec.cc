// sandbox exec ID CMD [ARGS...]
//
// Runs CMD in sandbox ID. Local stdin is streamed to the process from a
// separate thread (so regular files, pipes and /dev/null all work; EOF ends
// the remote stdin), remote stdout/stderr go to local stdout/stderr, and the
// CLI exits with the remote exit code (128+N when killed by signal N).
// Everything after ID is the command line; no `--` is needed. SIGINT,
// SIGTERM and SIGHUP are forwarded to the remote process (a second Ctrl-C
// exits locally).
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "cli/cli.h"
#include "client/sandbox.h"

namespace sandboxd::cli {
namespace {

void WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // local output gone: drop the rest
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Copies local stdin into the process until EOF or until the process stops
// reading. Runs on its own thread, owning a copy of the process handle.
void PumpStdin(client::Process process) {
  std::string buf(64 * 1024, '\0');
  while (true) {
    ssize_t n = ::read(STDIN_FILENO, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (!process.WriteStdin(std::string_view(buf.data(), static_cast<size_t>(n)))) return;
  }
  (void)process.CloseStdin();
}

// Forwards SIGINT/SIGTERM/SIGHUP to the remote process (processKill with the
// same signal); a second SIGINT, or one before the process exists, exits
// locally with 128+N. Runs on its own thread via sigwait: the signals are
// blocked in every thread (the mask is set before any thread starts).
class SignalForwarder {
 public:
  SignalForwarder() {
    sigemptyset(&set_);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set_, s);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    std::thread([this] { Loop(); }).detach();
  }
  void Attach(const client::Process& p) {
    std::lock_guard lock(mu_);
    process_ = p;
  }

 private:
  void Loop() {
    int interrupts = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&set_, &sig) != 0) return;
      std::optional<client::Process> p;
      {
        std::lock_guard lock(mu_);
        p = process_;
      }
      if (!p || (sig == SIGINT && ++interrupts > 1)) {
        std::fflush(stdout);
        std::_Exit(128 + sig);
      }
      const char* name = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP";
      (void)p->Kill(name);
    }
  }
  sigset_t set_;
  std::mutex mu_;
  std::optional<client::Process> process_;
};

int RunExec(const GlobalOptions& global, const std::string& id, const std::vector<std::string>& cmdline) {
  if (cmdline.empty()) {
    std::fprintf(stderr, "sandbox: exec: missing command\n");
    return 2;
  }
  auto c = MakeClient(global);
  if (!c) return ReportError("exec", c.error());
  // Leaked on purpose: its detached thread lives until the CLI exits.
  auto* signals = new SignalForwarder();
  auto sandbox = client::Sandbox::Connect(*c, id);
  if (!sandbox) return ReportError("exec", sandbox.error());
  client::SpawnOptions options;
  options.stdin_mode = client::Stdio::kPiped;
  options.on_stdout = [](std::string_view chunk) { WriteAll(STDOUT_FILENO, chunk); };
  options.on_stderr = [](std::string_view chunk) { WriteAll(STDERR_FILENO, chunk); };
  std::vector<std::string> args(cmdline.begin() + 1, cmdline.end());
  auto process = sandbox->Spawn(cmdline[0], args, std::move(options));
  if (!process) return ReportError("exec", process.error());
  signals->Attach(*process);
  // Detached: a terminal stdin may never reach EOF; main() exits with _Exit.
  std::thread(PumpStdin, *process).detach();
  auto status = process->Wait();
  if (!status) return ReportError("exec", status.error());
  (void)sandbox->Close();
  return status->ExitCode();
}

}  // namespace

void RegisterExec(CLI::App& app, Context& ctx) {
  auto id = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("exec", "run a command in a sandbox");
  sub->add_option("id", *id, "sandbox id")->required();
  sub->prefix_command();  // everything after ID belongs to the command
  sub->footer("Usage: sandbox exec ID CMD [ARGS...]");
  sub->callback([id, sub, &ctx] {
    std::vector<std::string> cmdline = sub->remaining();
    ctx.exit_code = RunExec(ctx.global, *id, cmdline);
  });
}

}  // namespace sandboxd::cli

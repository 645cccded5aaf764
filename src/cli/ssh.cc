// sandbox ssh [--print] [-o OPTION]... ID [CMD [ARGS...]]
//
// Opens an SSH session into sandbox ID with the system's OpenSSH client: asks
// the server for the sandbox's SSH credential (exposeSsh: a random username,
// valid while the sandbox runs) and replaces itself with
// `ssh -p PORT [-o OPTION]... USER@HOST [CMD...]`, so the terminal, signals,
// window size and exit status are OpenSSH's own. Without CMD it is an
// interactive login shell on a terminal. --print prints the command instead.
// The gateway's host key is kept across server restarts, so it is pinned on
// first use (StrictHostKeyChecking=accept-new) unless -o says otherwise.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "cli/cli.h"

namespace sandboxd::cli {
namespace {

// POSIX shell quoting, for --print.
std::string Quote(const std::string& s) {
  if (!s.empty() &&
      s.find_first_not_of(
          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_") ==
          std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\"'\"'";
    else
      out += c;
  }
  return out + "'";
}

std::vector<std::string> SshCommand(const client::SshAccess& a,
                                    const std::vector<std::string>& options,
                                    const std::vector<std::string>& cmdline) {
  std::vector<std::string> argv = {"ssh", "-p", std::to_string(a.port)};
  bool host_key_policy = false;
  for (const auto& o : options) host_key_policy |= o.starts_with("StrictHostKeyChecking");
  if (!host_key_policy) {
    argv.push_back("-o");
    argv.push_back("StrictHostKeyChecking=accept-new");
  }
  for (const auto& o : options) {
    argv.push_back("-o");
    argv.push_back(o);
  }
  argv.push_back(a.username + "@" + a.hostname);
  if (!cmdline.empty()) {
    argv.push_back("--");
    argv.insert(argv.end(), cmdline.begin(), cmdline.end());
  }
  return argv;
}

int RunSsh(const GlobalOptions& global, const std::string& id, bool print,
           const std::vector<std::string>& options, const std::vector<std::string>& cmdline) {
  auto c = MakeClient(global);
  if (!c) return ReportError("ssh", c.error());
  auto access = c->ExposeSsh(id);
  if (!access) return ReportError("ssh " + id, access.error());
  std::vector<std::string> command = cmdline;
  if (!command.empty() && command.front() == "--") command.erase(command.begin());
  auto argv = SshCommand(*access, options, command);
  if (print) {
    std::string line;
    for (const auto& a : argv) line += (line.empty() ? "" : " ") + Quote(a);
    std::printf("%s\n", line.c_str());
    return 0;
  }
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  ::execvp("ssh", cargv.data());
  std::fprintf(stderr, "sandbox: ssh: cannot run the OpenSSH client 'ssh': %s\n",
               std::strerror(errno));
  return 127;
}

}  // namespace

void RegisterSsh(CLI::App& app, Context& ctx) {
  struct Args {
    std::string id;
    bool print = false;
    std::vector<std::string> options;
  };
  auto args = std::make_shared<Args>();
  CLI::App* sub =
      app.add_subcommand("ssh", "open an SSH session into a sandbox (with the system's ssh)");
  sub->add_flag("--print", args->print, "print the ssh command instead of running it");
  sub->add_option("-o,--ssh-option", args->options,
                  "an ssh -o option, e.g. BatchMode=yes (repeatable)")
      ->allow_extra_args(false);  // one value each: what follows is ID and the command
  sub->add_option("id", args->id, "sandbox id")->required();
  sub->prefix_command();  // everything after ID is the remote command
  sub->footer("Usage: sandbox ssh [--print] [-o OPTION]... ID [CMD [ARGS...]]");
  sub->callback([args, sub, &ctx] {
    ctx.exit_code = RunSsh(ctx.global, args->id, args->print, args->options, sub->remaining());
  });
}

}  // namespace sandboxd::cli

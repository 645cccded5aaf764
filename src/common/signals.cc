#include "common/signals.h"

#include <csignal>

namespace sandboxd {
namespace {

struct SigName {
  const char* name;
  int num;
};
constexpr SigName kSignals[] = {
    {"SIGABRT", SIGABRT}, {"SIGALRM", SIGALRM}, {"SIGBUS", SIGBUS},       {"SIGCHLD", SIGCHLD},
    {"SIGCONT", SIGCONT}, {"SIGFPE", SIGFPE},   {"SIGHUP", SIGHUP},       {"SIGILL", SIGILL},
    {"SIGINT", SIGINT},   {"SIGIO", SIGIO},     {"SIGPOLL", SIGPOLL},     {"SIGUNUSED", SIGSYS},
    {"SIGKILL", SIGKILL}, {"SIGPIPE", SIGPIPE}, {"SIGPROF", SIGPROF},     {"SIGPWR", SIGPWR},
    {"SIGQUIT", SIGQUIT}, {"SIGSEGV", SIGSEGV}, {"SIGSTKFLT", SIGSTKFLT}, {"SIGSTOP", SIGSTOP},
    {"SIGSYS", SIGSYS},   {"SIGTERM", SIGTERM}, {"SIGTRAP", SIGTRAP},     {"SIGTSTP", SIGTSTP},
    {"SIGTTIN", SIGTTIN}, {"SIGTTOU", SIGTTOU}, {"SIGURG", SIGURG},       {"SIGUSR1", SIGUSR1},
    {"SIGUSR2", SIGUSR2}, {"SIGVTALRM", SIGVTALRM}, {"SIGWINCH", SIGWINCH}, {"SIGXCPU", SIGXCPU},
    {"SIGXFSZ", SIGXFSZ},
};

}  // namespace

std::optional<int> SignalNumber(std::string_view name) {
  for (const auto& s : kSignals) {
    if (name == s.name) return s.num;
  }
  return std::nullopt;
}

std::string SignalName(int signo) {
  if (signo == SIGPOLL) return "SIGIO";
  if (signo == SIGSYS) return "SIGSYS";
  for (const auto& s : kSignals) {
    if (s.num == signo) return s.name;
  }
  return {};
}

}  // namespace sandboxd

#include "agent/pty.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>

namespace sandboxd::agent {
namespace {

constexpr char kDefaultEof = '\x04';  // ^D

// The slave of `master`. TIOCGPTPEER (Linux 4.13) opens it through the
// master itself, so no path lookup can be redirected by whatever the sandbox
// did to /dev/pts; older kernels fall back to the ptsname path.
Result<UniqueFd> OpenSlave(int master) {
  constexpr int kFlags = O_RDWR | O_NOCTTY | O_CLOEXEC;
  int fd = ioctl(master, TIOCGPTPEER, kFlags);
  if (fd >= 0) return UniqueFd(fd);
  if (errno != EINVAL && errno != ENOTTY) return FailErrno("pty: TIOCGPTPEER");
  char name[64];
  if (int err = ptsname_r(master, name, sizeof name); err != 0)
    return FailErrno("pty: ptsname", err);
  fd = open(name, kFlags);
  if (fd < 0) return FailErrno(std::string("pty: open ") + name);
  return UniqueFd(fd);
}

}  // namespace

Result<PtyPair> OpenPty(uint16_t rows, uint16_t cols) {
  PtyPair pair;
  // No grantpt(): on Linux devpts it only checks the fd (the pt_chown helper
  // is gone), and some glibc versions consult NSS for the "tty" group, which
  // the static agent cannot do. Ownership is set by StartChild instead.
  // open() rather than posix_openpt(), whose glibc versions differ in what
  // they check besides.
  pair.master.Reset(open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK));
  if (!pair.master) return FailErrno("pty: open /dev/ptmx");
  if (unlockpt(pair.master.get()) != 0) return FailErrno("pty: unlockpt");
  auto slave = OpenSlave(pair.master.get());
  if (!slave) return std::unexpected(slave.error());
  pair.slave = std::move(*slave);
  SBX_TRY(SetWindowSize(pair.master.get(), rows, cols));
  return pair;
}

Status SetWindowSize(int master, uint16_t rows, uint16_t cols) {
  winsize ws{};
  ws.ws_row = rows;
  ws.ws_col = cols;
  if (ioctl(master, TIOCSWINSZ, &ws) != 0) return FailErrno("pty: TIOCSWINSZ");
  return {};
}

char EofChar(int master) {
  termios t;
  if (tcgetattr(master, &t) != 0) return kDefaultEof;
  cc_t c = t.c_cc[VEOF];
  return c == _POSIX_VDISABLE ? kDefaultEof : static_cast<char>(c);
}

}  // namespace sandboxd::agent

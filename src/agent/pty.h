// Pseudo-terminals for `spawn` with a pty (docs/agent-link.md, "Terminals").
//
// The agent keeps the master; the child gets the slave as stdin, stdout,
// stderr and controlling terminal (see spawn.h). Every fd here is CLOEXEC and
// opened with O_NOCTTY: in a sandbox the agent is a session leader without a
// terminal, and opening a tty without O_NOCTTY would make it the agent's own.
#pragma once

#include <cstdint>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::agent {

struct PtyPair {
  UniqueFd master;  // non-blocking
  UniqueFd slave;   // blocking, as programs expect of their terminal
};

// Opens a new pair on /dev/ptmx (in a sandbox, the private devpts instance
// the backend mounts) with the given window size. The slave is owned by the
// caller; StartChild hands it to the child's uid.
Result<PtyPair> OpenPty(uint16_t rows, uint16_t cols);

// TIOCSWINSZ through the master. The kernel applies it to the slave and, if
// the size changed, sends SIGWINCH to the terminal's foreground group.
Status SetWindowSize(int master, uint16_t rows, uint16_t cols);

// The terminal's end-of-file character as the child has it now (c_cc[VEOF]
// of the slave, which the master's tcgetattr reports); ^D if it cannot be
// read or is disabled.
char EofChar(int master);

}  // namespace sandboxd::agent

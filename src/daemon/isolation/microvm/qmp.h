// A minimal, blocking QMP client (QEMU's JSON monitor protocol) for the one
// job the microVM backend has for it: stop a VM and migrate its state to a
// file (SaveVmState), to make a snapshot. QEMU runs unprivileged and is
// treated as untrusted: replies are bounded and every wait has a deadline.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::isolation::microvm {

class QmpClient {
 public:
  using Clock = std::chrono::steady_clock;

  // Reads the greeting and negotiates capabilities on `sock`, a connected
  // stream socket whose other end is QEMU's `-mon chardev=...,mode=control`.
  static Result<QmpClient> Connect(UniqueFd sock, Clock::time_point deadline);

  // Runs one command and returns its "return" value. An "error" reply is an
  // Error with QEMU's description. Events that arrive meanwhile are skipped.
  // `pass_fd` >= 0 is sent along with the command (SCM_RIGHTS), as `getfd`
  // expects.
  Result<nlohmann::json> Execute(const std::string& command, const nlohmann::json& arguments,
                                 Clock::time_point deadline, int pass_fd = -1);

 private:
  explicit QmpClient(UniqueFd sock) : sock_(std::move(sock)) {}
  // One line (a JSON object) from QEMU.
  Result<nlohmann::json> ReadMessage(Clock::time_point deadline);

  UniqueFd sock_;
  std::string buf_;
};

// Stops the VM, hands QEMU `state_fd` (open for writing) and migrates the
// VM's whole state (RAM, devices) into it; returns once QEMU reports the
// migration completed. The VM stays stopped ("postmigrate"): kill it.
Status SaveVmState(QmpClient& qmp, int state_fd, QmpClient::Clock::time_point deadline);

}  // namespace sandboxd::isolation::microvm

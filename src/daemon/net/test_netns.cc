#include "daemon/net/test_netns.h"

#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <random>
#include <thread>

#include "daemon/net/netns.h"

namespace sandboxd::net::testing {

Result<UniqueFd> NewNetns() {
  Result<UniqueFd> result = FailMsg("unset");
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      result = FailErrno("unshare(CLONE_NEWNET)");
      return;
    }
    result = OpenCurrentNetns();
  });
  t.join();
  return result;
}

std::string UniqueName(const std::string& tag) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%x", static_cast<unsigned>(::getpid()));
  // The '_' ends the pid, so one process's names are never a prefix of
  // another's ("sxt12_" vs "sxt123_").
  return tag + buf + "_";
}

uint32_t RandomTestSubnet24() {
  std::random_device rd;
  const uint32_t third_and_second = std::uniform_int_distribution<uint32_t>(0, 4095)(rd);
  return (10u << 24) | (240u << 16) | (third_and_second << 8);  // 10.240.0.0/12: 4096 /24s
}

}  // namespace sandboxd::net::testing

#include "daemon/isolation/microvm/tsc.h"

#include <time.h>
#include <x86intrin.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>
#include <string>

namespace sandboxd::isolation::microvm {
namespace {

double Mono() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// One (time, tsc) pair whose time is known to within 20 us.
bool Sample(double* t, uint64_t* c) {
  for (int tries = 0; tries < 10000; ++tries) {
    double a = Mono();
    uint64_t tsc = __rdtsc();
    double b = Mono();
    if (b - a < 20e-6) {
      *t = (a + b) / 2;
      *c = tsc;
      return true;
    }
  }
  return false;
}

bool HasCpuFlag(const std::string& flag) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string w;
    while (words >> w) {
      if (w == flag) return true;
    }
    return false;
  }
  return false;
}

}  // namespace

Result<uint64_t> MeasureTscKhz() {
  if (!HasCpuFlag("constant_tsc")) return FailMsg("the host's TSC is not constant-rate");
  std::array<double, 5> khz{};
  for (double& k : khz) {
    double t0, t1;
    uint64_t c0, c1;
    if (!Sample(&t0, &c0)) return FailMsg("TSC measurement: clock reads keep getting preempted");
    timespec ts{0, 50 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
    if (!Sample(&t1, &c1)) return FailMsg("TSC measurement: clock reads keep getting preempted");
    k = static_cast<double>(c1 - c0) / (t1 - t0) / 1000.0;
  }
  std::sort(khz.begin(), khz.end());
  if (khz[2] < 100000 || khz[2] > 100000000) return FailMsg("implausible TSC rate");
  return static_cast<uint64_t>(khz[2] + 0.5);
}

}  // namespace sandboxd::isolation::microvm

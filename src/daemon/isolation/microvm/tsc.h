// The host's TSC rate, for TCG guests.
//
// Under TCG the guest's rdtsc returns the host's TSC, but the guest kernel can
// only calibrate it against the emulated PIT; on a loaded host that fails
// ("tsc: Unable to calibrate against PIT") and the boot hangs without a usable
// clocksource (docs/microvm.md). The backend measures the rate once and passes
// tsc_early_khz=<rate> (with tsc=reliable) on every TCG guest's command line.
#pragma once

#include <cstdint>

#include "common/error.h"

namespace sandboxd::isolation::microvm {

// The median of five 50 ms measurements of rdtsc against CLOCK_MONOTONIC_RAW,
// each end taken between two clock reads less than 20 us apart (so a
// preemption there cannot skew it). Takes ~250 ms. Fails on hosts without an
// invariant, constant-rate TSC (the guest then needs its own calibration).
Result<uint64_t> MeasureTscKhz();

}  // namespace sandboxd::isolation::microvm

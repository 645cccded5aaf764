// Prints the host's TSC frequency in kHz: the median of five 50 ms
// measurements of rdtsc against CLOCK_MONOTONIC_RAW, each end read between two
// clock reads less than 20 us apart (so a preemption there cannot skew it).
//
// Why: under TCG the guest's rdtsc returns the host's TSC, but the guest
// kernel can only calibrate it against the emulated PIT, and on a loaded host
// that calibration fails ("tsc: Unable to calibrate against PIT") and the boot
// hangs without a clocksource. Passing tsc_early_khz=<this> (with
// tsc=reliable) skips the calibration. The daemon does the same measurement.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>

static double Mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int Cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

// One (time, tsc) pair whose time is known to within 20 us.
static void Sample(double* t, uint64_t* c) {
  for (;;) {
    double a = Mono();
    uint64_t tsc = __rdtsc();
    double b = Mono();
    if (b - a < 20e-6) {
      *t = (a + b) / 2;
      *c = tsc;
      return;
    }
  }
}

int main(void) {
  double khz[5];
  for (int i = 0; i < 5; ++i) {
    double t0, t1;
    uint64_t c0, c1;
    Sample(&t0, &c0);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    Sample(&t1, &c1);
    khz[i] = (double)(c1 - c0) / (t1 - t0) / 1000.0;
  }
  qsort(khz, 5, sizeof khz[0], Cmp);
  printf("%.0f\n", khz[2]);
  return 0;
}

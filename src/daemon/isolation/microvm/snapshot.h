// Snapshots of a booted microVM, to restore new sandboxes from instead of
// booting them (docs/microvm.md, "Snapshot restore").
//
// A snapshot is QEMU's migration stream of a VM stopped at the boot
// handshake (common/vm_boot.h): the guest kernel is up, its modules are
// loaded and its init waits on the agent port for the per-sandbox config. No
// disk's filesystem is mounted, nothing of any sandbox is in it. One file per
// fingerprint of everything it depends on:
//
//   <dir>/                      0700, in the daemon's data dir
//   <dir>/<fingerprint>/state   0600, QEMU's migration stream
//   <dir>/<fingerprint>/meta.json
//   <dir>/tsc_khz               the host TSC rate the snapshots were made with
//
// QEMU reads `state` through an O_RDONLY fd; it never sees the path.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::isolation::microvm {

// Everything a snapshot depends on. Files are identified by path, device,
// inode, size and mtime (scripts/vm/build-all renames new files into place,
// so a rebuild is a new inode), not by hashing hundreds of megabytes at start.
struct SnapshotInputs {
  std::vector<std::string> files;      // QEMU, kernel, initramfs, root image, scratch template
  std::vector<std::string> qemu_argv;  // the restored VMs' command line (the machine, RAM, vCPUs)
  std::string extra;                   // e.g. the host CPU's flags under KVM (-cpu host)
};

// Lower-case hex SHA-256 over a format version and the inputs. Fails if a
// file is missing.
Result<std::string> SnapshotFingerprint(const SnapshotInputs& inputs);

class SnapshotStore {
 public:
  // `dir` is made (0700) on first use.
  explicit SnapshotStore(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }

  // The saved state of `fingerprint`, O_RDONLY; ENOENT when there is none.
  Result<UniqueFd> Open(const std::string& fingerprint) const;

  // A snapshot being written: `fd` (O_WRONLY) is where QEMU migrates to.
  struct Pending {
    std::string fingerprint;
    std::string tmp_dir;  // <dir>/.tmp-<fingerprint>-<pid>-<n>
    UniqueFd fd;
  };
  Result<Pending> Begin(const std::string& fingerprint);
  // Flushes the state to disk and moves it into place (atomically: a crash
  // leaves a .tmp dir, which the next Commit or RemoveAllBut deletes). Then
  // removes every other snapshot: their inputs are gone.
  Status Commit(Pending pending, const std::string& meta_json);
  // Drops a pending or committed snapshot.
  void Discard(Pending pending);
  void Remove(const std::string& fingerprint);
  void RemoveAllBut(const std::string& fingerprint);

  // The host TSC rate to give TCG guests: the rate stored with the snapshots
  // when `measured` is within 100 ppm of it (measurements differ by a few
  // ppm from run to run; a new rate would mean a new fingerprint at every
  // daemon start), else `measured`, which is then stored.
  uint64_t StableTscKhz(uint64_t measured);

 private:
  std::string dir_;
};

// One snapshot, prepared on demand by one thread and shared by every
// restore. Thread-safe.
class SnapshotCache {
 public:
  using Clock = std::chrono::steady_clock;
  // Boots a VM to the handshake and saves it into `state_fd`. Runs on the
  // cache's own thread; must return when the owner cancels it (the backend
  // kills the VM being prepared).
  using PrepareFn = std::function<Status(int state_fd)>;
  // After a failed preparation, the next one waits at least this long.
  static constexpr std::chrono::seconds kRetryAfter{60};

  SnapshotCache(SnapshotStore store, std::string fingerprint, PrepareFn prepare,
                std::function<Clock::time_point()> now = Clock::now);
  // Joins a running preparation: cancel it first (see PrepareFn).
  ~SnapshotCache();
  SnapshotCache(const SnapshotCache&) = delete;
  SnapshotCache& operator=(const SnapshotCache&) = delete;

  const std::string& fingerprint() const { return fingerprint_; }

  // Starts preparing unless a snapshot is there, a preparation runs, or the
  // last one failed less than kRetryAfter ago.
  void StartPreparing();

  // The state to restore from: the committed snapshot; else it starts (or
  // joins) a preparation and waits for it up to `wait`. nullopt: none in
  // time, or preparing failed; boot cold.
  std::optional<UniqueFd> Acquire(std::chrono::milliseconds wait);

  // Waits while a preparation runs, up to `max` (a cold boot of another
  // size should not run beside it: two TCG guests booting on the same few
  // CPUs slow each other down far more than twice, see docs/microvm.md).
  void AwaitIdle(std::chrono::milliseconds max);

  // A restore failed in a way that blames the snapshot (QEMU refused the
  // state): delete it; the next Acquire prepares a new one.
  void Invalidate();

  // How many preparations ran to completion (for tests and logs).
  int prepared_count() const;

 private:
  void StartLocked(std::unique_lock<std::mutex>& lock);
  void Run();

  SnapshotStore store_;
  const std::string fingerprint_;
  const PrepareFn prepare_;
  const std::function<Clock::time_point()> now_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool running_ = false;
  bool stopping_ = false;
  int prepared_ = 0;
  std::optional<Clock::time_point> failed_at_;
  std::thread thread_;
};

}  // namespace sandboxd::isolation::microvm

// bench-lifecycle: sandbox lifecycle latencies through the WebSocket API
// (sbx_client), printed as p50/p99 tables. A program, not a test: it never
// asserts on wall time. See --help.
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/client.h"
#include "client/sandbox.h"

namespace sandboxd::bench {
namespace {

using Clock = std::chrono::steady_clock;
using client::Client;
using client::Sandbox;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Nearest-rank percentile.
double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

struct Row {
  std::string name;
  std::vector<double> samples;
  int errors = 0;
  std::string note;
};

void PrintRows(const std::vector<Row>& rows) {
  std::printf("\n%-46s %6s %10s %10s %7s\n", "metric", "n", "p50 ms", "p99 ms", "errors");
  std::printf("%s\n", std::string(83, '-').c_str());
  for (const auto& r : rows) {
    if (r.samples.empty()) {
      std::printf("%-46s %6d %10s %10s %7d  %s\n", r.name.c_str(), 0, "-", "-", r.errors, r.note.c_str());
    } else {
      std::printf("%-46s %6zu %10.2f %10.2f %7d  %s\n", r.name.c_str(), r.samples.size(),
                  Percentile(r.samples, 50), Percentile(r.samples, 99), r.errors, r.note.c_str());
    }
  }
}

client::CreateOptions BenchCreateOptions(const std::string& isolation, const std::string& timeout) {
  client::CreateOptions o;
  o.timeout = timeout;
  o.labels = {{"bench", "lifecycle"}, {"isolation", isolation}};
  return o;
}

client::SpawnOptions Quiet() {
  client::SpawnOptions o;
  o.stdout_mode = client::Stdio::kNull;
  o.stderr_mode = client::Stdio::kNull;
  return o;
}

// ---- host memory --------------------------------------------------------------

std::optional<long> ReadKb(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) == 0) {
      std::istringstream s(line.substr(key.size()));
      long kb;
      if (s >> kb) return kb;
    }
  }
  return std::nullopt;
}

std::vector<int> AllPids() {
  std::vector<int> pids;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      char* end;
      long pid = std::strtol(e->d_name, &end, 10);
      if (*end == '\0' && pid > 0) pids.push_back(static_cast<int>(pid));
    }
    closedir(d);
  }
  return pids;
}

int ParentPid(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  auto rp = stat.rfind(')');
  if (rp == std::string::npos) return -1;
  std::istringstream s(stat.substr(rp + 2));
  char state;
  int ppid = -1;
  s >> state >> ppid;
  return ppid;
}

// Pid of the process holding the listening TCP socket on `port` (127.0.0.1 or any).
std::optional<int> ListenerPid(const std::string& port_text) {
  int port = std::atoi(port_text.c_str());
  std::set<std::string> inodes;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::istringstream s(line);
      std::string sl, local, remote, st, queues, tr, retr, uid, timeout, inode;
      s >> sl >> local >> remote >> st >> queues >> tr >> retr >> uid >> timeout >> inode;
      auto colon = local.rfind(':');
      if (st == "0A" && colon != std::string::npos && std::stoi(local.substr(colon + 1), nullptr, 16) == port) {
        inodes.insert("socket:[" + inode + "]");
      }
    }
  }
  if (inodes.empty()) return std::nullopt;
  for (int pid : AllPids()) {
    std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = opendir(fd_dir.c_str());
    if (!d) continue;
    while (dirent* e = readdir(d)) {
      char target[256];
      ssize_t n = readlink((fd_dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
      if (n > 0 && inodes.count(std::string(target, static_cast<size_t>(n)))) {
        closedir(d);
        return pid;
      }
    }
    closedir(d);
  }
  return std::nullopt;
}

struct MemorySnapshot {
  long pss_kb = 0;  // sum over the daemon's process tree + its sandbox cgroups
  int processes = 0;
  long mem_available_kb = 0;
  std::set<std::string> cgroup_parents;  // "/…/sandboxd-<hash>" paths
};

// Memory charged to the sandbox cgroup parents (v1 memory.usage_in_bytes or
// v2 memory.current; includes page cache and kernel memory). -1: unavailable.
long CgroupUsageKb(const std::set<std::string>& parents) {
  long total = -1;
  for (const auto& parent : parents) {
    for (const std::string& file : {"/sys/fs/cgroup/memory" + parent + "/memory.usage_in_bytes",
                                    "/sys/fs/cgroup" + parent + "/memory.current"}) {
      std::ifstream in(file);
      long bytes;
      if (in >> bytes) {
        total = (total < 0 ? 0 : total) + bytes / 1024;
        break;
      }
    }
  }
  return total;
}

MemorySnapshot SnapshotMemory(std::optional<int> daemon_pid) {
  MemorySnapshot m;
  m.mem_available_kb = ReadKb("/proc/meminfo", "MemAvailable:").value_or(0);
  auto pids = AllPids();
  std::map<int, int> parent;
  for (int p : pids) parent[p] = ParentPid(p);
  std::set<int> tree;
  if (daemon_pid) {
    tree.insert(*daemon_pid);
    bool grew = true;
    while (grew) {
      grew = false;
      for (auto [p, pp] : parent) {
        if (!tree.count(p) && tree.count(pp)) grew = tree.insert(p).second || grew;
      }
    }
  }
  // Sandboxes double-forked away from the daemon still sit in its cgroup
  // parent ("sandboxd-<hash>", learned from the tree's members); other
  // daemons on the host use other parents and are not counted.
  auto cgroup_of = [](int p) {
    std::ifstream cg("/proc/" + std::to_string(p) + "/cgroup");
    return std::string((std::istreambuf_iterator<char>(cg)), {});
  };
  std::set<std::string> parents;
  for (int p : tree) {
    std::istringstream lines(cgroup_of(p));
    std::string line;
    while (std::getline(lines, line)) {
      // "N:controllers:/path"; keep the path up to the sandboxd-<hash> component.
      auto colon = line.find(':', line.find(':') + 1);
      if (colon == std::string::npos) continue;
      std::string path = line.substr(colon + 1);
      auto at = path.find("/sandboxd-");
      if (at == std::string::npos) continue;
      parents.insert(path.substr(0, path.find('/', at + 1)));
    }
  }
  if (!parents.empty()) {
    for (int p : pids) {
      std::string text = cgroup_of(p);
      for (const auto& parent : parents) {
        if (text.find(parent + "/") != std::string::npos) tree.insert(p);
      }
    }
  }
  m.cgroup_parents = parents;
  for (int p : tree) {
    if (auto pss = ReadKb("/proc/" + std::to_string(p) + "/smaps_rollup", "Pss:")) {
      m.pss_kb += *pss;
      ++m.processes;
    }
  }
  return m;
}

// QEMU processes (microVM sandboxes) among the daemon's children.
struct QemuMemory {
  int processes = 0;
  long rss_kb = 0;
  long anon_kb = 0;  // what one more VM costs; the rest is file pages shared by all VMs
};

QemuMemory SnapshotQemu(std::optional<int> daemon_pid) {
  QemuMemory q;
  if (!daemon_pid) return q;
  for (int p : AllPids()) {
    if (ParentPid(p) != *daemon_pid) continue;
    std::ifstream comm("/proc/" + std::to_string(p) + "/comm");
    std::string name;
    std::getline(comm, name);
    if (name.rfind("qemu-system", 0) != 0) continue;
    const std::string status = "/proc/" + std::to_string(p) + "/status";
    if (auto rss = ReadKb(status, "VmRSS:")) {
      ++q.processes;
      q.rss_kb += *rss;
      q.anon_kb += ReadKb(status, "RssAnon:").value_or(0);
    }
  }
  return q;
}

// ---- bwrap floor --------------------------------------------------------------

std::optional<std::string> FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream s(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(s, dir, ':')) {
    std::string full = dir + "/" + name;
    if (access(full.c_str(), X_OK) == 0) return full;
  }
  return std::nullopt;
}

Row BenchBwrap(int runs) {
  Row row{"bwrap --unshare-all --ro-bind / / true (floor)", {}, 0, ""};
  auto bwrap = FindOnPath("bwrap");
  if (!bwrap) {
    row.note = "bwrap not installed";
    return row;
  }
  for (int i = 0; i < runs; ++i) {
    auto t0 = Clock::now();
    pid_t pid = fork();
    if (pid == 0) {
      execl(bwrap->c_str(), "bwrap", "--unshare-all", "--ro-bind", "/", "/", "true", static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    double ms = MsSince(t0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      row.samples.push_back(ms);
    } else {
      ++row.errors;
    }
  }
  return row;
}

// ---- main -----------------------------------------------------------------------

struct Flags {
  std::string endpoint, token, isolation = "default";
  int iterations = 50;
  int exec_iterations = 200;
  int idle = 20;
  int concurrency = 4;
  double duration_s = 5.0;
  int bwrap_runs = 50;
};

int Run(const Flags& f) {
  client::ClientOptions co;
  co.endpoint = f.endpoint;
  co.token = f.token;
  auto c = Client::Create(co);
  if (!c) {
    std::fprintf(stderr, "bench-lifecycle: %s\n", c.error().ToString().c_str());
    return 1;
  }
  const Client& cl = *c;
  std::printf("sandboxd lifecycle benchmark: endpoint %s, isolation label '%s'\n", cl.endpoint().Origin().c_str(),
              f.isolation.c_str());
  std::fflush(stdout);
  // Probe once so an unreachable server is one clear error, not N.
  {
    auto probe = Sandbox::Create(cl, BenchCreateOptions(f.isolation, "1m"));
    if (!probe) {
      std::fprintf(stderr, "bench-lifecycle: cannot create a sandbox: %s\n", probe.error().ToString().c_str());
      return 1;
    }
    (void)probe->Kill();
  }

  std::vector<Row> rows;
  Row first_true{"create -> first `true` exited", {}, 0, ""};
  Row kill{"kill (DELETE until the WebSocket closed)", {}, 0, ""};
  std::string last_error;
  for (int i = 0; i < f.iterations; ++i) {
    auto t0 = Clock::now();
    auto sb = Sandbox::Create(cl, BenchCreateOptions(f.isolation, "2m"));
    if (!sb) {
      ++first_true.errors;
      last_error = sb.error().ToString();
      continue;
    }
    auto p = sb->Spawn("true", {}, Quiet());
    auto st = p ? p->Wait() : client::Result<client::ProcessStatus>(std::unexpected(p.error()));
    if (st && st->success) {
      first_true.samples.push_back(MsSince(t0));
    } else {
      ++first_true.errors;
      last_error = st ? "true exited " + std::to_string(st->code) : st.error().ToString();
    }
    auto k0 = Clock::now();
    if (auto s = sb->Kill(); s) {
      kill.samples.push_back(MsSince(k0));
    } else {
      ++kill.errors;
      last_error = s.error().ToString();
    }
  }

  Row exec{"exec round trip of `true` (running sandbox)", {}, 0, ""};
  if (auto sb = Sandbox::Create(cl, BenchCreateOptions(f.isolation, "5m")); sb) {
    for (int i = 0; i < f.exec_iterations; ++i) {
      auto t0 = Clock::now();
      auto p = sb->Spawn("true", {}, Quiet());
      auto st = p ? p->Wait() : client::Result<client::ProcessStatus>(std::unexpected(p.error()));
      if (st && st->success) {
        exec.samples.push_back(MsSince(t0));
      } else {
        ++exec.errors;
        last_error = st ? "true exited " + std::to_string(st->code) : st.error().ToString();
      }
    }
    (void)sb->Kill();
  } else {
    exec.errors = f.exec_iterations;
    last_error = sb.error().ToString();
  }
  rows.push_back(std::move(first_true));
  rows.push_back(std::move(exec));
  rows.push_back(std::move(kill));
  rows.push_back(BenchBwrap(f.bwrap_runs));
  PrintRows(rows);

  // Throughput: N clients, each creating and killing in a loop.
  std::atomic<int> creates{0}, errors{0};
  auto stop_at = Clock::now() + std::chrono::duration<double>(f.duration_s);
  auto t0 = Clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < f.concurrency; ++w) {
    workers.emplace_back([&] {
      while (Clock::now() < stop_at) {
        auto sb = Sandbox::Create(cl, BenchCreateOptions(f.isolation, "1m"));
        if (!sb) {
          ++errors;
          continue;
        }
        ++creates;
        if (!sb->Kill()) ++errors;
      }
    });
  }
  for (auto& t : workers) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("\ncreates/s with %d concurrent clients (create+kill loops, %.1f s): %.2f  (%d creates, %d errors)\n",
              f.concurrency, elapsed, creates / elapsed, creates.load(), errors.load());

  // Host memory per idle sandbox.
  auto daemon_pid = ListenerPid(cl.endpoint().port);
  auto before = SnapshotMemory(daemon_pid);
  std::vector<std::string> ids;
  for (int i = 0; i < f.idle; ++i) {
    auto sb = Sandbox::Create(cl, BenchCreateOptions(f.isolation, "5m"));
    if (!sb) {
      last_error = sb.error().ToString();
      continue;
    }
    ids.push_back(sb->id());
    (void)sb->Close();  // timed: keeps running idle
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto after = SnapshotMemory(daemon_pid);
  auto qemu = SnapshotQemu(daemon_pid);
  long cg_with = CgroupUsageKb(after.cgroup_parents);
  for (const auto& id : ids) (void)cl.Kill(id);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  long cg_without = CgroupUsageKb(after.cgroup_parents);
  int n = static_cast<int>(ids.size());
  std::printf("\nhost memory per idle sandbox (%d idle timed sandboxes):\n", n);
  if (n > 0) {
    if (daemon_pid) {
      std::printf("  PSS sum (smaps_rollup) over the daemon (pid %d), its descendants and its sandboxd-<hash>\n"
                  "    cgroups: %.2f MiB/sandbox (%ld -> %ld KiB, %d -> %d processes)\n",
                  *daemon_pid, (after.pss_kb - before.pss_kb) / 1024.0 / n, before.pss_kb, after.pss_kb,
                  before.processes, after.processes);
    } else {
      std::printf("  PSS: daemon process not found locally (remote endpoint?)\n");
    }
    if (cg_with >= 0 && cg_without >= 0) {
      std::printf("  cgroup memory charged to the sandbox cgroups (incl. page cache, kernel memory), with all\n"
                  "    %d vs. after killing them: %.2f MiB/sandbox (%ld -> %ld KiB)\n",
                  n, (cg_with - cg_without) / 1024.0 / n, cg_without, cg_with);
    }
    std::printf("  MemAvailable delta (/proc/meminfo, whole host, noisy): %.2f MiB/sandbox\n",
                (before.mem_available_kb - after.mem_available_kb) / 1024.0 / n);
    if (qemu.processes > 0) {
      std::printf("  QEMU per idle microVM sandbox (%d processes): RSS %.1f MiB, of which anonymous %.1f MiB\n"
                  "    (the rest: file pages shared by every VM, e.g. the kernel image and QEMU's binary)\n",
                  qemu.processes, qemu.rss_kb / 1024.0 / qemu.processes, qemu.anon_kb / 1024.0 / qemu.processes);
    }
  }
  if (!last_error.empty()) std::printf("\nlast error seen: %s\n", last_error.c_str());
  return 0;
}

}  // namespace
}  // namespace sandboxd::bench

int main(int argc, char** argv) {
  sandboxd::bench::Flags f;
  CLI::App app{"bench-lifecycle: sandbox lifecycle latencies (p50/p99) through the WebSocket API"};
  app.add_option("--endpoint", f.endpoint, "server URL (default: $DENO_SANDBOX_ENDPOINT, $SANDBOX_ENDPOINT, http://127.0.0.1:8080)");
  app.add_option("--token", f.token, "access token (default: $DENO_DEPLOY_TOKEN)");
  app.add_option("--iterations", f.iterations, "create -> first `true` / kill samples")->capture_default_str();
  app.add_option("--exec-iterations", f.exec_iterations, "exec round trip samples")->capture_default_str();
  app.add_option("--idle", f.idle, "idle sandboxes for the memory measurement")->capture_default_str();
  app.add_option("--concurrency", f.concurrency, "clients for the creates/s measurement")->capture_default_str();
  app.add_option("--duration", f.duration_s, "seconds for the creates/s measurement")->capture_default_str();
  app.add_option("--bwrap-runs", f.bwrap_runs, "bwrap floor samples")->capture_default_str();
  app.add_option("--isolation", f.isolation,
                 "isolation backend: a label here; bench/lifecycle.sh also runs the daemon with it")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return sandboxd::bench::Run(f);
}

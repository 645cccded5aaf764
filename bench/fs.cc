// bench-fs: filesystem transfer throughput through the C++ client.
//
// Prints MB/s (1 MB = 10^6 bytes) as p50 (and min/max) over --runs runs of:
//   write-stream   WriteFileFrom (contentStreamId, 64 KiB chunks) of --size-mib
//   read-fileRead  DownloadTo (open + sequential fileRead) with 64 KiB reads
//                  (what the SDK's fs.download does) and with 512 KiB reads
//                  (the agent's per-read maximum)
//   read-inline    readFile of a --inline-mib file (one message; the server
//                  caps it at 64 MiB)
//   stdout-stream  a process writing --size-mib to stdout (`head -c`),
//                  consumed by the client: agent link + daemon + WebSocket,
//                  the closest client-side proxy for the agent link itself
// Downloaded bytes are checked against the source on the first run of each
// read variant. Never asserts on wall time.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/client.h"
#include "client/sandbox.h"

namespace {

using sandboxd::client::Client;
using sandboxd::client::ClientOptions;
using sandboxd::client::CreateOptions;
using sandboxd::client::Result;
using sandboxd::client::Sandbox;
using Clock = std::chrono::steady_clock;

struct Row {
  std::string name;
  std::uint64_t bytes = 0;
  std::vector<double> mbps;
  std::string note;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Pseudo-random (incompressible, deterministic) file of `size` bytes.
bool MakeSource(const std::string& path, std::uint64_t size) {
  FILE* f = std::fopen(path.c_str(), "wbe");
  if (!f) return false;
  std::vector<std::uint64_t> buf(1 << 16);
  std::uint64_t x = 0x9E3779B97F4A7C15ull;
  for (std::uint64_t done = 0; done < size;) {
    for (auto& w : buf) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      w = x;
    }
    size_t n = static_cast<size_t>(std::min<std::uint64_t>(size - done, buf.size() * sizeof(std::uint64_t)));
    if (std::fwrite(buf.data(), 1, n, f) != n) {
      std::fclose(f);
      return false;
    }
    done += n;
  }
  return std::fclose(f) == 0;
}

bool SameFiles(const std::string& a, const std::string& b) {
  FILE* fa = std::fopen(a.c_str(), "rbe");
  FILE* fb = std::fopen(b.c_str(), "rbe");
  bool same = fa && fb;
  std::vector<char> ba(1 << 20), bb(1 << 20);
  while (same) {
    size_t na = std::fread(ba.data(), 1, ba.size(), fa);
    size_t nb = std::fread(bb.data(), 1, bb.size(), fb);
    if (na != nb || !std::equal(ba.begin(), ba.begin() + static_cast<std::ptrdiff_t>(na), bb.begin())) same = false;
    if (na == 0) break;
  }
  if (fa) std::fclose(fa);
  if (fb) std::fclose(fb);
  return same;
}

// Times `fn` (which returns the bytes moved) and records MB/s.
bool Measure(Row& row, const std::function<Result<std::uint64_t>()>& fn) {
  auto t0 = Clock::now();
  auto r = fn();
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!r) {
    std::fprintf(stderr, "bench-fs: %s failed: %s\n", row.name.c_str(), r.error().ToString().c_str());
    return false;
  }
  if (*r != row.bytes) {
    std::fprintf(stderr, "bench-fs: %s moved %llu bytes, expected %llu\n", row.name.c_str(),
                 static_cast<unsigned long long>(*r), static_cast<unsigned long long>(row.bytes));
    return false;
  }
  row.mbps.push_back(static_cast<double>(*r) / 1e6 / s);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"filesystem transfer throughput through the C++ client", "bench-fs"};
  std::string endpoint, token, tmp = "/tmp";
  int runs = 5;
  std::uint64_t size_mib = 256, inline_mib = 64;
  app.add_option("--endpoint", endpoint, "server URL (default: environment)");
  app.add_option("--token", token, "token (default: $DENO_DEPLOY_TOKEN)");
  app.add_option("--runs", runs, "runs per measurement (p50 reported)")->capture_default_str();
  app.add_option("--size-mib", size_mib, "size of the streamed file")->capture_default_str();
  app.add_option("--inline-mib", inline_mib, "size of the readFile (inline) file, <= 64")->capture_default_str();
  app.add_option("--tmp", tmp, "local scratch directory")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  ClientOptions co;
  co.endpoint = endpoint;
  co.token = token;
  auto client = Client::Create(co);
  if (!client) {
    std::fprintf(stderr, "bench-fs: %s\n", client.error().ToString().c_str());
    return 1;
  }
  CreateOptions o;
  o.memory_mb = 2048;
  auto sb = Sandbox::Create(*client, o);
  if (!sb) {
    std::fprintf(stderr, "bench-fs: create: %s\n", sb.error().ToString().c_str());
    return 1;
  }
  if (auto probe = sb->Stat("/tmp"); !probe) {
    std::fprintf(stderr, "bench-fs: filesystem methods unavailable: %s\n", probe.error().ToString().c_str());
    return 1;
  }

  const std::uint64_t size = size_mib << 20, inline_size = inline_mib << 20;
  std::string dir = tmp + "/bench-fs-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};
  const std::string src = dir + "/src.bin", small = dir + "/small.bin", back = dir + "/back.bin";
  if (!MakeSource(src, size) || !MakeSource(small, inline_size)) {
    std::fprintf(stderr, "bench-fs: cannot write %s\n", dir.c_str());
    return 1;
  }

  Row write{"write-stream (WriteFileFrom)", size, {}, "contentStreamId, 64 KiB chunks, 1 MiB send window"};
  Row read64{"read-fileRead 64 KiB (DownloadTo)", size, {}, "sequential fileRead, like fs.download"};
  Row read512{"read-fileRead 512 KiB (DownloadTo)", size, {}, "sequential fileRead, agent max per read"};
  Row par4{"read-fileRead 4 handles (DownloadToParallel)", size, {}, "4 handles x (fileSeek + fileRead 64 KiB)"};
  Row inl{"read-inline " + std::to_string(inline_mib) + " MiB (ReadFile)", inline_size, {}, "one base64 message"};
  Row out{"stdout-stream (head -c | client)", size, {}, "agent link + daemon + WS, client side"};
  bool ok = true;
  for (int i = 0; i < runs && ok; ++i) {
    ok = ok && Measure(write, [&]() -> Result<std::uint64_t> {
      int fd = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
      auto r = sb->WriteFileFrom("/tmp/bench.bin", fd);
      ::close(fd);
      return r;
    });
    for (auto [row, chunk] : {std::pair{&read64, size_t{64 << 10}}, std::pair{&read512, size_t{512 << 10}}}) {
      ok = ok && Measure(*row, [&, chunk = chunk, first = i == 0]() -> Result<std::uint64_t> {
        int fd = ::open(first ? back.c_str() : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        auto r = sb->DownloadTo("/tmp/bench.bin", fd, nullptr, chunk);
        ::close(fd);
        return r;
      });
      if (ok && i == 0 && !SameFiles(src, back)) {
        std::fprintf(stderr, "bench-fs: %s: downloaded bytes differ from the source\n", row->name.c_str());
        ok = false;
      }
    }
    ok = ok && Measure(par4, [&]() -> Result<std::uint64_t> {
      // pwrite needs a regular file; /dev/null would do, but verify the bytes.
      int fd = ::open(back.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      auto r = sb->DownloadToParallel("/tmp/bench.bin", fd, 4);
      ::close(fd);
      return r;
    });
    if (ok && i == 0 && !SameFiles(src, back)) {
      std::fprintf(stderr, "bench-fs: %s: downloaded bytes differ from the source\n", par4.name.c_str());
      ok = false;
    }
  }
  if (ok) {
    int fd = ::open(small.c_str(), O_RDONLY | O_CLOEXEC);
    auto w = sb->WriteFileFrom("/tmp/small.bin", fd);
    ::close(fd);
    ok = w.has_value();
    for (int i = 0; i < runs && ok; ++i) {
      ok = Measure(inl, [&]() -> Result<std::uint64_t> {
        auto r = sb->ReadFile("/tmp/small.bin");
        if (!r) return std::unexpected(r.error());
        return r->size();
      });
    }
  }
  for (int i = 0; i < runs && ok; ++i) {
    ok = Measure(out, [&]() -> Result<std::uint64_t> {
      std::uint64_t got = 0;
      sandboxd::client::SpawnOptions so;
      so.stderr_mode = sandboxd::client::Stdio::kNull;
      so.on_stdout = [&got](std::string_view chunk) { got += chunk.size(); };
      auto p = sb->Spawn("head", {"-c", std::to_string(size), "/dev/zero"}, std::move(so));
      if (!p) return std::unexpected(p.error());
      auto st = p->Wait();
      if (!st) return std::unexpected(st.error());
      return got;
    });
  }
  (void)sb->Kill();

  std::printf("bench-fs: C++ client, p50 of %d runs, MB/s (10^6 bytes/s)\n", runs);
  std::printf("%-46s %10s %9s %9s %9s  %s\n", "operation", "size", "p50", "min", "max", "how");
  for (const Row* r : {&write, &read64, &read512, &par4, &inl, &out}) {
    if (r->mbps.empty()) continue;
    std::printf("%-46s %6llu MiB %9.1f %9.1f %9.1f  %s\n", r->name.c_str(),
                static_cast<unsigned long long>(r->bytes >> 20), Percentile(r->mbps, 0.5),
                *std::min_element(r->mbps.begin(), r->mbps.end()),
                *std::max_element(r->mbps.begin(), r->mbps.end()), r->note.c_str());
  }
  std::printf("raw agent-link throughput is not observable from the client alone; it is measured by the agent's\n"
              "own tests. stdout-stream above is the end-to-end upper bound through the link.\n");
  return ok ? 0 : 1;
}

// net_plumbing_bench: p50/p99 of the per-sandbox plumbing operations (root),
// for a namespace sandbox and for a microVM's (a tap in the namespace, the
// link joined to it).
//
//   net_plumbing_bench [iterations=100] [registered=1000]
//
// `registered` sandboxes are added to the firewall's sets first (elements
// only, no links), so that the set-update timings reflect a busy daemon.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "daemon/net/firewall.h"
#include "daemon/net/link.h"
#include "daemon/net/netns.h"
#include "daemon/net/subnet.h"
#include "daemon/net/test_frames.h"
#include "daemon/net/test_netns.h"

namespace sandboxd::net {
namespace {

using Clock = std::chrono::steady_clock;

struct Samples {
  std::string name;
  std::vector<double> us;
  void Print() {
    std::sort(us.begin(), us.end());
    auto at = [&](double q) { return us[std::min(us.size() - 1, size_t(q * us.size()))]; };
    std::printf("%-28s n=%-5zu p50 %9.1f us   p99 %9.1f us   max %9.1f us\n", name.c_str(),
                us.size(), at(0.5), at(0.99), us.back());
  }
};

template <typename F>
void Time(Samples& s, F&& f) {
  const auto start = Clock::now();
  auto st = f();
  s.us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  if (!st) {
    std::fprintf(stderr, "%s: %s\n", s.name.c_str(), st.error().message.c_str());
    std::exit(1);
  }
}

int Main(int argc, char** argv) {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "needs root\n");
    return 2;
  }
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 100;
  const int registered = argc > 2 ? std::atoi(argv[2]) : 1000;
  const std::string prefix = testing::UniqueName("sxb");
  const std::string table = testing::UniqueName("sbxbench_");
  // 10.240.0.0/12 carved into /30s: block i for the timed sandboxes, the
  // preloaded elements use addresses that no link has.
  const uint32_t base = (10u << 24) | (240u << 16);

  auto fw = Firewall::Install(table, 40000, 40001, prefix);
  if (!fw) {
    std::fprintf(stderr, "%s\n", fw.error().message.c_str());
    return 1;
  }
  for (int i = 0; i < registered; ++i) {
    const std::string name = "sxpre" + std::to_string(i);
    if (auto st = (*fw)->AddSandbox(name, base + (1u << 19) + 4 * i + 2, i % 2); !st) {
      std::fprintf(stderr, "%s\n", st.error().message.c_str());
      return 1;
    }
  }

  // One phase per operation, so that the kernel's deferred work from one kind
  // of operation (namespace and link teardown run RCU callbacks and
  // workqueues for tens of ms) does not land in another's figures. A daemon
  // that creates and destroys sandboxes at the same time sees that contention.
  std::vector<UniqueFd> namespaces;
  std::vector<VethConfig> configs;
  for (int i = 0; i < iterations; ++i) {
    auto ns = testing::NewNetns();
    if (!ns) return 1;
    namespaces.push_back(std::move(*ns));
    configs.push_back({.host_ifname = prefix + std::to_string(i),
                       .host_ip = base + 4 * i + 1,
                       .sandbox_ip = base + 4 * i + 2});
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  Samples netns{"RunInNetns (no-op)"}, add{"Firewall::AddSandbox"}, veth{"CreateVeth"},
      outbound{"Firewall::SetOutbound"}, del{"DeleteLink"}, remove{"Firewall::RemoveSandbox"};
  for (int i = 0; i < iterations; ++i) {
    Time(add,
         [&] { return (*fw)->AddSandbox(configs[i].host_ifname, configs[i].sandbox_ip, false); });
    Time(veth, [&] { return CreateVeth(namespaces[i].get(), configs[i]); });
  }
  for (int i = 0; i < iterations; ++i) {
    Time(outbound, [&] { return (*fw)->SetOutbound(configs[i].host_ifname, true); });
    Time(netns, [&] { return RunInNetns(namespaces[i].get(), [] { return Status{}; }); });
  }
  for (int i = 0; i < iterations; ++i) {
    Time(del, [&] { return DeleteLink(configs[i].host_ifname); });
    Time(remove,
         [&] { return (*fw)->RemoveSandbox(configs[i].host_ifname, configs[i].sandbox_ip); });
  }

  // A microVM's: the tap (made by QEMU's child; here by a helper thread in
  // the namespace, so this includes a thread start) and the link joined to it.
  std::vector<UniqueFd> guest_ns, taps;
  std::vector<VethConfig> guest_configs;
  for (int i = 0; i < iterations; ++i) {
    auto ns = testing::NewNetns();
    if (!ns) return 1;
    guest_ns.push_back(std::move(*ns));
    guest_configs.push_back({.host_ifname = prefix + "g" + std::to_string(i),
                             .sandbox_ifname = "uplink",
                             .host_ip = base + 4 * i + 1,
                             .sandbox_ip = base + 4 * i + 2,
                             .guest_tap = "tap0"});
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Samples tap{"tap (open+TUNSETIFF)"}, guest_veth{"CreateVeth (guest tap)"},
      guest_del{"DeleteLink (guest tap)"};
  for (int i = 0; i < iterations; ++i) {
    Time(tap, [&]() -> Status {
      auto t = testing::MakeTap(guest_ns[i].get(), "tap0");
      if (!t) return std::unexpected(t.error());
      taps.push_back(std::move(*t));
      return {};
    });
    Time(guest_veth, [&] { return CreateVeth(guest_ns[i].get(), guest_configs[i]); });
  }
  for (int i = 0; i < iterations; ++i) {
    Time(guest_del, [&] { return DeleteLink(guest_configs[i].host_ifname); });
  }

  std::printf("%d iterations, %d other sandboxes registered\n", iterations, registered);
  for (Samples* s : {&add, &veth, &outbound, &netns, &del, &remove, &tap, &guest_veth, &guest_del}) {
    s->Print();
  }
  return (*fw)->Uninstall() ? 0 : 1;
}

}  // namespace
}  // namespace sandboxd::net

int main(int argc, char** argv) { return sandboxd::net::Main(argc, argv); }

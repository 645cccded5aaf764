#include "daemon/isolation/select_backend.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <string>

namespace sandboxd::isolation {
namespace {

// The reason KVM is unusable, or nothing.
Status KvmWorks(const MicroVmConfig& vm) {
  if (::access("/dev/kvm", F_OK) != 0) return FailMsg("no /dev/kvm");
  for (const auto* f : {&vm.kernel, &vm.initrd, &vm.rootfs_image}) {
    if (::access(f->c_str(), R_OK) != 0) {
      return FailMsg("no VM file " + *f + " (build them with scripts/vm/build-all)");
    }
  }
  return ProbeKvm(vm, kKvmProbeTimeout);
}

}  // namespace

Result<std::unique_ptr<Backend>> MakeBackend(std::string_view isolation,
                                             const NamespacesConfig& namespaces,
                                             const MicroVmConfig& microvm) {
  if (isolation == "namespaces") return MakeNamespacesBackend(namespaces);
  if (isolation != "microvm" && isolation != "auto") {
    return FailMsg("unknown isolation '" + std::string(isolation) +
                   "' (supported: auto, namespaces, microvm)");
  }
  auto kvm = KvmWorks(microvm);
  if (kvm) {
    spdlog::info("isolation {}: a probe VM booted under KVM: microvm with KVM", isolation);
    MicroVmConfig c = microvm;
    c.kvm = true;
    return MakeMicroVmBackend(c);
  }
  if (isolation == "auto") {
    spdlog::info("isolation auto: KVM unusable ({}): namespaces", kvm.error().message);
    return MakeNamespacesBackend(namespaces);
  }
  spdlog::info("isolation microvm: KVM unusable ({}): TCG (software emulation)",
               kvm.error().message);
  MicroVmConfig c = microvm;
  c.kvm = false;
  return MakeMicroVmBackend(c);
}

}  // namespace sandboxd::isolation

#include "daemon/isolation/select_backend.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <string>

namespace sandboxd::isolation {
namespace {

// Whether the microVM backend's files are there (what build-all makes).
Status VmFilesPresent(const MicroVmConfig& vm) {
  for (const auto* f : {&vm.kernel, &vm.initrd, &vm.rootfs_image}) {
    if (f->empty()) return FailMsg("no VM file configured");
    if (::access(f->c_str(), R_OK) != 0) {
      return FailMsg("no VM file " + *f + " (build them with scripts/vm/build-all)");
    }
  }
  return {};
}

// The reason KVM is unusable, or nothing.
Status KvmWorks(const MicroVmConfig& vm) {
  if (::access("/dev/kvm", F_OK) != 0) return FailMsg("no /dev/kvm");
  SBX_TRY(VmFilesPresent(vm));
  return ProbeKvm(vm, kKvmProbeTimeout);
}

}  // namespace

Backend* BackendSet::Find(std::string_view name) const {
  auto it = by_name.find(name);
  return it == by_name.end() ? nullptr : it->second.get();
}

Result<BackendSet> MakeBackends(std::string_view isolation, const NamespacesConfig& namespaces,
                                const MicroVmConfig& microvm) {
  if (isolation != "namespaces" && isolation != "microvm" && isolation != "auto") {
    return FailMsg("unknown isolation '" + std::string(isolation) +
                   "' (supported: auto, namespaces, microvm)");
  }
  BackendSet set;
  auto add = [&set](Result<std::unique_ptr<Backend>> b, const char* name) -> Status {
    if (!b) {
      set.unavailable[name] = b.error().message;
      return Fail(b.error());
    }
    set.by_name[std::string((*b)->Name())] = std::move(*b);
    return {};
  };

  // The microVM backend and its accelerator first: auto's default depends on it.
  bool kvm = false;
  if (isolation != "namespaces") {
    auto works = KvmWorks(microvm);
    kvm = works.has_value();
    if (kvm) {
      spdlog::info("isolation {}: a probe VM booted under KVM: microvm with KVM", isolation);
    } else if (isolation == "auto") {
      spdlog::info("isolation auto: KVM unusable ({}): namespaces", works.error().message);
    } else {
      spdlog::info("isolation microvm: KVM unusable ({}): TCG (software emulation)",
                   works.error().message);
    }
  }
  set.default_name = (isolation == "microvm" || kvm) ? "microvm" : "namespaces";

  if (auto st = add(MakeNamespacesBackend(namespaces), "namespaces"); !st) {
    if (set.default_name == "namespaces") return Fail(st.error());
    spdlog::warn("isolation: the namespaces backend is unavailable: {}", st.error().message);
  }
  if (auto files = VmFilesPresent(microvm); !files) {
    if (set.default_name == "microvm") return Fail(files.error());
    set.unavailable["microvm"] = files.error().message;
  } else {
    MicroVmConfig c = microvm;
    c.kvm = kvm;
    // The default backend prepares what makes its creates fast at once;
    // one held for the odd create does that on first use.
    c.eager = set.default_name == "microvm";
    if (auto st = add(MakeMicroVmBackend(c), "microvm"); !st) {
      if (set.default_name == "microvm") return Fail(st.error());
      spdlog::warn("isolation: the microvm backend is unavailable: {}", st.error().message);
    }
  }
  std::string others;
  for (const auto& [name, b] : set.by_name) {
    if (name != set.default_name) others += (others.empty() ? "" : ", ") + name;
  }
  spdlog::info("isolation: sandboxes get {} unless their create config asks for {}",
               set.default_name, others.empty() ? std::string("(nothing else here)") : others);
  return set;
}

}  // namespace sandboxd::isolation

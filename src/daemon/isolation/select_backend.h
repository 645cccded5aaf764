// `--isolation auto|namespaces|microvm`: the backends a daemon holds, and
// which one a sandbox gets when its create config does not say
// (docs/api.md, "isolation"; docs/microvm.md, "Using it").
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.h"
#include "daemon/isolation/backend.h"
#include "daemon/isolation/microvm/microvm_backend.h"
#include "daemon/isolation/namespaces/namespaces_backend.h"

namespace sandboxd::isolation {

// How long a KVM probe VM may take to reach its agent. Under KVM a boot takes
// a fraction of a second; a host whose KVM cannot boot the kernel either
// fails at once (QEMU aborts) or hangs until this bound (docs/microvm.md).
inline constexpr std::chrono::milliseconds kKvmProbeTimeout{15000};

// Every backend usable here, by Name(), and the default. Backends are
// thread-safe to Start() from several threads; the set itself is built once
// and then only read.
struct BackendSet {
  std::string default_name;
  std::map<std::string, std::unique_ptr<Backend>, std::less<>> by_name;

  // The backend called `name`, or null when this daemon does not have it.
  Backend* Find(std::string_view name) const;
  Backend* Default() const { return Find(default_name); }
  // Why `name` is missing here (for the 400 a create gets), if it is.
  std::map<std::string, std::string, std::less<>> unavailable;
};

// The default, by --isolation:
//   namespaces: the namespaces backend.
//   microvm:    the microVM backend, with KVM if a probe VM boots under KVM
//               (ProbeKvm), else under TCG. Fails if the VM files are missing.
//   auto:       the microVM backend with KVM if a probe VM boots under KVM,
//               else the namespaces backend (TCG is never chosen by itself:
//               it is several times slower to start and run).
// Besides the default the set holds every other backend that is usable, for
// creates that ask for it: namespaces whenever it can be made; microvm when
// its kernel, initramfs and root image are there (under KVM only when the
// probe of auto/microvm booted; with --isolation namespaces no probe runs and
// it is TCG). Logs what was chosen and why.
Result<BackendSet> MakeBackends(std::string_view isolation, const NamespacesConfig& namespaces,
                                const MicroVmConfig& microvm);

}  // namespace sandboxd::isolation

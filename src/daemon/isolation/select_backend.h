// `--isolation auto|namespaces|microvm`: which backend a daemon runs.
#pragma once

#include <chrono>
#include <memory>
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

// namespaces: the namespaces backend.
// microvm:    the microVM backend, with KVM if a probe VM boots under KVM
//             (ProbeKvm), else under TCG. Fails if the VM files are missing.
// auto:       the microVM backend with KVM if a probe VM boots under KVM,
//             else the namespaces backend (TCG is never chosen by itself:
//             it is several times slower to start and run).
// Logs what was chosen and why.
Result<std::unique_ptr<Backend>> MakeBackend(std::string_view isolation,
                                             const NamespacesConfig& namespaces,
                                             const MicroVmConfig& microvm);

}  // namespace sandboxd::isolation

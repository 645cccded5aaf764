// sandbox-agent as the init of a microVM (docs/microvm.md, "What the agent
// must do as VM init"; tests/vm/test_init.c is the reference walk-through).
//
// In a VM the agent is /init of the initramfs. It makes fds 0-2 valid, mounts
// /dev /proc /sys, loads the modules listed in modules.load, opens the
// virtio-serial port named by the host, mounts the read-only root image with
// an overlay whose upper layer lives on the scratch disk, switches into it,
// finishes the sandbox's environment (devpts, /dev/shm, /dev/fd links,
// hostname, lo) and hardens it as the namespaces backend does its sandboxes
// (a pids limit, no user namespaces, no_new_privs), and then serves the agent
// link on the port exactly as `--link-fd` does on a socketpair. When the link closes it powers the
// VM off, which ends QEMU.
//
// The boot steps are written against a few directories given as parameters
// (sysfs classes, the initramfs tree) so that the parts with logic in them
// can be tested on an ordinary host; Boot() itself only runs in a guest.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/request.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/vm_boot.h"

namespace sandboxd::agent::vm {

// What the host tells the init, on the kernel command line after "--"
// (the kernel hands those words to /init as argv). The same for every
// sandbox: per-sandbox settings come later, in the boot handshake
// (common/vm_boot.h), so that a snapshot taken before it fits every sandbox.
//   --vm                      VM mode (also implied as PID 1 without --link-fd)
//   --port=NAME               the virtio-serial port carrying the link
//   --root-serial=ID          virtio-blk serial of the read-only root image
//   --root-fs=erofs|ext4      its filesystem
//   --scratch-serial=ID       virtio-blk serial of the writable scratch disk
// Stage 2 (the init re-executes itself after the handshake, see Main) adds:
//   --port-fd=N               the port, already open as fd N
//   --hostname=NAME
//   --pids-max=N              tasks in the sandbox's cgroup (the agent's included)
// Every value has a default matching the microVM backend.
struct Options {
  std::string port_name = "sandbox.agent";
  std::string root_serial = "root";
  std::string root_fstype = "erofs";
  std::string scratch_serial = "scratch";
  std::string hostname = "sandbox";
  uint32_t pids_max = 1024;
  int port_fd = -1;  // >= 0: stage 2
};

// The guest's cgroup (v2) holding the agent and everything it starts: the
// pids limit, and the OOM kill count for exit events (Agent::SetOomKillCounter).
inline constexpr const char* kSandboxCgroup = "/sys/fs/cgroup/sandbox";

// True when the agent should boot the VM: `--vm` is among the arguments, or
// the process is PID 1 and no link was named (--link-fd / --link-path).
bool WantsVmMode(int argc, char** argv, pid_t pid);

// Parses the arguments of VM mode (see Options). Unknown words are errors
// except the ones the kernel adds on its own (none with our command line, but
// a word without "--" or "=" is ignored rather than fatal: a stray kernel
// parameter must not keep the sandbox from booting).
Result<Options> ParseArgs(int argc, char** argv);

// The module file names of a modules.load manifest, in order: one a line,
// blank lines and '#' comments skipped, surrounding blanks trimmed. A name
// with a '/' or one that is "." / ".." is an error: the manifest names
// files beside it.
Result<std::vector<std::string>> ParseModulesLoad(std::string_view text);

// In `class_dir` (normally /sys/class/virtio-ports), the entry whose `name`
// file holds `port_name` (e.g. "vport2p1"); ENOENT when there is none yet.
Result<std::string> FindPortByName(const std::string& class_dir, std::string_view port_name);

// In `block_dir` (normally /sys/block), the vd* disk whose `serial` file holds
// `serial` (e.g. "vdb"); ENOENT when there is none yet.
Result<std::string> FindDiskBySerial(const std::string& block_dir, std::string_view serial);

// Deletes everything below the directory `dir_fd` that lives on the
// directory's own filesystem, without crossing into mounts or following
// symlinks (what busybox switch_root does to the initramfs to give its memory
// back). Mount points and their parents stay. Best effort: returns how many
// entries could not be removed.
size_t RemoveTreeOnSameDevice(int dir_fd);

// A hostname the kernel accepts (1-64 bytes) made of letters, digits, '-'
// and '.'.
bool ValidHostname(std::string_view name);

// Stage 1 of the boot: /dev, /proc, /sys, the modules, and the agent port,
// open, with the host end connected. Touches no disk's filesystem. Only
// meaningful as PID 1 of a guest.
Result<UniqueFd> BootStage1(const Options& options);

// The handshake on the port: writes awaiting-config, blocks for the host's
// config (the VM may be snapshotted meanwhile and resumed any number of
// times), then mixes the host's entropy into the kernel's input pool
// (RNDADDENTROPY) and reseeds the CRNG (RNDRESEEDCRNG), and sets the clock.
Result<vmboot::BootConfig> AwaitConfig(int port_fd);

// The arguments of stage 2 (see Options), argv[0] included.
std::vector<std::string> Stage2Args(const Options& options, const vmboot::BootConfig& config,
                                    int port_fd);

// Stage 2: the root filesystem (read-only image + scratch overlay), the
// switch into it, the sandbox's environment and hardening.
Status BootStage2(const Options& options);

// The agent's `configureNetwork` op (docs/agent-link.md): gives the guest's
// NIC (a virtio-net device on the host's tap) the sandbox address, brings it
// up and routes everything via the gateway (the host end of the sandbox's
// link), replacing an earlier default route, and starts the loopback relay
// for the ingress (common/loopback_relay.h). ioctls on an AF_INET socket: no
// netlink library in the static agent. Only meaningful in a guest.
Status ConfigureInterface(const NetConfigRequest& request);

// sync(), then ACPI power-off (QEMU exits 0); never returns.
[[noreturn]] void PowerOff();

// The whole of VM mode. Stage 1 (as the kernel's /init): BootStage1,
// AwaitConfig, then execve of /init itself with Stage2Args, so that the
// process that serves the sandbox starts after the reseed, with fresh
// AT_RANDOM (stack protector, pointer guard) and a fresh stack/heap/mmap
// layout instead of the one every VM restored from a snapshot shares. Stage 2:
// BootStage2, serve the link with Agent, PowerOff. Every failure ends in
// PowerOff too, after a line on /dev/kmsg (visible on a debug console)
// naming the step.
[[noreturn]] void Main(int argc, char** argv);

}  // namespace sandboxd::agent::vm

// The namespaces backend: every sandbox is a process tree in its own pid,
// mount, net, uts, ipc, user and cgroup namespaces, on an overlay of the base
// image, under cgroup limits, no_new_privs and a seccomp filter. See
// namespaces_backend.cc for the start sequence and why it is ordered so.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "daemon/isolation/backend.h"

namespace sandboxd::isolation {

struct NamespacesConfig {
  // The base image (scripts/build-image output), mounted read-only as the
  // overlay's lower layer. Owned by uid_base; never written.
  std::string rootfs_dir;
  // Per-sandbox work directories go to <state_dir>/<id>/{upper,work,merged}.
  // Must be on a filesystem that supports overlayfs upper layers.
  std::string state_dir;
  // Host path of the static sandbox-agent. It is opened once, when the backend
  // is made, and exec'd through that fd (execveat AT_EMPTY_PATH) as PID 1, so
  // it never has to be copied or bind-mounted into the image.
  std::string agent_path;
  // argv of PID 1. The agent finds its end of the link at fd 3.
  std::vector<std::string> init_argv = {"sandbox-agent", "--link-fd", "3"};
  // If non-empty, PID 1 is this path inside the image instead of the agent
  // (tests run /bin/bash this way); agent_path is then not needed.
  std::string init_path_in_image;
  // Environment of PID 1.
  std::vector<std::string> init_env = {
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"};
  // Root inside the sandbox is host uid/gid uid_base; uid_count ids are mapped.
  uint32_t uid_base = 100000;
  uint32_t uid_count = 65536;
  // Name of the parent cgroup (in every hierarchy) of all sandbox cgroups.
  std::string cgroup_parent = "sandboxd";
  // Where cgroups are mounted. If it holds cgroup.controllers it is used as
  // cgroup v2; otherwise the v1 hierarchies are found in /proc/self/mountinfo.
  std::string cgroup_root = "/sys/fs/cgroup";
  // How long Start() waits for the child to reach exec.
  std::chrono::milliseconds start_timeout{5000};
};

// Checks the configuration, detects the cgroup layout (v2 or v1/hybrid),
// compiles the seccomp filter and opens the agent binary. Requires root.
Result<std::unique_ptr<Backend>> MakeNamespacesBackend(const NamespacesConfig& config);

}  // namespace sandboxd::isolation

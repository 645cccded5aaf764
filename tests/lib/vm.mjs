// Host-side views of microVM sandboxes for the tests in tests/vm: the guest
// kernel's release, a sandbox's cgroup directories and processes, QEMU's pid.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { SANDBOXD_BIN } from "./harness.mjs";

/** The kernel release build-all put beside the daemon's binary (../image/vm/kernel.env). */
export function guestRelease() {
  const env = readFileSync(join(dirname(SANDBOXD_BIN), "..", "image", "vm", "kernel.env"), "utf8");
  return /^KERNEL_RELEASE=(.*)$/m.exec(env)[1];
}

/** Sandbox `id`'s cgroup directories (v2, or one per v1 hierarchy), under any daemon's parent. */
export function cgroupDirs(id) {
  const out = [];
  for (const h of ["", "memory", "cpu", "pids"]) {
    const root = join("/sys/fs/cgroup", h);
    let parents = [];
    try {
      parents = readdirSync(root).filter((n) => n.startsWith("sandboxd-"));
    } catch {}
    for (const p of parents) if (existsSync(join(root, p, id))) out.push(join(root, p, id));
  }
  return out;
}

/** The processes in sandbox `id`'s cgroups. */
export function cgroupPids(id) {
  const pids = [];
  for (const dir of cgroupDirs(id)) {
    try {
      pids.push(...readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number));
    } catch {}
  }
  return [...new Set(pids)];
}

/** QEMU's pid: the one task in a microVM sandbox's cgroup (null if none). */
export function qemuPid(id) {
  return cgroupPids(id)[0] ?? null;
}

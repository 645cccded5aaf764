// The microVM backend end to end, through the official SDK, under TCG (KVM is
// never assumed): a sandbox is a VM (the guest's kernel, none of the host's
// processes, devices or interfaces, its own NIC on the sandbox's link), runs
// commands, keeps files, and leaves nothing on the host after kill() or after
// its QEMU was SIGKILLed; with --net off it has no NIC at all.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { release } from "node:os";
import { dirname, join } from "node:path";
import { useDaemon, dtest, waitFor } from "../lib/harness.mjs";
import { cgroupDirs, guestRelease, qemuPid } from "../lib/vm.mjs";

const d = useDaemon({ orgs: ["a"], extraArgs: ["--isolation", "microvm"] });
const off = useDaemon({ orgs: ["a"], extraArgs: ["--isolation", "microvm", "--net", "off", "--ingress-listen", "127.0.0.1:0"] });

/** The links in QEMU's network namespace (its tap and the sandbox's veth end). */
function qemuLinks(pid) {
  return execFileSync("nsenter", [`--net=/proc/${pid}/ns/net`, "ip", "-o", "link", "show"], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.split(":")[1]?.trim().split("@")[0])
    .filter(Boolean)
    .sort();
}
const BOOT = { timeout: 180_000 }; // a TCG boot takes seconds, more on a loaded host

function alive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** Waits until nothing of sandbox `id` (QEMU `pid`) is left on the host. */
async function expectNothingLeft(id, pid) {
  const stateDir = join(d.dataDir, "sandboxes", id);
  await waitFor(() => !alive(pid) && !existsSync(stateDir) && cgroupDirs(id).length === 0, {
    timeoutMs: 20_000,
    what: `QEMU ${pid}, ${stateDir} and the cgroups of ${id} to be gone`,
  });
}

let sb;
dtest(
  d,
  "a microvm sandbox is a VM: the guest's kernel, no host processes, devices or interfaces",
  async () => {
    sb = await d.create("a", { memory: "1024MiB" });
    const pid = qemuPid(sb.id);
    assert.ok(pid, "QEMU runs in the sandbox's cgroup");
    assert.match(readFileSync(`/proc/${pid}/cmdline`, "utf8"), /qemu-system-x86_64\0-M\0microvm/);

    const kernel = (await sb.sh`uname -r`.text()).trim();
    assert.equal(kernel, guestRelease());
    assert.notEqual(kernel, release(), "the host's kernel would mean no VM");

    // PID 1 is the agent as /init; the processes are the guest's own (no
    // sandboxd, no node of this test); the RAM is the memory option.
    assert.match(await sb.sh`xargs -0 echo </proc/1/cmdline`.text(), /^\/init --vm /);
    const comms = await sb.sh`cat /proc/[0-9]*/comm | sort -u`.text();
    for (const host of ["sandboxd", "node", "systemd"]) {
      assert.ok(!comms.split("\n").includes(host), `${host} is visible in the guest:\n${comms}`);
    }
    const memMb = Number((await sb.sh`awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo`.text()).trim());
    assert.ok(memMb > 800 && memMb <= 1024, `MemTotal ${memMb} MB for memory 1024MiB`);

    // Devices and interfaces: virtio disks named by the backend, none of the
    // host's (no /dev/kvm); lo and the guest's own NIC, which holds the
    // sandbox's address (QEMU's namespace has the tap and the veth end).
    const serials = await sb.sh`for f in /sys/block/vd*/serial; do cat $f; echo; done | sort | tr -d '\n'`.text();
    assert.equal(serials, "rootscratch");
    assert.equal(await sb.sh`test -e /dev/kvm && echo yes || echo no`.text(), "no\n");
    assert.equal(await sb.sh`ls /sys/class/net`.text(), "eth0\nlo\n");
    const { address } = await (await d.fetch(`/api/v3/sandboxes/${sb.id}/network`)).json();
    const eth0 = await sb.sh`python3 -c 'import socket,fcntl,struct; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); print(socket.inet_ntoa(fcntl.ioctl(s, 0x8915, struct.pack("256s", b"eth0"))[20:24]))'`.text();
    assert.equal(eth0.trim(), address);
    assert.deepEqual(qemuLinks(pid), ["lo", "tap0", "uplink"]);
  },
  BOOT,
);

dtest(d, "runs commands and keeps files, through the shell and the fs API", async () => {
  assert.equal(await sb.sh`echo hello; id -un`.text(), "hello\napp\n");
  await sb.fs.writeTextFile("/home/app/note.txt", "written from the host\n");
  assert.equal(await sb.sh`cat /home/app/note.txt`.text(), "written from the host\n");
  await sb.sh`echo from the guest > /tmp/g.txt`;
  assert.equal(await sb.fs.readTextFile("/tmp/g.txt"), "from the guest\n");
  const out = await sb.sh`python3 -c 'import json; print(json.dumps({"ok": 1}))'`.text();
  assert.equal(out, '{"ok": 1}\n');
});

dtest(
  d,
  "kill() leaves no QEMU, state dir, disk image or cgroup",
  async () => {
    const id = sb.id;
    const pid = qemuPid(id);
    assert.ok(alive(pid));
    assert.ok(existsSync(join(d.dataDir, "sandboxes", id, "scratch.img")));
    const netns = readlinkSync(`/proc/${pid}/ns/net`);
    const { address } = await (await d.fetch(`/api/v3/sandboxes/${id}/network`)).json();
    await sb.kill();
    await expectNothingLeft(id, pid);
    // Its network namespace (tap, veth end) is held by no process any more,
    // and the host end of its link is gone with it.
    const holders = readdirSync("/proc").filter((p) => /^\d+$/.test(p)).filter((p) => {
      try {
        return readlinkSync(`/proc/${p}/ns/net`) === netns;
      } catch {
        return false;
      }
    });
    assert.deepEqual(holders, []);
    // (The link goes in the background, after QEMU.)
    const gateway = new RegExp(`inet ${address.replace(/\.(\d+)$/, (_, n) => `.${Number(n) - 1}`).replaceAll(".", "\\.")}/`);
    await waitFor(() => !gateway.test(execFileSync("ip", ["-o", "-4", "addr", "show"], { encoding: "utf8" })), {
      timeoutMs: 10_000,
      what: "the host end of the sandbox's link to go",
    });
  },
  BOOT,
);

dtest(
  d,
  "a QEMU killed from outside ends the sandbox and leaves nothing",
  async () => {
    const other = await d.create("a");
    const pid = qemuPid(other.id);
    assert.ok(alive(pid));
    process.kill(pid, "SIGKILL");
    // The agent link closes with QEMU: the daemon stops the sandbox and cleans up.
    await d.waitStatus(other.id, "stopped", { timeoutMs: 20_000 });
    await expectNothingLeft(other.id, pid);
    await assert.rejects(other.sh`true`.text());
  },
  BOOT,
);

dtest(
  off,
  "with --net off a microVM has no NIC and no tap, and cannot be exposed",
  async () => {
    const box = await off.create("a");
    assert.equal(await box.sh`ls /sys/class/net`.text(), "lo\n");
    assert.deepEqual(qemuLinks(qemuPid(box.id)), ["lo"]);
    const r = await off.fetch(`/api/v3/sandbox/${box.id}/expose/http`, { method: "POST", body: JSON.stringify({ port: 8000 }) });
    assert.equal(r.status, 501);
    assert.equal((await r.json()).code, "INGRESS_UNSUPPORTED");
    await box.kill();
  },
  BOOT,
);

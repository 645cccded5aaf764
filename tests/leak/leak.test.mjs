// Leak check, run alone after the other suites: a daemon creates session and
// timed sandboxes, some are killed/closed and some are left running when the
// daemon gets SIGTERM. Afterwards nothing of it may remain on the machine:
// processes, mounts, cgroups, network namespaces, veths, per-sandbox state
// dirs, harness temp dirs. And while the daemon still runs, it holds nothing
// of the sandbox it killed (no fd of its namespaces: a microVM's tap and veth
// end live in QEMU's network namespace, invisible from the host).
//
// Other daemons (other engineers' runs) may share this machine, so every
// check is scoped: to pids that descended from our daemon, to names that
// contain our sandbox ids or our data dir, or to a before/after difference.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, readlinkSync, realpathSync, existsSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Daemon, TMP_PREFIX, mountPoints, waitFor, withTimeout } from "../lib/harness.mjs";

function procs() {
  const out = new Map();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const r = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, r);
      const f = stat.slice(r + 2).split(" ");
      out.set(Number(e), { pid: Number(e), comm, ppid: Number(f[1]), start: f[19] });
    } catch {}
  }
  return out;
}

function descendants(root, table = procs()) {
  const kids = new Map();
  for (const p of table.values()) {
    if (!kids.has(p.ppid)) kids.set(p.ppid, []);
    kids.get(p.ppid).push(p);
  }
  const res = [];
  const stack = [root];
  while (stack.length) {
    for (const k of kids.get(stack.pop()) ?? []) {
      res.push(k);
      stack.push(k.pid);
    }
  }
  return res;
}

const sh = (cmd, args) => {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return "";
  }
};
const netnsNames = () => sh("ip", ["netns", "list"]).split("\n").map((l) => l.split(" ")[0]).filter(Boolean);
const nftTables = () => sh("nft", ["list", "tables"]).split("\n").map((l) => l.trim()).filter(Boolean);
const links = () => sh("ip", ["-o", "link", "show"]).split("\n").map((l) => l.split(":")[1]?.trim().split("@")[0]).filter(Boolean);

/**
 * cgroup parents of sandboxd daemons and the dirs below them, in every
 * hierarchy: v1 /sys/fs/cgroup/<ctrl>/sandboxd[-<hash>], v2
 * /sys/fs/cgroup/sandboxd[-<hash>]. Since 8f1997b each daemon uses its own
 * parent "sandboxd-" + first 12 hex of sha256(canonical data dir).
 */
function sandboxdCgroups() {
  const root = "/sys/fs/cgroup";
  const isParent = (n) => /^sandboxd(-[0-9a-f]{12})?$/.test(n);
  const parents = [];
  const scan = (dir) => {
    try {
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory() && isParent(e.name)) parents.push(join(dir, e.name));
    } catch {}
  };
  scan(root);
  for (const c of readdirSync(root)) if (!isParent(c)) scan(join(root, c));
  const dirs = [];
  const walk = (p, depth) => {
    if (depth > 4) return;
    for (const e of readdirSync(p, { withFileTypes: true })) {
      if (e.isDirectory()) {
        dirs.push(join(p, e.name));
        walk(join(p, e.name), depth + 1);
      }
    }
  };
  for (const p of parents) {
    try {
      walk(p, 0);
    } catch {}
  }
  return { parents, dirs };
}

/**
 * "pid:ns" / "pid:fdN" of the processes `pids` (default: all; then only their
 * own namespaces, since other daemons on the host hold fds of theirs) that
 * hold one of `namespaces` ("net:[…]" links).
 */
function holdersOf(namespaces, pids = null) {
  const out = [];
  for (const pid of pids ?? procs().keys()) {
    for (const ns of ["mnt", "net", "pid", "user", "ipc", "uts"]) {
      try {
        if (namespaces.has(readlinkSync(`/proc/${pid}/ns/${ns}`))) out.push(`${pid}:${ns}`);
      } catch {}
    }
    let fds = [];
    try {
      if (pids) fds = readdirSync(`/proc/${pid}/fd`);
    } catch {}
    for (const fd of fds) {
      try {
        if (namespaces.has(readlinkSync(`/proc/${pid}/fd/${fd}`))) out.push(`${pid}:fd${fd}`);
      } catch {}
    }
  }
  return out;
}

/** The agent (namespaces backend) or QEMU (microvm: "qemu-system-x86", comm is 15 chars). */
const isSandboxProcess = (p) => p.comm === "sandbox-agent" || p.comm.startsWith("qemu-system");

function walkTree(dir, out = [], depth = 0) {
  if (depth > 6) return out;
  let ents = [];
  try {
    ents = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of ents) {
    const p = join(dir, e.name);
    out.push(p);
    if (e.isDirectory()) walkTree(p, out, depth + 1);
  }
  return out;
}

test("no leftovers after a daemon with sandboxes is stopped", { timeout: 180_000 }, async () => {
  const baseline = {
    netns: new Set(netnsNames()),
    links: new Set(links()),
  };
  const d = new Daemon();
  await d.start({ orgs: ["a"] });
  const ids = [];
  const seen = new Map(); // pid -> {comm,start} of every descendant of our daemon
  const hostNs = Object.fromEntries(["mnt", "net", "pid", "user", "ipc", "uts"].map((n) => [n, readlinkSync(`/proc/self/ns/${n}`)]));
  const sandboxNs = new Set();
  const nsOf = new Map(); // sandbox id -> its namespaces
  const baseAgents = new Set([...procs().values()].filter((p) => p.comm === "sandbox-agent").map((p) => p.pid));
  // Our processes: descendants of the daemon, plus agents that appeared since
  // the baseline (in case the daemon double-forks them away).
  const realDataDir = realpathSync(d.dataDir);
  let sawOurCgroups = false;
  let sawOurTable = false;
  const snap = () => {
    const ours = `table inet sandboxd_${createHash("sha256").update(realDataDir).digest("hex").slice(0, 6)}`;
    if (nftTables().includes(ours)) sawOurTable = true;
    if (sandboxdCgroups().dirs.some((p) => ids.some((id) => p.includes(id)))) sawOurCgroups = true;
    const table = procs();
    for (const p of descendants(d.proc.pid, table)) seen.set(p.pid, p);
    for (const p of table.values()) if (p.comm === "sandbox-agent" && !baseAgents.has(p.pid)) seen.set(p.pid, p);
    // The sandboxes' namespaces (mounts of the namespaces backend live only in
    // their private mount namespace, invisible in the host's /proc/mounts;
    // a microVM's QEMU has a network namespace of its own with the guest's
    // tap and the sandbox's veth end in it).
    for (const p of seen.values()) {
      if (!isSandboxProcess(p)) continue;
      let cg = "";
      try {
        cg = readFileSync(`/proc/${p.pid}/cgroup`, "utf8");
      } catch {}
      const id = ids.find((i) => cg.includes(i));
      for (const ns of ["mnt", "net", "pid", "user", "ipc", "uts"]) {
        try {
          const link = readlinkSync(`/proc/${p.pid}/ns/${ns}`);
          if (link === hostNs[ns]) continue;
          sandboxNs.add(link);
          if (id) {
            if (!nsOf.has(id)) nsOf.set(id, new Set());
            nsOf.get(id).add(link);
          }
        } catch {}
      }
    }
  };
  let stopRes;
  let dataTree = [];
  let setupFailed = true;
  try {
    // 1) session sandbox, closed
    const s1 = await d.create("a");
    ids.push(s1.id);
    await s1.spawn("sleep", { args: ["100"], stdout: "null", stderr: "null" });
    snap();
    await s1.close();
    // 2) timed sandbox with outbound access and a secret (proxy state, its CA), killed
    const s2 = await d.create("a", {
      timeout: "1m",
      allowNet: ["example.test"],
      secrets: { K: { hosts: ["api.example.test"], value: "leak-test-value" } },
    });
    ids.push(s2.id);
    await s2.sh`echo data > "$HOME/x"`.text();
    snap();
    await withTimeout(s2.kill(), 15_000, "kill()");
    // While the daemon still runs: it holds no fd of the killed sandbox's
    // namespaces (a kept network namespace keeps its links: a microVM's tap
    // and veth end, invisible from the host), and no process of its own is
    // in them. Checked before another sandbox exists: namespace inode
    // numbers are recycled.
    assert.ok(nsOf.get(s2.id)?.size, "test defect: no namespaces recorded for the killed sandbox");
    await d.waitStatus(s2.id, "stopped", { timeoutMs: 10_000 });
    const ourHolders = () => holdersOf(nsOf.get(s2.id), [d.proc.pid, ...descendants(d.proc.pid).map((p) => p.pid)]);
    await waitFor(() => ourHolders().length === 0, { timeoutMs: 10_000, what: "the killed sandbox's namespaces to be released" }).catch(() =>
      assert.fail(`the daemon still holds namespaces of the sandbox it killed: ${ourHolders().join(", ")}`),
    );
    // 3) timed sandbox, closed and left running (the daemon's SIGTERM must end it)
    const s3 = await d.create("a", { timeout: "1m" });
    ids.push(s3.id);
    await s3.spawn("sleep", { args: ["100"], stdout: "null", stderr: "null" });
    snap();
    await s3.close();
    // 4) session sandbox still connected when the daemon stops
    const s4 = await d.create("a");
    ids.push(s4.id);
    await s4.spawn("sleep", { args: ["100"], stdout: "null", stderr: "null" });
    snap();
    await d.waitStatus(s1.id, "stopped", { timeoutMs: 10_000 });
    await d.waitStatus(s2.id, "stopped", { timeoutMs: 10_000 });
    assert.equal(await d.statusOf(s3.id), "running");
    snap();
    assert.ok(seen.size > 0, "expected to see the daemon's child processes (agents) while sandboxes ran");
    setupFailed = false;
  } finally {
    stopRes = await d.stop();
    await d.closeTracked();
    dataTree = walkTree(d.dataDir);
    if (!stopRes || setupFailed) d.cleanupDataDir();
  }
  const problems = [];
  if (stopRes.forced) problems.push("daemon did not exit within 20 s of SIGTERM (SIGKILLed)");
  if (stopRes.code !== 0 && !stopRes.forced) problems.push(`daemon exit status after SIGTERM: code ${stopRes.code}, signal ${stopRes.signal}`);

  // Processes: give the kernel a moment to reap, but bounded.
  const leftover = () => {
    const now = procs();
    return [...seen.values()].filter((p) => now.get(p.pid)?.start === p.start);
  };
  await waitFor(() => leftover().length === 0, { timeoutMs: 5_000, what: "daemon children to exit" }).catch(() => {});
  const lp = leftover();
  if (lp.length) problems.push(`processes of the stopped daemon still alive: ${lp.map((p) => `${p.pid}(${p.comm})`).join(", ")}`);
  // Orphaned agents of ours would be re-parented away from any sandboxd; list agents not owned by a live sandboxd.
  const now = procs();
  const liveDaemons = [...now.values()].filter((p) => p.comm === "sandboxd").map((p) => p.pid);
  const owned = new Set(liveDaemons.flatMap((pid) => descendants(pid, now).map((p) => p.pid)));
  const orphanAgents = [...now.values()].filter((p) => p.comm === "sandbox-agent" && !owned.has(p.pid));
  if (orphanAgents.length) problems.push(`orphaned sandbox-agent processes: ${orphanAgents.map((p) => p.pid).join(", ")}`);

  // Namespaces of our sandboxes still held by any process on the host.
  const sawAgents = [...seen.values()].some(isSandboxProcess);
  if (sawAgents && sandboxNs.size === 0) problems.push("test defect: sandboxes ran but no sandbox namespaces were recorded");
  const holders = holdersOf(sandboxNs);
  if (holders.length) problems.push(`sandbox namespaces still in use by host processes: ${holders.slice(0, 20).join(", ")}`);

  // Mounts: anything under our data dir or naming one of our sandboxes.
  const mounts = mountPoints().filter((m) => m.startsWith(d.dataDir) || ids.some((id) => m.includes(id)));
  if (mounts.length) problems.push(`mounts left: ${mounts.join(", ")}`);
  const procMounts = readFileSync("/proc/mounts", "utf8").split("\n").filter((l) => l.includes(d.dataDir) || ids.some((id) => l.includes(id)));
  if (procMounts.length) problems.push(`/proc/mounts entries left: ${procMounts.join(" | ")}`);

  // cgroups: nothing naming our ids anywhere, and the daemon removes its own
  // (then empty) parent group when it stops.
  const ourParent = "sandboxd-" + createHash("sha256").update(realDataDir).digest("hex").slice(0, 12);
  const cg = sandboxdCgroups();
  const ourParents = cg.parents.filter((p) => p.endsWith("/" + ourParent));
  const leftCg = cg.dirs.filter((p) => ids.some((id) => p.includes(id)) || ourParents.some((op) => p.startsWith(op + "/")));
  if (leftCg.length) problems.push(`cgroup dirs left: ${leftCg.join(", ")}`);
  if (ourParents.length) problems.push(`cgroup parent of the stopped daemon left: ${ourParents.join(", ")}`);
  for (const p of ourParents) {
    try {
      const procsIn = readFileSync(join(p, "cgroup.procs"), "utf8").trim();
      if (procsIn) problems.push(`processes still in ${p}: ${procsIn.replace(/\n/g, " ")}`);
    } catch {}
  }
  if (sawAgents && !sawOurCgroups) problems.push(`test defect: never saw a cgroup of our sandboxes under ${ourParent} (naming changed?)`);

  // Network namespaces and links.
  const ns = netnsNames().filter((n) => !baseline.netns.has(n) || ids.some((id) => n.includes(id)));
  if (ns.length) problems.push(`network namespaces left: ${ns.join(", ")}`);
  // Sandbox links are named sx<tag><n> with the daemon's tag: another
  // daemon's (or a test upstream's sbxu*) on a shared host is not ours.
  const ourTag = createHash("sha256").update(realDataDir).digest("hex").slice(0, 6);
  const ln = links().filter(
    (n) => !baseline.links.has(n) && (n.startsWith(`sx${ourTag}`) || !/^(sx[0-9a-f]{6}|sbxu)/.test(n)),
  );
  if (ln.length) problems.push(`network links left: ${ln.join(", ")}`);
  // Our daemon's table (named by a hash of its data dir, like its cgroup
  // parent); other daemons on the host may come and go meanwhile.
  const ourTable = `table inet sandboxd_${createHash("sha256").update(realDataDir).digest("hex").slice(0, 6)}`;
  if (!sawOurTable) problems.push(`test defect: never saw our firewall table ${ourTable} (naming changed?)`);
  if (nftTables().includes(ourTable)) problems.push(`nftables table left: ${ourTable}`);

  // Per-sandbox state under the data dir (whatever layout the daemon uses: any path naming a sandbox id).
  const stateLeft = dataTree.filter((p) => ids.some((id) => p.includes(id)));
  if (stateLeft.length) problems.push(`per-sandbox paths left under the data dir: ${stateLeft.slice(0, 20).join(", ")}`);
  // The namespaces backend keeps <data-dir>/sandboxes/<id>/{upper,work,merged}: the parent must end up empty.
  const stateDir = join(d.dataDir, "sandboxes");
  if (existsSync(stateDir)) {
    const entries = readdirSync(stateDir);
    if (entries.length) problems.push(`${stateDir} not empty after stop: ${entries.join(", ")}`);
  }

  // Cleanup of this test's data dir must be possible (no busy mounts) ...
  const left = d.cleanupDataDir();
  if (left.length) problems.push(`had to lazily unmount ${left.length} mounts to remove the data dir`);
  if (existsSync(d.dataDir)) problems.push(`data dir ${d.dataDir} could not be removed`);

  // ... and the earlier suites' harness dirs must be gone (owners no longer
  // running). Only dirs of this run (tests/run-node-tests.sh exports its start
  // time) count, so a stale dir of an aborted older run does not fail us forever.
  const runStart = Number(process.env.SBXD_TEST_RUN_START ?? 0);
  for (const e of readdirSync(tmpdir())) {
    if (!e.startsWith(TMP_PREFIX)) continue;
    const p = join(tmpdir(), e);
    let owner = null;
    let started = Date.now();
    try {
      ({ pid: owner, started } = JSON.parse(readFileSync(join(p, ".harness-owner"), "utf8")));
    } catch {
      started = statSync(p).mtimeMs;
    }
    if (started < runStart) continue;
    const alive = owner !== null && existsSync(`/proc/${owner}`);
    if (!alive && statSync(p).isDirectory()) problems.push(`leftover harness temp dir ${p}`);
  }

  if (problems.length) {
    console.error(d.logTail(80));
    console.error(`data dir tree at stop:\n${dataTree.slice(0, 60).join("\n")}`);
  }
  assert.deepEqual(problems, [], `leaks after stopping sandboxd:\n- ${problems.join("\n- ")}`);
});

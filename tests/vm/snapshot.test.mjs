// Snapshot restore (docs/microvm.md, "Snapshot restore"), through the
// official SDK under TCG: sandboxes of the default size resume from one
// snapshot of a VM stopped at its boot handshake, and yet share no
// randomness, ids or clock with each other; the snapshot lives in the
// daemon's data dir only, root's; per-sandbox files vanish; a broken
// snapshot costs one cold boot and is made again; new inputs make a new
// snapshot; --vm-snapshot off boots every sandbox.
import assert from "node:assert/strict";
import { copyFileSync, chmodSync, existsSync, readFileSync, readdirSync, readlinkSync, statSync, truncateSync } from "node:fs";
import { dirname, join } from "node:path";
import { useDaemon, dtest, waitFor, SANDBOXD_BIN } from "../lib/harness.mjs";
import { qemuPid } from "../lib/vm.mjs";

// The debug console puts each guest's kernel log (with the agent's boot
// lines) into its qemu.log; the snapshot is made with it, too.
const ARGS = ["--isolation", "microvm", "--vm-debug-console"];
const d = useDaemon({ orgs: ["a"], extraArgs: ARGS });
const off = useDaemon({ orgs: ["a"], extraArgs: ["--isolation", "microvm", "--vm-snapshot", "off"] });
const BOOT = { timeout: 240_000 }; // TCG boots and a snapshot to prepare, on a loaded host

const snapshotsDir = (daemon) => join(daemon.dataDir, "vm", "snapshots");
const snapshots = (daemon) =>
  existsSync(snapshotsDir(daemon)) ? readdirSync(snapshotsDir(daemon)).filter((n) => /^[0-9a-f]{64}$/.test(n)) : [];
const log = (daemon) => readFileSync(daemon.logPath, "utf8");
const restored = (daemon, id) => log(daemon).includes(`sandbox ${id}: microVM restored from snapshot`);
const booted = (daemon, id) => log(daemon).includes(`sandbox ${id}: microVM booted`);

async function inGuest(sb, script) {
  return (await sb.sh`sh -c ${script}`.text()).trim();
}

let a, b;
dtest(
  d,
  "two sandboxes restored from one snapshot share no randomness, ids or clock",
  async () => {
    a = await d.create("a");
    b = await d.create("a");
    for (const sb of [a, b]) assert.ok(restored(d, sb.id), `${sb.id} was not restored from the snapshot:\n${d.logTail()}`);
    assert.equal(snapshots(d).length, 1);

    const facts = async (sb) => ({
      urandom: await inGuest(sb, "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"),
      getrandom: await inGuest(sb, "python3 -c 'import os; print(os.urandom(32).hex())'"),
      bootId: await inGuest(sb, "cat /proc/sys/kernel/random/boot_id"),
      uuid: await inGuest(sb, "cat /proc/sys/kernel/random/uuid"),
      now: Number(await inGuest(sb, "date +%s")),
      hostname: await inGuest(sb, "hostname"),
    });
    const fa = await facts(a);
    const fb = await facts(b);
    for (const k of ["urandom", "getrandom", "bootId", "uuid"]) {
      assert.match(fa[k], /^[0-9a-f-]{32,}$/, `${k}: ${fa[k]}`);
      assert.notEqual(fa[k], fb[k], `${k} is the same in both restored sandboxes`);
    }
    // The guest clock is the host's, not the snapshot's.
    for (const f of [fa, fb]) assert.ok(Math.abs(f.now - Date.now() / 1000) < 30, `guest clock ${f.now}`);
    assert.equal(fa.hostname, "sandbox");

    // Each guest mixed fresh host entropy into its kernel RNG and reseeded it
    // before anything of the sandbox ran (the agent's line on the console).
    for (const sb of [a, b]) {
      const console = readFileSync(join(d.dataDir, "sandboxes", sb.id, "qemu.log"), "utf8");
      assert.match(console, /sandbox-agent: boot config: 64 bytes of host entropy added, CRNG reseeded, clock set/);
      assert.match(console, /sandbox-agent: stage 2:/);
    }
    // The one boot before the snapshot was the snapshot's; the sandboxes' own
    // processes start after the reseed (stage 2 re-executes /init).
    assert.match(await inGuest(a, "xargs -0 echo </proc/1/cmdline"), /^\/init --vm --port-fd=3 /);
  },
  BOOT,
);

dtest(d, "the snapshot is the daemon's: in its data dir, root's only; QEMU keeps no handle on it", async () => {
  const dir = snapshotsDir(d);
  const st = statSync(dir);
  assert.equal(st.mode & 0o777, 0o700);
  assert.equal(st.uid, 0);
  assert.equal(statSync(d.dataDir).mode & 0o077, 0, "the data dir is private");
  const [fp] = snapshots(d);
  for (const f of ["state", "meta.json"]) {
    const s = statSync(join(dir, fp, f));
    assert.equal(s.mode & 0o777, 0o600, f);
    assert.equal(s.uid, 0, f);
  }
  // QEMU got the state as a read-only fd and closed it once loaded; it runs
  // as a uid of its own, which could not open the file anyway.
  const pid = qemuPid(a.id);
  assert.ok(pid);
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target = "";
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {}
    assert.ok(!target.startsWith(dir), `QEMU still holds ${target}`);
  }
  assert.notEqual(statSync(`/proc/${pid}`).uid, 0);
});

dtest(
  d,
  "killed sandboxes leave nothing; the snapshot stays for the next one",
  async () => {
    const ids = [a.id, b.id];
    await a.kill();
    await b.kill();
    await waitFor(() => ids.every((id) => !existsSync(join(d.dataDir, "sandboxes", id))), {
      timeoutMs: 20_000,
      what: "the sandboxes' state dirs to go",
    });
    // Nothing of the VM that was snapshotted, nor of the sandboxes, is left.
    assert.deepEqual(readdirSync(join(d.dataDir, "sandboxes")), []);
    assert.equal(snapshots(d).length, 1);
    const c = await d.create("a");
    assert.ok(restored(d, c.id));
    await c.kill();
  },
  BOOT,
);

dtest(
  d,
  "another memory size boots cold",
  async () => {
    const sb = await d.create("a", { memory: "1024MiB" });
    assert.ok(booted(d, sb.id), `${sb.id} should have booted:\n${d.logTail()}`);
    assert.equal((await sb.sh`echo ok`.text()).trim(), "ok");
    await sb.kill();
  },
  BOOT,
);

dtest(
  d,
  "a broken snapshot costs one cold boot, is dropped and made again",
  async () => {
    const [fp] = snapshots(d);
    const state = join(snapshotsDir(d), fp, "state");
    truncateSync(state, Math.floor(statSync(state).size / 2));
    const sb = await d.create("a");
    assert.ok(booted(d, sb.id), `${sb.id} should have booted cold:\n${d.logTail()}`);
    assert.match(log(d), new RegExp(`sandbox ${sb.id}: restoring from the snapshot failed [\\s\\S]*snapshot dropped`));
    assert.equal((await sb.sh`echo ok`.text()).trim(), "ok");
    const next = await d.create("a");
    assert.ok(restored(d, next.id), `${next.id} should be restored from a new snapshot:\n${d.logTail()}`);
    assert.equal((await next.sh`echo ok`.text()).trim(), "ok");
    await sb.kill();
    await next.kill();
  },
  BOOT,
);

dtest(
  d,
  "new inputs make a new snapshot and remove the old one",
  async () => {
    const [old] = snapshots(d);
    // A rebuilt initramfs (here: a copy, a new file) is a new input.
    const initrd = join(dirname(SANDBOXD_BIN), "..", "image", "vm", "initrd");
    const copy = join(d.dataDir, "initrd-copy");
    copyFileSync(initrd, copy);
    chmodSync(copy, 0o644);
    await d.stop();
    await d.start({ restart: true, extraArgs: [...ARGS, "--vm-initrd", copy] });
    const sb = await d.create("a");
    assert.ok(restored(d, sb.id), `${sb.id} should be restored:\n${d.logTail()}`);
    const now = snapshots(d);
    assert.equal(now.length, 1);
    assert.notEqual(now[0], old);
    assert.equal((await sb.sh`echo ok`.text()).trim(), "ok");
    await sb.kill();
  },
  BOOT,
);

dtest(
  off,
  "--vm-snapshot off boots every sandbox and keeps no snapshot",
  async () => {
    const sb = await off.create("a");
    assert.ok(booted(off, sb.id), `${sb.id} should have booted:\n${off.logTail()}`);
    assert.equal((await sb.sh`head -c 8 /dev/urandom | wc -c`.text()).trim(), "8");
    assert.deepEqual(snapshots(off), []);
    await sb.kill();
  },
  BOOT,
);

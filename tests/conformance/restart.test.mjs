// A daemon that dies without cleaning up (SIGKILL) and starts again on the
// same data dir: the sandboxes of the previous run are reported stopped and
// nothing they left on the host survives; new sandboxes work.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { Daemon, waitFor, withTimeout } from "../lib/harness.mjs";

const d = new Daemon();
before(async () => {
  await d.start();
});
after(async () => {
  await d.stop();
  d.cleanupDataDir();
});

function cgroupDirsOf(id) {
  const parent = "sandboxd-" + createHash("sha256").update(realpathSync(d.dataDir)).digest("hex").slice(0, 12);
  const out = [];
  for (const ctrl of readdirSync("/sys/fs/cgroup")) {
    for (const base of [join("/sys/fs/cgroup", ctrl, parent), join("/sys/fs/cgroup", parent)]) {
      if (existsSync(join(base, id))) out.push(join(base, id));
    }
  }
  return out;
}

const pidAlive = (pid) => existsSync(`/proc/${pid}`);

test("after a crash (SIGKILL) and restart, the old sandboxes are stopped and reaped", { timeout: 90_000 }, async () => {
  const timed = await d.create("a", { timeout: "5m" });
  const session = await d.create("a");
  await timed.sh`echo survived > /home/app/mark`;
  const ids = [timed.id, session.id];
  // The processes of both sandboxes, as the host sees them.
  const pids = ids.flatMap((id) =>
    cgroupDirsOf(id).flatMap((dir) => {
      try {
        return readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
      } catch {
        return [];
      }
    }),
  );
  assert.ok(pids.length >= 2, `expected sandbox processes in the cgroups, got ${pids}`);

  d.proc.kill("SIGKILL");
  await d.exited;
  d.tracked.clear(); // their connections died with the daemon

  await d.start({ restart: true });
  for (const id of ids) {
    const entry = (await d.list("a")).find((x) => x.id === id);
    assert.ok(entry, `${id} must still be listed`);
    assert.equal(entry.status, "stopped", `${id} must be reported stopped after the restart`);
    assert.ok(entry.stoppedAt instanceof Date);
  }
  await assert.rejects(d.connect(timed.id, "a"), (e) => e.status === 404, "connect to a reaped sandbox");
  await waitFor(() => pids.every((p) => !pidAlive(p)), { timeoutMs: 10_000, what: "old sandbox processes gone" });
  for (const id of ids) assert.deepEqual(cgroupDirsOf(id), [], `cgroups of ${id} removed`);
  const state = join(d.dataDir, "sandboxes");
  const left = existsSync(state) ? readdirSync(state) : [];
  assert.deepEqual(left.filter((n) => ids.includes(n)), [], "per-sandbox state removed");

  // And the restarted daemon serves.
  const fresh = await d.create("a");
  assert.equal(await withTimeout(fresh.sh`echo ok`.text(), 10_000, "sh"), "ok\n");
  await fresh.kill();
});

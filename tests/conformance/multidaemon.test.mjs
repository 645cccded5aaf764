// Several daemons on one host (each with its own data dir) must not touch
// each other's sandboxes: not at start-up (stale-state reaping) and not at
// shutdown. The suites themselves rely on this: every test file runs its own
// daemon, two files at a time.
import assert from "node:assert/strict";
import { Daemon, useDaemon, dtest, withTimeout } from "../lib/harness.mjs";

const d = useDaemon({ orgs: ["a"] });

dtest(d, "starting and stopping a second daemon leaves the first daemon's sandboxes alone", async () => {
  const sb = await d.create("a", { timeout: "1m" });
  const session = await d.create("a");
  assert.equal(await sb.sh`echo before`.text(), "before\n");
  const other = new Daemon();
  try {
    await other.start({ orgs: ["a"] });
    const theirs = await other.create("a");
    assert.equal(await theirs.sh`echo theirs`.text(), "theirs\n");
    assert.equal(await d.statusOf(sb.id), "running", "the second daemon's start-up stopped our timed sandbox");
    assert.equal(await d.statusOf(session.id), "running", "the second daemon's start-up stopped our session sandbox");
    assert.equal(await sb.sh`echo after-start`.text(), "after-start\n");
    await other.closeTracked();
  } finally {
    await other.stop();
    other.cleanupDataDir();
  }
  assert.equal(await d.statusOf(sb.id), "running", "the second daemon's shutdown stopped our sandbox");
  assert.equal(await sb.sh`echo after-stop`.text(), "after-stop\n");
  assert.equal(await session.sh`echo session-ok`.text(), "session-ok\n");
  await withTimeout(sb.kill(), 15_000, "kill()");
  await session.close();
});

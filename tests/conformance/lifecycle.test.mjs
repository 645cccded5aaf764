// Lifecycle through the official SDK: labels + list, session vs timed
// sandboxes, connect, extendTimeout, kill.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Sandbox, ConnectionEstablishmentError } from "@deno/sandbox";
import { useDaemon, dtest, withTimeout, rejects } from "../lib/harness.mjs";

const d = useDaemon({ orgs: ["a"] });

dtest(d, "labels are listed and Client().sandboxes.list({labels}) filters by them", async () => {
  const run = randomUUID().slice(0, 8);
  const s1 = await d.create("a", { labels: { run, role: "web" } });
  const s2 = await d.create("a", { labels: { run, role: "db" } });
  const s3 = await d.create("a"); // unlabelled
  try {
    const all = await d.list("a");
    for (const s of [s1, s2, s3]) assert.ok(all.some((x) => x.id === s.id), `unfiltered list must include ${s.id}`);
    const e1 = all.find((x) => x.id === s1.id);
    assert.deepEqual(e1.labels, { run, role: "web" });
    assert.equal(e1.status, "running");
    assert.ok(e1.createdAt instanceof Date && !Number.isNaN(e1.createdAt.getTime()), "createdAt must be a valid date");
    assert.ok(Math.abs(e1.createdAt.getTime() - Date.now()) < 120_000, "createdAt should be about now");
    assert.equal(e1.stoppedAt, null);
    assert.equal(typeof e1.region, "string");

    const byRun = await d.list("a", { run });
    assert.deepEqual(byRun.map((x) => x.id).sort(), [s1.id, s2.id].sort());
    const web = await d.list("a", { run, role: "web" });
    assert.deepEqual(web.map((x) => x.id), [s1.id], "all given labels must match");
    const none = await d.list("a", { run, role: "nope" });
    assert.deepEqual(none, []);
  } finally {
    await Promise.all([s1.close(), s2.close(), s3.close()]);
  }
});

dtest(d, "session sandbox ends after close() (listed as stopped within bounds)", async () => {
  const sb = await d.create("a");
  const id = sb.id;
  assert.equal(await d.statusOf(id), "running");
  await withTimeout(sb.close(), 10_000, "close()");
  // Decision: a session sandbox ends ~1 s after its last connection closes.
  // Poll fast: every observation listed as "stopped" must already carry
  // stoppedAt (a "stopped" entry with stoppedAt null is inconsistent).
  const deadline = Date.now() + 8_000;
  let entry;
  for (;;) {
    entry = (await d.list("a")).find((x) => x.id === id);
    if (entry?.status === "stopped") break;
    assert.ok(Date.now() < deadline, `session sandbox still ${entry?.status} 8 s after close()`);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(entry.stoppedAt instanceof Date, `listed as stopped but stoppedAt is ${entry.stoppedAt}`);
  assert.ok(entry.stoppedAt.getTime() >= entry.createdAt.getTime());
  // And it is really gone: connecting is refused.
  const err = await rejects(d.connect(id, "a"), "connect to a stopped session sandbox");
  assert.ok(err instanceof ConnectionEstablishmentError, `expected ConnectionEstablishmentError, got ${err}`);
  assert.equal(err.status, 404);
});

dtest(d, 'timeout "1m" sandbox survives close(); connect sees the file written before', async () => {
  const sb = await d.create("a", { timeout: "1m" });
  const id = sb.id;
  await sb.sh`echo x > /home/app/f`;
  await withTimeout(sb.close(), 10_000, "close()");
  // Observe for 3 s (well past the 1 s session grace) that it stays running.
  const until = Date.now() + 3_000;
  while (Date.now() < until) {
    assert.equal(await d.statusOf(id), "running", "a timed sandbox must survive close()");
    await new Promise((r) => setTimeout(r, 250));
  }
  const again = await d.connect(id, "a");
  assert.equal(again.id, id, "connect must report the same id in x-deno-sandbox-id");
  assert.equal(await again.sh`cat /home/app/f`.text(), "x\n");
  // A secondary connection closing must not end a timed sandbox either.
  await again.close();
  const third = await d.connect(id, "a");
  assert.equal(await third.sh`cat /home/app/f`.text(), "x\n");
  await withTimeout(third.kill(), 15_000, "kill()");
  await d.waitStatus(id, "stopped", { timeoutMs: 8_000 });
});

dtest(d, "extendTimeout returns a later Date, and is capped at +30 min per call", async () => {
  const sb = await d.create("a", { timeout: "30s" });
  const originalUpper = Date.now() + 30_000; // stop_at_ms was computed before this
  try {
    const ext = await sb.extendTimeout("1m");
    assert.ok(ext instanceof Date && !Number.isNaN(ext.getTime()), `extendTimeout must return a valid Date, got ${ext}`);
    assert.ok(ext.getTime() > originalUpper + 20_000, `new deadline ${ext.toISOString()} must be ~30 s later than the original (<= ${new Date(originalUpper).toISOString()})`);
    assert.ok(ext.getTime() <= Date.now() + 60_000 + 5_000, "granted deadline must not exceed what was asked");
    // Ask for 2 h in one call: at most 30 min may be added to the current deadline.
    const big = await sb.extendTimeout("120m");
    assert.ok(big instanceof Date);
    assert.ok(big.getTime() >= ext.getTime(), "an extension must not shorten the deadline");
    assert.ok(big.getTime() <= ext.getTime() + 30 * 60_000 + 5_000, `one call added more than 30 min: ${ext.toISOString()} -> ${big.toISOString()}`);
    assert.equal(await sb.sh`echo still`.text(), "still\n");
  } finally {
    await withTimeout(sb.kill(), 15_000, "kill()");
  }
});

dtest(d, "a timed sandbox stops by itself at its deadline", async () => {
  const sb = await d.create("a", { timeout: "3s" });
  const id = sb.id;
  // The server must close our connection when the deadline passes.
  await withTimeout(sb.closed, 15_000, "server closing the connection at stop_at_ms");
  await d.waitStatus(id, "stopped", { timeoutMs: 5_000 });
});

dtest(d, "sandbox.kill() resolves, closes the connection, and the sandbox is listed as stopped", async () => {
  const sb = await d.create("a", { timeout: "1m" });
  const id = sb.id;
  await withTimeout(sb.kill(), 15_000, "kill() (the server must close the WebSocket after DELETE)");
  await d.waitStatus(id, "stopped", { timeoutMs: 8_000 });
  const err = await rejects(d.connect(id, "a"), "connect to a killed sandbox");
  assert.ok(err instanceof ConnectionEstablishmentError);
  assert.equal(err.status, 404);
  // A second DELETE for a stopped sandbox must not be a server error.
  const r = await d.fetch(`/api/v3/sandbox/${id}`, { method: "DELETE" });
  assert.ok(r.status < 500, `DELETE of a stopped sandbox answered ${r.status}`);
});

dtest(d, "kill() also closes secondary connections", async () => {
  const sb = await d.create("a", { timeout: "1m" });
  const second = await d.connect(sb.id, "a");
  await withTimeout(sb.kill(), 15_000, "kill()");
  await withTimeout(second.closed, 10_000, "secondary connection closing after kill");
});

dtest(d, "SDK environment variables work as the endpoint/token source", async () => {
  // The documented way: DENO_SANDBOX_ENDPOINT / DENO_DEPLOY_ENDPOINT / DENO_DEPLOY_TOKEN.
  const saved = { ...process.env };
  process.env.DENO_SANDBOX_ENDPOINT = d.url;
  process.env.DENO_DEPLOY_ENDPOINT = d.url;
  process.env.DENO_DEPLOY_TOKEN = d.tokens.a;
  try {
    const sb = await Sandbox.create();
    d.tracked.add(sb);
    assert.equal(await sb.sh`echo env-configured`.text(), "env-configured\n");
    await sb.close();
  } finally {
    for (const k of ["DENO_SANDBOX_ENDPOINT", "DENO_DEPLOY_ENDPOINT", "DENO_DEPLOY_TOKEN"]) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
});

// Streaming through the daemon keeps its memory bounded: a 1 GiB upload and
// download through the official SDK grow the daemon's RSS by less than 64 MiB,
// and a client that disconnects mid-transfer leaves the sandbox usable.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, rmSync, statSync, createReadStream, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Daemon, withTimeout } from "../lib/harness.mjs";

const d = new Daemon();
before(async () => {
  await d.start();
});
after(async () => {
  await d.closeTracked();
  await d.stop();
  d.cleanupDataDir();
});

const GiB = 1024 * 1024 * 1024;
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]);

// Samples the daemon's RSS while `fn` runs; returns [result, peak KiB].
async function watchRss(fn) {
  let peak = rssKiB(d.proc.pid);
  const timer = setInterval(() => {
    peak = Math.max(peak, rssKiB(d.proc.pid));
  }, 50);
  try {
    const r = await fn();
    return [r, Math.max(peak, rssKiB(d.proc.pid))];
  } finally {
    clearInterval(timer);
  }
}

// 1 GiB of deterministic, incompressible-looking bytes, generated as it is read.
function gibStream(hash) {
  let sent = 0;
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((i * 2654435761) >>> 0, i);
  return new ReadableStream({
    pull(ctl) {
      if (sent >= GiB) return ctl.close();
      block.writeUInt32LE(sent >>> 20, 0);  // every MiB differs
      const chunk = new Uint8Array(block);   // a copy: the SDK may keep it
      hash.update(chunk);
      sent += chunk.length;
      ctl.enqueue(chunk);
    },
  });
}

test("1 GiB up and down through the SDK with bounded daemon memory", { timeout: 300_000 }, async () => {
  const sb = await d.create("a", { memory: "1GiB" });
  const base = rssKiB(d.proc.pid);
  const upHash = createHash("sha256");
  const [, upPeak] = await watchRss(() => sb.fs.writeFile("/tmp/big.bin", gibStream(upHash)));
  const st = await sb.fs.stat("/tmp/big.bin");
  assert.equal(st.size, GiB);
  const inside = (await sb.sh`sha256sum /tmp/big.bin`.text()).split(" ")[0];
  assert.equal(inside, upHash.digest("hex"), "uploaded bytes arrive unchanged");

  const local = mkdtempSync(join(tmpdir(), "sbxd-dl-"));
  try {
    const [, downPeak] = await watchRss(() => sb.fs.download("/tmp/big.bin", join(local, "big.bin")));
    assert.equal(statSync(join(local, "big.bin")).size, GiB);
    const h = createHash("sha256");
    for await (const c of createReadStream(join(local, "big.bin"))) h.update(c);
    assert.equal(h.digest("hex"), inside, "downloaded bytes are the sandbox's");
    const growth = (Math.max(upPeak, downPeak) - base) / 1024;
    console.log(`daemon RSS: base ${(base / 1024).toFixed(1)} MiB, peak growth ${growth.toFixed(1)} MiB`);
    assert.ok(growth < 64, `daemon RSS grew by ${growth.toFixed(1)} MiB during 1 GiB transfers`);
  } finally {
    rmSync(local, { recursive: true, force: true });
  }
  await sb.kill();
});

test("a client that disconnects mid-upload leaves the sandbox and daemon usable", { timeout: 120_000 }, async () => {
  const sb = await d.create("a", { timeout: "2m" });
  const id = sb.id;
  const stream = gibStream(createHash("sha256"));
  const pending = sb.fs.writeFile("/tmp/partial.bin", stream).catch((e) => e);
  // Let some data flow, then drop the connection under the transfer.
  await new Promise((r) => setTimeout(r, 300));
  await withTimeout(sb.close(), 30_000, "close mid-transfer");
  await pending;
  const again = await d.connect(id, "a");
  // The agent channel of the dead transfer is gone: new transfers and commands work.
  await again.fs.writeTextFile("/tmp/after.txt", "fine");
  assert.equal(await again.fs.readTextFile("/tmp/after.txt"), "fine");
  assert.equal(await again.sh`echo ok`.text(), "ok\n");
  await again.kill();
});

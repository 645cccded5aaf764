// The official @deno/sandbox SDK's transfer throughput, for comparison with
// bench-fs (run by bench/fs.sh from the repo root, where node_modules is).
// Env: DENO_SANDBOX_ENDPOINT, DENO_DEPLOY_TOKEN; args: RUNS SIZE_MIB INLINE_MIB.
// Prints the same table shape as bench-fs (MB/s = 10^6 bytes/s, p50).
import { Sandbox } from "@deno/sandbox";
import { createReadStream, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";

const [runs = 5, sizeMiB = 256, inlineMiB = 64] = process.argv.slice(2).map(Number);
const endpoint = process.env.DENO_SANDBOX_ENDPOINT;
const token = process.env.DENO_DEPLOY_TOKEN;

function pseudoRandom(bytes) {
  const buf = Buffer.allocUnsafe(bytes);
  let x = 0x9e3779b9 | 0;
  for (let i = 0; i < bytes; i += 4) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    buf.writeInt32LE(x | 0, i);
  }
  return buf;
}

const dir = mkdtempSync(join(tmpdir(), "bench-fs-sdk-"));
const src = join(dir, "src.bin");
const size = sizeMiB * 1048576;
const inlineSize = inlineMiB * 1048576;
const chunk = pseudoRandom(16 * 1048576);
writeFileSync(src, Buffer.alloc(0));
for (let done = 0; done < size; done += chunk.length) writeFileSync(src, chunk.subarray(0, Math.min(chunk.length, size - done)), { flag: "a" });
const smallPath = join(dir, "small.bin");
writeFileSync(smallPath, pseudoRandom(inlineSize));

const rows = [];
async function measure(name, bytes, how, fn) {
  const mbps = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn(i);
    mbps.push(bytes / 1e6 / ((performance.now() - t0) / 1000));
  }
  mbps.sort((a, b) => a - b);
  rows.push({ name, bytes, how, p50: mbps[Math.floor((mbps.length - 1) / 2 + 0.5)], min: mbps[0], max: mbps.at(-1) });
}

const sb = await Sandbox.create({ token, sandboxEndpoint: endpoint, apiEndpoint: endpoint, memory: "2GiB" });
try {
  await measure("SDK writeFile(ReadableStream)", size, "fs.writeFile with a web stream", async () => {
    await sb.fs.writeFile("/tmp/sdk.bin", Readable.toWeb(createReadStream(src, { highWaterMark: 65536 })));
  });
  await measure("SDK fs.download", size, "open + fileRead 64 KiB", async () => {
    const out = join(dir, "back.bin");
    await sb.fs.download("/tmp/sdk.bin", out);
    if (statSync(out).size !== size) throw new Error("download size mismatch");
  });
  // Streamed: an inline 64 MiB write exceeds the server's message limit.
  await sb.fs.writeFile("/tmp/sdk-small.bin", Readable.toWeb(createReadStream(smallPath, { highWaterMark: 65536 })));
  await measure(`SDK readFile ${inlineMiB} MiB`, inlineSize, "one base64 message", async () => {
    const got = await sb.fs.readFile("/tmp/sdk-small.bin");
    if (got.length !== inlineSize) throw new Error("readFile size mismatch");
  });
} finally {
  await sb.kill().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}
console.log(`bench-fs (SDK, node ${process.version}): p50 of ${runs} runs, MB/s (10^6 bytes/s)`);
console.log(`${"operation".padEnd(38)} ${"size".padStart(10)} ${"p50".padStart(9)} ${"min".padStart(9)} ${"max".padStart(9)}  how`);
for (const r of rows) {
  console.log(`${r.name.padEnd(38)} ${(String(r.bytes / 1048576) + " MiB").padStart(10)} ${r.p50.toFixed(1).padStart(9)} ${r.min.toFixed(1).padStart(9)} ${r.max.toFixed(1).padStart(9)}  ${r.how}`);
}
process.exit(0);

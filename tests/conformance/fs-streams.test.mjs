// Filesystem streams and bulk transfer (WIRE.md §3.2, §4.2, §7.7, §7.8):
// writeFile/writeTextFile from ReadableStreams, fs.upload / fs.download of
// single files and whole trees (nested dirs, symlinks, empty files, unicode
// and space names) compared byte for byte, concurrent writers, failing and
// aborted source streams, and one file larger than the sandbox's memory.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { useDaemon, dtest, withTimeout, waitFor, sleep } from "../lib/harness.mjs";
import {
  sh, shOk, shStat, shExists, sha256, enc, streamOf,
  localManifest, sandboxManifest, expectFsError, assertFsError, EXISTS,
} from "../lib/fs-helpers.mjs";

const d = useDaemon({ orgs: ["a"] });
let sb;
async function box() {
  sb ??= await d.create("a");
  return sb;
}

const HOME = "/home/app";
const UNI = "ünïcødé 文件.txt";

// Local scratch space (not under the harness prefix: the leak suite owns that).
const localTmp = mkdtempSync(join(tmpdir(), "sbxd-fslocal-"));
after(() => rmSync(localTmp, { recursive: true, force: true }));
let n = 0;
const localDir = (tag) => {
  const p = join(localTmp, `${++n}-${tag}`);
  mkdirSync(p, { recursive: true });
  return p;
};

/** A local tree with nested folders, symlinks (file and dir), empty files/dirs, unicode and space names. */
function makeLocalTree(parent, name = "tree") {
  const root = join(parent, name);
  mkdirSync(join(root, "dir with spaces", "deeper", "deepest"), { recursive: true });
  mkdirSync(join(root, "emptydir"));
  mkdirSync(join(root, "links"));
  mkdirSync(join(root, "ünï dïr"));
  writeFileSync(join(root, "top.txt"), randomBytes(100_000));
  writeFileSync(join(root, "empty.txt"), "");
  writeFileSync(join(root, UNI), "ünïcødé content ✓\n");
  writeFileSync(join(root, "big.bin"), randomBytes(3 * 1024 * 1024 + 17)); // many 64 KiB pieces, odd tail
  writeFileSync(join(root, "dir with spaces", "nested file.bin"), randomBytes(300_000));
  writeFileSync(join(root, "dir with spaces", "deeper", "deepest", "leaf.txt"), "leaf\n");
  writeFileSync(join(root, "dir with spaces", "deeper", "zero"), "");
  writeFileSync(join(root, "ünï dïr", "文件 2.bin"), randomBytes(5000));
  symlinkSync("../top.txt", join(root, "links", "to-top"));
  symlinkSync("../dir with spaces", join(root, "links", "to-dir"));
  symlinkSync(`../${UNI}`, join(root, "links", "to-uni"));
  symlinkSync("empty.txt", join(root, "same-dir-link"));
  return root;
}

dtest(d, "writeFile from a ReadableStream: chunks arrive in order (empty chunks too); writeTextFile from a ReadableStream<string>", async () => {
  const b = await box();
  const dir = `${HOME}/streams`;
  await shOk(b, 'mkdir -p "$1"', [dir]);
  const chunks = [enc.encode("streamed "), new Uint8Array(0), enc.encode("data"), randomBytes(200_000), new Uint8Array([0, 255, 10])];
  const want = Buffer.concat(chunks.map((c) => Buffer.from(c)));
  await b.fs.writeFile(`${dir}/s.bin`, streamOf(chunks));
  assert.equal((await shOk(b, 'sha256sum -- "$1"', [`${dir}/s.bin`])).split(" ")[0], sha256(want), "streamed writeFile content differs");
  assert.equal(await shStat(b, `${dir}/s.bin`, "%s:%u"), `${want.length}:1000`);
  // A stream with no chunks at all makes an empty file.
  await b.fs.writeFile(`${dir}/none.bin`, streamOf([]));
  assert.equal(await shStat(b, `${dir}/none.bin`, "%s:%F"), "0:regular empty file");
  // Text stream, multi-byte characters split across chunks by the encoder.
  const parts = ["héllo ", "wörld ", "文件", "\n", "✓".repeat(10_000)];
  await b.fs.writeTextFile(`${dir}/${UNI}`, ReadableStream.from(parts));
  assert.equal(await shOk(b, 'cat -- "$1"', [`${dir}/${UNI}`]), parts.join(""));
  // Streamed append.
  await b.fs.writeFile(`${dir}/s.bin`, streamOf([enc.encode("+tail")]), { append: true });
  assert.equal(await shStat(b, `${dir}/s.bin`, "%s"), String(want.length + 5));
  // Streamed createNew on an existing file is refused and leaves it alone.
  await expectFsError(b.fs.writeFile(`${dir}/s.bin`, streamOf([enc.encode("x")]), { createNew: true }), { ...EXISTS, what: "streamed writeFile createNew on an existing file" });
  assert.equal(await shStat(b, `${dir}/s.bin`, "%s"), String(want.length + 5));
  // The connection still serves after refused streams (the unread stream was dropped, not wedged).
  assert.equal(await b.fs.readTextFile(`${dir}/${UNI}`), parts.join(""));
});

dtest(d, "upload/download of single files: byte-exact both ways (random, zero-byte, unicode name)", async () => {
  const b = await box();
  const ld = localDir("single");
  const files = { "rand.bin": randomBytes(1_234_567), "zero.bin": Buffer.alloc(0), [UNI]: Buffer.from("ü\n") };
  await shOk(b, 'mkdir -p "$1"', [`${HOME}/single in`]);
  for (const [name, data] of Object.entries(files)) {
    writeFileSync(join(ld, name), data);
    const remote = `${HOME}/single in/${name}`;
    await b.fs.upload(join(ld, name), remote);
    assert.equal((await shOk(b, 'sha256sum -- "$1"', [remote])).split(" ")[0], sha256(data), `upload of ${name}: sha256 inside differs`);
    assert.equal(await shStat(b, remote, "%s:%u:%g"), `${data.length}:1000:1000`, `upload of ${name}: size/owner`);
    const back = join(ld, `back-${name}`);
    await b.fs.download(remote, back);
    assert.equal(sha256(readFileSync(back)), sha256(data), `download of ${name}: bytes differ`);
  }
  // A file made inside by a process downloads byte-exactly too.
  await shOk(b, 'head -c 2000001 /dev/urandom > "$1"', [`${HOME}/single in/made.bin`]);
  const inside = (await shOk(b, 'sha256sum -- "$1"', [`${HOME}/single in/made.bin`])).split(" ")[0];
  await b.fs.download(`${HOME}/single in/made.bin`, join(ld, "made.bin"));
  assert.equal(sha256(readFileSync(join(ld, "made.bin"))), inside);
  // Downloading through a symlink fetches the target's bytes.
  await shOk(b, 'ln -s made.bin "$1"', [`${HOME}/single in/made-link`]);
  await b.fs.download(`${HOME}/single in/made-link`, join(ld, "via-link.bin"));
  assert.equal(sha256(readFileSync(join(ld, "via-link.bin"))), inside);
});

dtest(d, "upload of a directory tree (nested, symlinks, empty files/dirs, unicode/space names) is byte-exact and app's; download brings it back identical", async () => {
  const b = await box();
  const ld = localDir("tree");
  const root = makeLocalTree(ld);
  const want = localManifest(root);
  const dest = `${HOME}/up dest`;
  await shOk(b, 'mkdir -p "$1"', [dest]);
  await withTimeout(b.fs.upload(root, dest), 60_000, "upload of the tree");
  // The directory is recreated inside dest (WIRE.md §7.7).
  const got = await sandboxManifest(b, `${dest}/tree`);
  assert.deepEqual(got.entries, want, "the uploaded tree differs from the local one (entries as [path, type, sha256:size | link target])");
  assert.deepEqual(got.uids, [1000], "every uploaded entry must belong to app (uid 1000)");
  assert.equal(await shOk(b, 'cat -- "$1"', [`${dest}/tree/links/to-dir/deeper/deepest/leaf.txt`]), "leaf\n", "the uploaded dir symlink must resolve inside");
  // Back out again.
  const back = localDir("tree-back");
  await withTimeout(b.fs.download(`${dest}/tree`, back), 60_000, "download of the tree");
  assert.deepEqual(localManifest(join(back, "tree")), want, "the downloaded tree differs from the original");
  // Uploading again onto the same place: the root mkdir has no options ⇒ AlreadyExists.
  await expectFsError(b.fs.upload(root, dest), { ...EXISTS, what: "second upload onto an existing tree" });
});

dtest(d, "download of a tree made inside the sandbox matches sha256/types computed inside", async () => {
  const b = await box();
  const src = `${HOME}/made tree`;
  await shOk(b, `set -e; mkdir -p "$1/a/b c/d" "$1/empty dir" "$1/文件夹"
    cd "$1"
    head -c 777777 /dev/urandom > "a/b c/d/r.bin"
    : > "a/zero"
    printf 'ünï\\n' > "文件夹/ü ü.txt"
    head -c 65536 /dev/urandom > exact64k.bin
    head -c 65537 /dev/urandom > over64k.bin
    ln -s "a/b c" dirlink
    ln -s "文件夹/ü ü.txt" unilink`, [src]);
  const inside = await sandboxManifest(b, src);
  const ld = localDir("made-back");
  await withTimeout(b.fs.download(src, ld), 60_000, "download of a tree made inside");
  assert.deepEqual(localManifest(join(ld, "made tree")), inside.entries, "downloaded tree differs from the sandbox's");
});

dtest(d, "concurrent writers: parallel writeFile to distinct files, and parallel appends to one file, lose nothing", async () => {
  const b = await box();
  const dir = `${HOME}/concurrent`;
  await shOk(b, 'mkdir -p "$1"', [dir]);
  const blobs = Array.from({ length: 10 }, (_, i) => randomBytes(200_000 + i * 1013));
  await withTimeout(
    Promise.all(
      blobs.map((data, i) =>
        i % 2 === 0
          ? b.fs.writeFile(`${dir}/f${i}.bin`, data)
          : b.fs.writeFile(`${dir}/f${i}.bin`, streamOf([data.subarray(0, 1000), data.subarray(1000, 150_000), data.subarray(150_000)].map((x) => new Uint8Array(x)))),
      ),
    ),
    60_000,
    "10 parallel writeFile calls",
  );
  const sums = await shOk(b, 'cd "$1" && sha256sum f*.bin', [dir]);
  const got = Object.fromEntries(sums.trim().split("\n").map((l) => l.split(/\s+/).reverse()));
  for (let i = 0; i < blobs.length; i++) assert.equal(got[`f${i}.bin`], sha256(blobs[i]), `f${i}.bin content is wrong after parallel writes`);
  // Appends: every record must land exactly once and whole.
  const recs = Array.from({ length: 40 }, (_, i) => `rec-${String(i).padStart(2, "0")}-${"x".repeat(200)}\n`);
  await withTimeout(
    Promise.all(recs.map((r, i) => (i % 2 ? b.fs.writeTextFile(`${dir}/log`, r, { append: true }) : b.fs.writeFile(`${dir}/log`, enc.encode(r), { append: true })))),
    60_000,
    "40 parallel appends",
  );
  const lines = (await shOk(b, 'cat -- "$1"', [`${dir}/log`])).split("\n").filter(Boolean);
  assert.equal(lines.length, recs.length, `expected ${recs.length} appended records, found ${lines.length}`);
  assert.deepEqual(lines.sort(), recs.map((r) => r.trimEnd()).sort(), "appended records were lost, duplicated or interleaved");
  // Parallel readers of one file all see the full content.
  const reads = await Promise.all(Array.from({ length: 8 }, () => b.fs.readFile(`${dir}/f0.bin`)));
  for (const r of reads) assert.equal(sha256(r), sha256(blobs[0]));
});

dtest(d, "a source stream that errors fails writeFile (no hang) and the connection keeps working", async () => {
  const b = await box();
  const dir = `${HOME}/errstream`;
  await shOk(b, 'mkdir -p "$1"', [dir]);
  let pulls = 0;
  const failing = new ReadableStream({
    pull(c) {
      if (pulls++ === 0) c.enqueue(enc.encode("partial data"));
      else c.error(new Error("local source failed"));
    },
  });
  let err;
  try {
    await withTimeout(b.fs.writeFile(`${dir}/f`, failing), 20_000, "writeFile with an erroring source stream");
  } catch (e) {
    err = e;
  }
  assert.ok(err, "writeFile must fail when its source stream errors ($sandbox.stream.error)");
  assert.doesNotMatch(err.message, /no result within/, "writeFile hung after the source stream errored");
  assertFsError(err, { what: "writeFile with an erroring source" });
  assert.equal(await b.fs.readTextFile("/etc/passwd").then((t) => t.slice(0, 5)), "root:");
  // upload of a local path that vanishes is a client-side error; the server stays fine.
  assert.equal(await sh(b, "echo ok").then((r) => r.out), "ok\n");
});

dtest(d, "an AbortSignal aborts a streamed writeFile that never ends (AbortError), and the sandbox keeps serving", async () => {
  const b = await box();
  const dir = `${HOME}/abort`;
  await shOk(b, 'mkdir -p "$1"', [dir]);
  const never = new ReadableStream({
    start(c) {
      c.enqueue(enc.encode("first chunk\n"));
    },
    pull() {
      return new Promise(() => {}); // the source never yields again
    },
  });
  const ac = new AbortController();
  const p = b.fs.writeFile(`${dir}/never`, never, { signal: ac.signal });
  p.catch(() => {});
  // Give the daemon a chance to start the write (the file appears), but do not depend on it.
  await waitFor(() => shExists(b, `${dir}/never`), { timeoutMs: 5_000, what: "the aborted write's file" }).catch(() => {});
  ac.abort();
  let err;
  try {
    await withTimeout(p, 15_000, "writeFile after abort");
  } catch (e) {
    err = e;
  }
  assert.ok(err, "an aborted writeFile must reject");
  assert.doesNotMatch(err.message, /no result within/, "writeFile did not end after abort()");
  assert.equal(err.name, "AbortError", `expected a DOMException AbortError, got ${err.constructor?.name} ${err.name}: ${err.message}`);
  assert.equal(await sh(b, "echo ok").then((r) => r.out), "ok\n");
  await b.fs.writeTextFile(`${dir}/after`, "fine");
  assert.equal(await b.fs.readTextFile(`${dir}/after`), "fine");
});

dtest(d, "a 1 GiB file streamed into a 768 MiB sandbox: exact size and sha256 inside; readFile refuses it without killing the connection", async () => {
  const big = await d.create("a", { memory: "768MiB" });
  try {
    const path = `${HOME}/big file.bin`;
    const CHUNK = 1 << 20;
    const COUNT = 1024; // 1 GiB
    const AHEAD = 192 * CHUNK; // keep the client at most this far ahead of the file's size
    const hash = createHash("sha256");
    let i = 0;
    let confirmed = 0;
    let pace = true;
    const src = new ReadableStream({
      async pull(c) {
        if (i === COUNT) {
          c.close();
          return;
        }
        // The SDK has no back-pressure on outgoing streams (WIRE.md §3.4): pace
        // the generator on the file's observed size so neither side has to
        // buffer the whole GiB. Bounded: after 20 s without progress, go on.
        if (pace && i * CHUNK - confirmed > AHEAD) {
          let stalledSince = Date.now();
          while (i * CHUNK - confirmed > AHEAD / 2) {
            try {
              const size = (await big.fs.stat(path)).size;
              if (size > confirmed) stalledSince = Date.now();
              confirmed = size;
            } catch (e) {
              if (e?.code !== "ENOENT") {
                pace = false; // stat itself is broken; the size check below will tell
                break;
              }
            }
            if (Date.now() - stalledSince > 20_000) break;
            if (i * CHUNK - confirmed > AHEAD / 2) await sleep(25);
          }
        }
        const chunk = new Uint8Array(randomBytes(CHUNK));
        hash.update(chunk);
        c.enqueue(chunk);
        i++;
      },
    });
    const t0 = Date.now();
    await withTimeout(big.fs.writeFile(path, src), 240_000, "1 GiB streamed writeFile");
    const secs = (Date.now() - t0) / 1000;
    const want = hash.digest("hex");
    assert.equal((await big.fs.stat(path)).size, COUNT * CHUNK, "fs.stat size of the 1 GiB file");
    assert.equal(await shStat(big, path, "%s:%u"), `${COUNT * CHUNK}:1000`);
    const inside = await withTimeout(shOk(big, 'sha256sum -- "$1"', [path]), 120_000, "sha256sum of 1 GiB inside");
    assert.equal(inside.split(" ")[0], want, "sha256 of the 1 GiB file inside differs from what was streamed");
    console.error(`# 1 GiB streamed in ${secs.toFixed(1)} s`);
    // readFile answers in one message (WIRE.md §2.9): a 1 GiB answer cannot be
    // sent; the server must refuse with an fs error, not drop the connection.
    const e = await withTimeout(expectFsError(big.fs.readFile(path), { what: "readFile of a 1 GiB file" }), 60_000, "readFile of 1 GiB");
    assert.ok(e instanceof Error);
    assert.equal(await sh(big, "echo alive").then((r) => r.out), "alive\n", "the sandbox must keep serving after the refused readFile");
  } finally {
    await withTimeout(big.kill(), 20_000, "kill() of the big-file sandbox").catch(() => {});
  }
}, { timeout: 420_000 });

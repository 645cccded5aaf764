// Filesystem API security, written as an attacker holding the SDK would try:
// fs calls must act inside the sandbox, as app (uid 1000), never on the host
// and never with the daemon's or the agent's privileges. Host markers are
// planted under /root and /tmp; every path trick (symlinks, /proc/<pid>/root,
// .. chains, races) must either fail or reach the sandbox's own files.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { after } from "node:test";
import { useDaemon, dtest, withTimeout, waitFor } from "../lib/harness.mjs";
import {
  sh, shOk, shStat, shExists, sha256, enc, all, expectFsError, assertFsError, rawSession, assertWireError, DENIED,
} from "../lib/fs-helpers.mjs";

// A secret in the daemon's environment (the daemon inherits ours): no fs call may reveal it.
const HOST_SECRET = `sbxd-host-secret-${randomUUID()}`;
process.env.SBXD_FS_TEST_SECRET = HOST_SECRET;

const d = useDaemon({ orgs: ["a"] });
let sb;
async function box() {
  sb ??= await d.create("a");
  return sb;
}

const marker = `sbxd-fsmarker-${randomUUID()}`;
const HOST_CONTENT = `host secret ${randomUUID()}\n`;
const hostMarkers = [`/root/${marker}`, `/tmp/${marker}`];
for (const p of hostMarkers) writeFileSync(p, HOST_CONTENT);
// A world-writable host directory a host-side path resolution could write into.
const hostRaceDir = `/tmp/sbxd-fsrace-${randomUUID()}`;
mkdirSync(hostRaceDir);
chmodSync(hostRaceDir, 0o777);
after(() => {
  for (const p of hostMarkers) rmSync(p, { force: true });
  rmSync(hostRaceDir, { recursive: true, force: true });
});

/** Reads `path` through the fs API; returns the text, or null if the read failed with an fs error. */
async function tryRead(b, path) {
  try {
    return await b.fs.readTextFile(path);
  } catch (e) {
    assertFsError(e, { what: `readTextFile(${path})` });
    return null;
  }
}

const traversals = (name) => [
  `/root/${name}`,
  `/tmp/${name}`,
  `/proc/1/root/root/${name}`,
  `/proc/1/root/../../root/${name}`,
  `/proc/1/root/../../../../../../tmp/${name}`,
  `/proc/self/root/../root/${name}`,
  `/proc/self/cwd/../../../root/${name}`,
  `/../../../../root/${name}`,
  `../../../../../root/${name}`,
  `/home/app/../../../root/${name}`,
  `/proc/thread-self/root/root/${name}`,
];

dtest(d, "host files stay unreachable: markers under /root and /tmp through /proc/*/root, .. chains and relative paths", async () => {
  const b = await box();
  for (const p of traversals(marker)) {
    const got = await tryRead(b, p);
    assert.ok(got === null || !got.includes(HOST_CONTENT.trim()), `readTextFile(${p}) returned the host's marker`);
    assert.equal(got, null, `readTextFile(${p}) succeeded on a path that only exists on the host (got ${JSON.stringify(got?.slice(0, 80))})`);
    await expectFsError(b.fs.stat(p), { what: `stat(${p})` });
  }
  // The daemon's data dir (logs, tokens, other sandboxes' upper dirs) and the host workspace.
  for (const p of [`${d.dataDir}/sandboxd.log`, `${d.dataDir}/.harness-owner`, "/work/main/package.json", `/proc/1/root/../..${d.dataDir}/sandboxd.log`]) {
    assert.equal(await tryRead(b, p), null, `readTextFile(${p}) reached a host file`);
  }
  // Listing the sandbox's /root or /tmp must not show the marker either.
  for (const dir of ["/tmp", "/proc/1/root/tmp", "/proc/1/root/../../tmp"]) {
    const names = await all(b.fs.readDir(dir)).then((es) => es.map((e) => e.name), (e) => (assertFsError(e, { what: `readDir(${dir})` }), []));
    assert.ok(!names.includes(marker), `readDir(${dir}) lists the host marker`);
  }
  await expectFsError(all(b.fs.readDir("/root")), { ...DENIED, what: "readDir of the sandbox's /root (root's 700 dir) as app" });
  const globbed = await withTimeout(all(b.fs.expandGlob(`/tmp/sbxd-fsmarker-*`)), 20_000, "expandGlob /tmp");
  assert.deepEqual(globbed, [], "expandGlob finds the host marker in /tmp");
  // /proc/1/root is the sandbox's own root: same listing as /.
  const rootNames = (await all(b.fs.readDir("/"))).map((e) => e.name).sort();
  assert.ok(!rootNames.includes("work"), `the sandbox's / shows the host's /work: ${rootNames.join(" ")}`);
  const viaProc = await all(b.fs.readDir("/proc/1/root")).then((es) => es.map((e) => e.name).sort(), () => null);
  if (viaProc) assert.deepEqual(viaProc, rootNames, "/proc/1/root lists something other than the sandbox's own /");
  for (const p of ["/proc/1/root", "/proc/self/root", "/proc/1/root/../.."]) {
    const real = await b.fs.realPath(p).catch((e) => (assertFsError(e, { what: `realPath(${p})` }), null));
    if (real !== null) assert.equal(real, "/", `realPath(${p}) must stay at the sandbox's root`);
  }
  // Nothing on the host changed.
  for (const p of hostMarkers) assert.equal(readFileSync(p, "utf8"), HOST_CONTENT);
});

dtest(d, "symlinks made inside that point at host paths resolve inside the sandbox (or fail), for every path method", async () => {
  const b = await box();
  const dir = "/home/app/evil-links";
  await shOk(b, 'mkdir -p "$1"', [dir]);
  const targets = {
    shadow: "/etc/shadow",
    procroot: "/proc/1/root/../../root/" + marker,
    rootmarker: "/root/" + marker,
    tmpmarker: "/tmp/" + marker,
    procdir: "/proc/1/root/..",
    selfroot: "/proc/self/root/root",
  };
  for (const [name, target] of Object.entries(targets)) await b.fs.symlink(target, `${dir}/${name}`);
  // /etc/shadow is absent from the image: following the link must not find the host's.
  await expectFsError(b.fs.readFile(`${dir}/shadow`), { kind: "NotFound", code: "ENOENT", what: "readFile through a link to /etc/shadow" });
  if (existsSync("/etc/shadow")) {
    const got = await tryRead(b, `${dir}/shadow`);
    assert.notEqual(got, readFileSync("/etc/shadow", "utf8"), "the host's /etc/shadow was read through a symlink");
  }
  for (const name of ["procroot", "rootmarker", "tmpmarker"]) {
    assert.equal(await tryRead(b, `${dir}/${name}`), null, `reading through symlink ${name} -> ${targets[name]} succeeded`);
    await expectFsError(b.fs.stat(`${dir}/${name}`), { what: `stat through ${name}` });
    await expectFsError(b.fs.realPath(`${dir}/${name}`), { what: `realPath through ${name}` });
    await expectFsError(b.fs.copyFile(`${dir}/${name}`, `${dir}/${name}.copy`), { what: `copyFile from ${name}` });
    // Writing through the link creates (at most) a file inside the sandbox.
    await b.fs.writeTextFile(`${dir}/${name}`, "written through link\n").catch((e) => assertFsError(e, { what: `writeTextFile through ${name}` }));
  }
  // A directory link to /proc/1/root/.. lists the sandbox's own root.
  const names = await all(b.fs.readDir(`${dir}/procdir`)).then((es) => es.map((e) => e.name).sort(), () => null);
  if (names) assert.deepEqual(names, (await all(b.fs.readDir("/"))).map((e) => e.name).sort());
  const walked = await withTimeout(all(b.fs.walk(`${dir}/selfroot`, { maxDepth: 1 })).catch(() => []), 20_000, "walk through a link to /proc/self/root/root");
  assert.ok(!walked.some((e) => e.name === marker), "walk through a /proc/self/root link found the host marker");
  // The host's files are untouched and nothing new appeared next to them.
  for (const p of hostMarkers) assert.equal(readFileSync(p, "utf8"), HOST_CONTENT, `${p} changed on the host`);
  // Downloading through such links only ever yields sandbox content.
  await expectFsError(b.fs.download(`${dir}/rootmarker`, `${hostRaceDir}/dl`), { what: "download of a link to a host path" });
  assert.equal(existsSync(`${hostRaceDir}/dl`), false);
});

dtest(d, "readFile of /proc/self/environ and /proc/1/environ does not reveal the host's (daemon's) environment", async () => {
  const b = await box();
  assert.ok(readFileSync(`/proc/${d.proc.pid}/environ`, "utf8").includes(HOST_SECRET), "test setup: the daemon must carry the secret");
  for (const p of ["/proc/self/environ", "/proc/1/environ", "/proc/thread-self/environ", "/proc/self/task/1/environ"]) {
    let bytes = null;
    try {
      bytes = await b.fs.readFile(p);
    } catch (e) {
      assertFsError(e, { what: `readFile(${p})` });
    }
    if (bytes) {
      const text = Buffer.from(bytes).toString("latin1");
      assert.ok(!text.includes(HOST_SECRET), `readFile(${p}) reveals the daemon's environment`);
      assert.ok(!text.includes("SBXD_FS_TEST_SECRET"), `readFile(${p}) reveals the daemon's environment variable names`);
    }
  }
  // The agent's command line carries no secrets either.
  // (mountinfo is left out: the overlay's options name host paths for every
  // process inside, not only through the fs API.)
  for (const p of ["/proc/self/cmdline", "/proc/1/cmdline"]) {
    const t = await tryRead(b, p);
    if (t) assert.ok(!t.includes(HOST_SECRET) && !t.includes("ddo_"), `${p} through the fs API reveals host secrets: ${t.slice(0, 300)}`);
  }
});

dtest(d, "fs calls act as app: root-only files are refused, created files are app's, privileged metadata changes fail", async () => {
  const b = await box();
  await b.fs.writeTextFile("/tmp/mine", "x");
  await b.fs.mkdir("/tmp/mydir");
  await b.fs.symlink("mine", "/tmp/mylink");
  for (const p of ["/tmp/mine", "/tmp/mydir", "/tmp/mylink"]) assert.equal(await shStat(b, p, "%u:%g"), "1000:1000", `${p} created through the fs API is not app's`);
  await expectFsError(b.fs.chown("/tmp/mine", 0, 0), { ...DENIED, what: "chown to root" });
  // A setuid-root file cannot be made: app cannot chown, and /usr/bin cannot be written.
  await expectFsError(b.fs.copyFile("/usr/bin/bash", "/usr/bin/rootbash"), { ...DENIED, what: "copy into /usr/bin" });
  await b.fs.copyFile("/usr/bin/bash", "/tmp/mybash");
  await b.fs.chmod("/tmp/mybash", 0o4755);
  assert.equal(await shStat(b, "/tmp/mybash", "%u"), "1000", "a copy must belong to app, not root");
  assert.equal((await sh(b, "/tmp/mybash -p -c 'id -u'")).out.trim(), "1000", "a setuid copy made through the fs API runs as root");
  // Root's files in root's directories cannot be removed.
  const rootTmp = (await sh(b, "find / -xdev -maxdepth 2 -user root -type f -perm -o=r 2>/dev/null | head -n1")).out.trim();
  if (rootTmp) {
    await expectFsError(b.fs.remove(rootTmp), { ...DENIED, what: `remove of root's ${rootTmp}` });
    assert.equal(await shExists(b, rootTmp), true);
  }
});

dtest(d, "fs calls cannot reach the agent's private /proc/1 entries (environ, maps, fd table), just as app's processes cannot", async () => {
  const b = await box();
  // /proc/1 is the agent (root inside, with capabilities): app's processes may
  // not read its environment, maps or fd table (security/escape.test.mjs), and
  // neither may fs calls — even though the agent thread serving them *is* in
  // PID 1's thread group, for which the kernel's ptrace checks pass.
  assert.notEqual((await sh(b, "cat /proc/1/maps")).code, 0, "test premise: app's processes cannot read /proc/1/maps");
  const leaks = [];
  for (const p of ["/proc/1/environ", "/proc/1/maps", "/proc/1/smaps", "/proc/1/stack", "/proc/1/syscall", "/proc/1/auxv"]) {
    const r = await b.fs.readFile(p).then((x) => `read ${x.length} bytes`, (e) => (assertFsError(e, { what: `readFile(${p})` }), null));
    if (r) leaks.push(`readFile(${p}): ${r}`);
  }
  const fds = await all(b.fs.readDir("/proc/1/fd")).then((es) => es.map((e) => e.name), (e) => (assertFsError(e, { what: "readDir /proc/1/fd" }), null));
  if (fds) leaks.push(`readDir(/proc/1/fd): ${fds.join(",")}`);
  for (let fd = 0; fd < 8; fd++) {
    const l = await b.fs.readLink(`/proc/1/fd/${fd}`).catch(() => null);
    if (l) leaks.push(`readLink(/proc/1/fd/${fd}) = ${l}`);
  }
  // Writes into the agent's /proc entries (renaming it, shielding it from the OOM killer, ...).
  for (const [p, v] of [["/proc/1/comm", "pwned"], ["/proc/1/oom_score_adj", "-1000"], ["/proc/self/comm", "pwned"], ["/proc/1/attr/current", "x"]]) {
    const r = await b.fs.writeTextFile(p, v).then(() => "written", (e) => (assertFsError(e, { what: `writeTextFile(${p})` }), null));
    if (r) leaks.push(`writeTextFile(${p}, ${v}): ${r}`);
  }
  assert.equal((await shOk(b, "cat /proc/1/comm")).trim(), "sandbox-agent", "the agent's comm was changed through the fs API");
  assert.deepEqual(leaks, [], "fs calls reach the agent's (PID 1's) private /proc entries, which app's processes cannot");
});

dtest(d, "no fs method can write the read-only image, and the host's image copy stays untouched", async () => {
  const b = await box();
  const passwdBefore = await shOk(b, "sha256sum /etc/passwd");
  const attempts = {
    writeFile: () => b.fs.writeFile("/usr/bin/x", enc.encode("#!/bin/sh\n")),
    writeTextFile: () => b.fs.writeTextFile("/etc/passwd", "pwned\n"),
    appendPasswd: () => b.fs.writeTextFile("/etc/passwd", "evil::0:0::/:/bin/sh\n", { append: true }),
    mkdir: () => b.fs.mkdir("/usr/lib/evil"),
    remove: () => b.fs.remove("/usr/bin/ls"),
    removeRecursive: () => b.fs.remove("/usr/share", { recursive: true }),
    rename: () => b.fs.rename("/etc/passwd", "/tmp/passwd"),
    renameInto: () => b.fs.rename("/tmp", "/usr/tmp2"),
    chmod: () => b.fs.chmod("/etc/passwd", 0o666),
    chown: () => b.fs.chown("/etc/passwd", 1000, 1000),
    copyFile: () => b.fs.copyFile("/etc/hostname", "/etc/hostname2"),
    link: () => b.fs.link("/etc/passwd", "/usr/bin/passwd-link"),
    symlink: () => b.fs.symlink("/tmp/x", "/usr/bin/evil"),
    truncate: () => b.fs.truncate("/etc/passwd", 0),
    utime: () => b.fs.utime("/etc/passwd", 0, 0),
    create: () => b.fs.create("/usr/bin/created"),
    openWrite: () => b.fs.open("/etc/passwd", { write: true }),
    openAppend: () => b.fs.open("/etc/passwd", { append: true }),
    makeTempFile: () => b.fs.makeTempFile({ dir: "/usr/bin" }),
    makeTempDir: () => b.fs.makeTempDir({ dir: "/etc" }),
    streamed: () => b.fs.writeFile("/usr/bin/streamed", new ReadableStream({ pull: (c) => { c.enqueue(enc.encode("x")); c.close(); } })),
  };
  // Every attempt is made; the problems are reported together.
  const problems = [];
  for (const [what, fn] of Object.entries(attempts)) {
    const r = await fn().then((v) => ({ ok: true, v }), (e) => ({ ok: false, e }));
    if (r.ok && r.v?.close) await r.v.close();
    if (r.ok) problems.push(`${what}: SUCCEEDED on the read-only image`);
    else {
      try {
        assertFsError(r.e, { ...DENIED, what });
      } catch (e) {
        problems.push(e.message);
      }
    }
  }
  assert.equal(await shOk(b, "sha256sum /etc/passwd"), passwdBefore);
  for (const p of ["/usr/bin/x", "/usr/lib/evil", "/usr/tmp2", "/etc/hostname2", "/usr/bin/passwd-link", "/usr/bin/evil", "/usr/bin/created", "/usr/bin/streamed"]) {
    assert.equal(await shExists(b, p), false, `${p} exists inside after a refused call`);
  }
  assert.equal(await shExists(b, "/usr/bin/ls"), true);
  assert.deepEqual(problems, [], "fs calls on the read-only image did not fail with PermissionDenied");
  // The host-side image (the overlay's lower dir) has none of it either.
  const lower = /lowerdir=([^,]+)/.exec(await shOk(b, "grep ' / ' /proc/mounts | head -n1"))?.[1];
  for (const base of [lower, "/work/main/build/image/rootfs"].filter(Boolean)) {
    if (!existsSync(base)) continue;
    for (const p of ["usr/bin/x", "usr/lib/evil", "usr/bin/evil", "usr/bin/created", "etc/hostname2"]) {
      assert.equal(existsSync(`${base}/${p}`), false, `the host's image ${base} gained ${p}`);
    }
  }
});

dtest(d, "a writeFile racing a symlink swap stays inside the sandbox (directory and final component swapped)", async () => {
  const b = await box();
  const race = "/home/app/race";
  // Inside, make the same path as the host's race dir so the evil links have a (sandbox) target.
  await shOk(b, 'mkdir -p "$1/real" "$2" && ln -sfn real "$1/d" && : > "$1/f"', [race, hostRaceDir]);
  const evilDirs = [hostRaceDir, `/proc/1/root/../..${hostRaceDir}`, `../../../../../..${hostRaceDir}`];
  // Swapper: atomically flips $race/d between ./real and host-looking dirs, and
  // $race/f between a plain file and a link to the host's /root marker.
  const py = `
import os, sys, itertools
race = sys.argv[1]; evil = sys.argv[2:-1]; marker = sys.argv[-1]
open(race + "/ready", "w").close()
for i in itertools.count():
    t = race + "/d.tmp"
    try: os.unlink(t)
    except FileNotFoundError: pass
    os.symlink("real" if i % 2 == 0 else evil[(i // 2) % len(evil)], t)
    os.rename(t, race + "/d")
    u = race + "/f.tmp"
    try: os.unlink(u)
    except FileNotFoundError: pass
    if i % 2 == 0:
        open(u, "w").close()
    else:
        os.symlink(marker, u)
    os.rename(u, race + "/f")
`;
  const swapper = await b.spawn("python3", { args: ["-c", py, race, ...evilDirs, `/root/${marker}`], stdout: "null", stderr: "piped" });
  try {
    await waitFor(() => shExists(b, `${race}/ready`), { timeoutMs: 10_000, what: "the swapper to start" });
    let written = 0;
    for (let round = 0; round < 20; round++) {
      const res = await Promise.allSettled([
        ...Array.from({ length: 8 }, (_, k) => b.fs.writeTextFile(`${race}/d/w-${round}-${k}`, "raced\n")),
        b.fs.writeTextFile(`${race}/f`, "raced final\n"),
        b.fs.writeFile(`${race}/d/s-${round}`, new ReadableStream({ pull: (c) => { c.enqueue(enc.encode("streamed raced\n")); c.close(); } })),
        b.fs.mkdir(`${race}/d/m-${round}`).catch(() => {}),
        b.fs.copyFile("/etc/hostname", `${race}/d/c-${round}`),
      ]);
      res.forEach((r, k) => {
        if (r.status === "fulfilled") written += k < 8 ? 1 : 0;
        else assertFsError(r.reason, { what: "a raced fs call" });
      });
    }
    assert.ok(written > 0, "no raced write succeeded at all: the race was not exercised");
  } finally {
    await swapper.kill("SIGKILL").catch(() => {});
    await withTimeout(swapper.status, 10_000, "swapper exit").catch(() => {});
  }
  // The host's race dir got nothing; the host markers are intact.
  assert.deepEqual(readdirSync(hostRaceDir), [], `writes escaped to the host's ${hostRaceDir}`);
  for (const p of hostMarkers) assert.equal(readFileSync(p, "utf8"), HOST_CONTENT, `${p} on the host was overwritten through the raced link`);
  // Inside, the writes landed in the sandbox's own dirs.
  const inside = (await sh(b, 'ls "$1/real" "$2" 2>/dev/null | grep -c "^w-" || true', [race, hostRaceDir])).out.trim();
  assert.ok(Number(inside) > 0, `the raced writes are not inside the sandbox either (found ${inside})`);
});

dtest(d, "file handles are scoped: another connection or another sandbox cannot use a handle id", async () => {
  const b = await box();
  await b.fs.writeTextFile("/tmp/handle-secret", "only for the opener\n");
  const f = await b.fs.open("/tmp/handle-secret");
  const other = await d.create("a");
  const raws = [];
  try {
    // Find the handle id the SDK got, from the server's perspective: probe ids
    // on a raw connection to the same sandbox, and on one to another sandbox.
    const rawSame = await rawSession(d, b.id);
    const rawOther = await rawSession(d, other.id);
    raws.push(rawSame, rawOther);
    for (const raw of [rawSame, rawOther]) {
      for (let id = 0; id < 64; id++) {
        const r = await raw.call("fileRead", { fileHandleId: id, length: 100 });
        const data = r.result?.ok?.data;
        assert.ok(!data || !Buffer.from(data, "base64").toString().includes("only for the opener"), `handle ${id} of another connection was readable from ${raw === rawSame ? "a second connection to the same sandbox" : "another sandbox"}`);
        if (r.result?.ok === undefined) assertWireError(r, { what: `fileRead of foreign handle ${id}` });
      }
      // Closing foreign ids must not close the opener's handle.
      for (let id = 0; id < 64; id++) await raw.call("fileClose", { fileHandleId: id });
    }
    const buf = new Uint8Array(100);
    const nread = await f.read(buf);
    assert.equal(new TextDecoder().decode(buf.subarray(0, nread ?? 0)), "only for the opener\n", "the opener's handle was closed or moved by another connection");
  } finally {
    for (const r of raws) await r.close();
    await f.close().catch(() => {});
    await other.close();
  }
});

dtest(d, "a sandbox's fs calls cannot see or touch another sandbox's files", async () => {
  const b = await box();
  const other = await d.create("a");
  try {
    const secret = `other-${randomUUID()}`;
    await other.fs.writeTextFile(`/tmp/${secret}`, "theirs\n");
    await other.fs.writeTextFile(`/home/app/${secret}`, "theirs\n");
    for (const p of [`/tmp/${secret}`, `/home/app/${secret}`, `/proc/1/root/tmp/${secret}`]) {
      assert.equal(await tryRead(b, p), null, `sandbox A read sandbox B's ${p}`);
    }
    await b.fs.writeTextFile(`/tmp/${secret}`, "mine\n");
    assert.equal(await other.fs.readTextFile(`/tmp/${secret}`), "theirs\n", "A's write changed B's file");
    assert.equal(sha256(await b.fs.readFile(`/tmp/${secret}`)), sha256(Buffer.from("mine\n")));
  } finally {
    await other.close();
  }
});

dtest(d, "open handles are bounded per connection: opening hundreds fails cleanly, closing frees them, the daemon keeps serving", async () => {
  const b = await d.create("a");
  const handles = [];
  let refused = null;
  try {
    await b.fs.writeTextFile("/tmp/h", "h");
    for (let i = 0; i < 1100 && !refused; i++) {
      try {
        handles.push(await b.fs.open("/tmp/h"));
      } catch (e) {
        refused = e;
      }
    }
    assert.ok(refused, `1100 open() calls on one connection all succeeded: handles are not bounded per connection (WIRE.md §4.3)`);
    assertFsError(refused, { what: `open() number ${handles.length + 1}` });
    // Other calls still work while the connection is at its limit, and closing one handle frees a slot.
    assert.equal(await b.fs.readTextFile("/tmp/h"), "h");
    await handles.pop().close();
    handles.push(await withTimeout(b.fs.open("/tmp/h"), 10_000, "open after closing one handle"));
    assert.equal(await sh(b, "echo ok").then((r) => r.out), "ok\n");
  } finally {
    for (const h of handles) await h.close().catch(() => {});
    await b.close();
  }
  // A fresh connection gets its own budget.
  const c = await d.create("a");
  try {
    await c.fs.writeTextFile("/tmp/h", "h");
    const f = await c.fs.open("/tmp/h");
    await f.close();
  } finally {
    await c.close();
  }
});

dtest(d, "blocking fs calls (writer-less FIFOs, contended locks) cannot starve the sandbox's other fs calls", async () => {
  const b = await d.create("a");
  try {
    await shOk(b, "mkfifo /tmp/fifo && : > /tmp/lockme && echo fine > /tmp/other");
    const holder = await b.fs.open("/tmp/lockme", { read: true, write: true });
    await holder.lock(true);
    const pending = [];
    for (let i = 0; i < 24; i++) pending.push(b.fs.readFile("/tmp/fifo").then(() => "read", () => "refused"));
    for (let i = 0; i < 8; i++) pending.push(b.fs.copyFile("/tmp/fifo", `/tmp/copy-${i}`).then(() => "copied", () => "refused"));
    const waiters = [];
    for (let i = 0; i < 12; i++) {
      const f = await withTimeout(b.fs.open("/tmp/lockme", { read: true, write: true }), 10_000, `open ${i} while others block`);
      waiters.push(f);
      pending.push(f.lock(true).then(() => "locked", () => "refused"));
    }
    for (const p of pending) p.catch(() => {});
    // The sandbox's other fs calls still answer promptly.
    for (let i = 0; i < 5; i++) {
      assert.equal(await withTimeout(b.fs.readTextFile("/tmp/other"), 10_000, "readTextFile while 44 calls block"), "fine\n");
      assert.equal((await withTimeout(b.fs.stat("/tmp/other"), 10_000, "stat while 44 calls block")).size, 5);
      await withTimeout(b.fs.writeTextFile(`/tmp/w${i}`, "x"), 10_000, "writeTextFile while 44 calls block");
    }
    assert.equal(await withTimeout(sh(b, "echo ok").then((r) => r.out), 10_000, "a command while fs calls block"), "ok\n");
    await holder.unlock();
    for (const f of waiters) await f.close().catch(() => {});
    await holder.close();
  } finally {
    await withTimeout(b.close(), 15_000, "close() with blocked fs calls pending").catch(() => {});
  }
});

// Filesystem API conformance (WIRE.md §4.0, §4.2–§4.4): every sandbox.fs
// path method, FsFile handles, walk and expandGlob, through the unchanged
// SDK, with their error cases. Effects are checked twice: through the fs API
// and independently with coreutils inside the sandbox (stat, cat, ls...).
// Fixtures are mostly made with `sh` so a failure points at the method under
// test, not at the setup.
import assert from "node:assert/strict";
import { useDaemon, dtest, withTimeout } from "../lib/harness.mjs";
import {
  sh, shOk, shStat, shExists, q, sha256, enc, binaryPayload, all,
  expectFsError, assertFsError, rawSession, assertWireError,
  NOT_FOUND, EXISTS, DENIED, NOT_DIR, IS_DIR,
} from "../lib/fs-helpers.mjs";

const d = useDaemon({ orgs: ["a"] });
let sb; // one shared sandbox, made by the first test that needs it (see scratch)

const HOME = "/home/app";
let n = 0;
/** A fresh, empty directory under /home/app for one test (made with mkdir(1)). */
async function scratch(tag) {
  sb ??= await d.create("a");
  const dir = `${HOME}/fs-${++n}-${tag}`;
  await shOk(sb, 'mkdir -p -- "$1"', [dir]);
  return dir;
}

const UNI = "ünïcødé 文件.txt";

// --- read / write -----------------------------------------------------------

dtest(d, "writeTextFile/readTextFile: round trip, relative paths resolve in /home/app, new files are app's with mode 644", async () => {
  const dir = await scratch("text");
  const text = "héllo wörld\n文件 ✓\n";
  await sb.fs.writeTextFile(`${dir}/a.txt`, text);
  assert.equal(await sb.fs.readTextFile(`${dir}/a.txt`), text);
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/a.txt`]), text, "cat inside must see exactly what writeTextFile wrote");
  assert.equal(await shStat(sb, `${dir}/a.txt`, "%u:%g"), "1000:1000", "files created through the fs API must belong to app (uid/gid 1000)");
  assert.equal(await shStat(sb, `${dir}/a.txt`, "%a"), "644", "default mode with umask 022");
  assert.equal(await sb.sh`stat -c %a:%u ${`${dir}/a.txt`}`.text(), "644:1000\n", "the same through sandbox.sh");

  // Relative path: resolved against /home/app (WIRE.md §4.2).
  const rel = dir.slice(HOME.length + 1) + "/rel.txt";
  await sb.fs.writeTextFile(rel, "relative\n");
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/rel.txt`]), "relative\n", "a relative writeTextFile path must land under /home/app");
  assert.equal(await sb.fs.readTextFile(rel), "relative\n");

  // Unicode and spaces in the name.
  await sb.fs.writeTextFile(`${dir}/${UNI}`, "uni\n");
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/${UNI}`]), "uni\n");
  assert.equal(await sb.fs.readTextFile(`${dir}/${UNI}`), "uni\n");
  assert.equal((await shOk(sb, 'ls -- "$1"', [dir])).split("\n").filter(Boolean).sort().join("|"), ["a.txt", "rel.txt", UNI].sort().join("|"));

  // Overwrite truncates.
  await sb.fs.writeTextFile(`${dir}/a.txt`, "short");
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/a.txt`]), "short");
});

dtest(d, "readTextFile decodes invalid UTF-8 to U+FFFD instead of failing", async () => {
  const dir = await scratch("badutf8");
  await shOk(sb, `printf 'a\\377b' > "$1"`, [`${dir}/bad.txt`]);
  assert.equal(await sb.fs.readTextFile(`${dir}/bad.txt`), "a\uFFFDb");
});

dtest(d, "writeFile/readFile: every byte value round-trips exactly (sha256 inside agrees)", async () => {
  const dir = await scratch("bin");
  const data = binaryPayload(200_000);
  await sb.fs.writeFile(`${dir}/b.bin`, data);
  const back = await sb.fs.readFile(`${dir}/b.bin`);
  assert.ok(back instanceof Uint8Array, "readFile must resolve to a Uint8Array");
  assert.equal(back.length, data.length);
  assert.equal(sha256(back), sha256(data), "readFile returned different bytes");
  assert.equal((await shOk(sb, 'sha256sum -- "$1"', [`${dir}/b.bin`])).split(" ")[0], sha256(data), "sha256sum inside differs from what was written");
  assert.equal(await shStat(sb, `${dir}/b.bin`, "%s"), String(data.length));
  // A file written by a process is read back by the fs API byte for byte.
  await shOk(sb, 'head -c 70000 /dev/urandom > "$1"', [`${dir}/r.bin`]);
  const inside = (await shOk(sb, 'sha256sum -- "$1"', [`${dir}/r.bin`])).split(" ")[0];
  assert.equal(sha256(await sb.fs.readFile(`${dir}/r.bin`)), inside);
});

dtest(d, "zero-byte files: empty writeFile/writeTextFile, readFile/stat/sh agree", async () => {
  const dir = await scratch("empty");
  await sb.fs.writeFile(`${dir}/e.bin`, new Uint8Array(0));
  await sb.fs.writeTextFile(`${dir}/e.txt`, "");
  for (const f of ["e.bin", "e.txt"]) {
    assert.equal(await shStat(sb, `${dir}/${f}`, "%s:%F"), "0:regular empty file", `${f} inside`);
    const b = await sb.fs.readFile(`${dir}/${f}`);
    assert.ok(b instanceof Uint8Array && b.length === 0, `readFile of empty ${f} gave ${b?.length} bytes`);
    assert.equal(await sb.fs.readTextFile(`${dir}/${f}`), "");
    const st = await sb.fs.stat(`${dir}/${f}`);
    assert.equal(st.size, 0);
    assert.equal(st.isFile, true);
  }
  // Writing an empty file over a non-empty one truncates it.
  await shOk(sb, 'echo data > "$1"', [`${dir}/full`]);
  await sb.fs.writeFile(`${dir}/full`, new Uint8Array(0));
  assert.equal(await shStat(sb, `${dir}/full`, "%s"), "0");
});

dtest(d, "writeFile options: append, create:false, createNew, mode", async () => {
  const dir = await scratch("wopts");
  const f = `${dir}/log.txt`;
  await sb.fs.writeTextFile(f, "one\n");
  await sb.fs.writeTextFile(f, "two\n", { append: true });
  await sb.fs.writeFile(f, enc.encode("three\n"), { append: true });
  assert.equal(await shOk(sb, 'cat -- "$1"', [f]), "one\ntwo\nthree\n");

  // create:false on a missing file → NotFound, nothing created.
  const missing = `${dir}/nope.txt`;
  await expectFsError(sb.fs.writeTextFile(missing, "x", { create: false }), { ...NOT_FOUND, what: "writeTextFile create:false on a missing file" });
  assert.equal(await shExists(sb, missing), false, "create:false must not create the file");
  // create:false on an existing file writes it.
  await sb.fs.writeTextFile(f, "replaced\n", { create: false });
  assert.equal(await shOk(sb, 'cat -- "$1"', [f]), "replaced\n");

  // createNew on an existing file → AlreadyExists, content untouched.
  await expectFsError(sb.fs.writeTextFile(f, "clobber", { createNew: true }), { ...EXISTS, path: f, what: "writeTextFile createNew on an existing file" });
  await expectFsError(sb.fs.writeFile(f, enc.encode("clobber"), { createNew: true }), { ...EXISTS, what: "writeFile createNew on an existing file" });
  assert.equal(await shOk(sb, 'cat -- "$1"', [f]), "replaced\n", "a refused createNew must not touch the file");
  await sb.fs.writeTextFile(`${dir}/fresh.txt`, "new", { createNew: true });
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/fresh.txt`]), "new");

  // mode applies on creation.
  await sb.fs.writeTextFile(`${dir}/secret.txt`, "s", { mode: 0o600 });
  assert.equal(await shStat(sb, `${dir}/secret.txt`, "%a"), "600");
  await sb.fs.writeFile(`${dir}/exec.sh`, enc.encode("#!/bin/sh\necho ran\n"), { mode: 0o755 });
  assert.equal(await shStat(sb, `${dir}/exec.sh`, "%a"), "755");
  assert.equal(await shOk(sb, '"$1"', [`${dir}/exec.sh`]), "ran\n");
});

dtest(d, "readFile/readTextFile errors: missing → NotFound/ENOENT naming the path; a directory → IsADirectory/EISDIR", async () => {
  const dir = await scratch("rerr");
  const missing = `${dir}/does-not-exist.txt`;
  await expectFsError(sb.fs.readFile(missing), { ...NOT_FOUND, path: missing, what: "readFile of a missing file" });
  await expectFsError(sb.fs.readTextFile(missing), { ...NOT_FOUND, path: missing, what: "readTextFile of a missing file" });
  await expectFsError(sb.fs.readFile(`${dir}/no/such/dir/f`), { ...NOT_FOUND, what: "readFile below a missing directory" });
  await expectFsError(sb.fs.readFile(dir), { ...IS_DIR, what: "readFile of a directory" });
  // A file used as a directory component.
  await shOk(sb, 'echo x > "$1"', [`${dir}/plain`]);
  await expectFsError(sb.fs.readFile(`${dir}/plain/child`), { ...NOT_DIR, what: "readFile with a file as a path component" });
  // writeFile into a missing directory → NotFound.
  await expectFsError(sb.fs.writeTextFile(`${dir}/missing-dir/f.txt`, "x"), { ...NOT_FOUND, what: "writeTextFile into a missing directory" });
  // writeFile onto a directory → IsADirectory.
  await expectFsError(sb.fs.writeTextFile(dir, "x"), { ...IS_DIR, what: "writeTextFile onto a directory" });
});

dtest(d, "writes into the read-only image fail with PermissionDenied (EACCES) and change nothing", async () => {
  await scratch("ro");
  await expectFsError(sb.fs.writeFile("/usr/bin/x", enc.encode("x")), { ...DENIED, path: "/usr/bin/x", what: "writeFile /usr/bin/x" });
  await expectFsError(sb.fs.writeTextFile("/etc/passwd", "root::0:0::/:/bin/sh\n"), { ...DENIED, what: "writeTextFile /etc/passwd" });
  await expectFsError(sb.fs.writeTextFile("/etc/passwd", "x", { append: true }), { ...DENIED, what: "append to /etc/passwd" });
  assert.equal(await shExists(sb, "/usr/bin/x"), false);
  assert.match(await shOk(sb, "head -n1 /etc/passwd"), /^root:x:0:0:/, "/etc/passwd changed");
});

// --- directories ------------------------------------------------------------

dtest(d, "mkdir: plain, recursive, mode; existing → AlreadyExists; missing parent → NotFound; /usr → PermissionDenied", async () => {
  const dir = await scratch("mkdir");
  await sb.fs.mkdir(`${dir}/one`);
  assert.equal(await shStat(sb, `${dir}/one`, "%F:%u:%a"), "directory:1000:755");
  await expectFsError(sb.fs.mkdir(`${dir}/one`), { ...EXISTS, path: `${dir}/one`, what: "mkdir of an existing directory" });
  // recursive: nested, and an existing directory is fine.
  await sb.fs.mkdir(`${dir}/a/b/c d/${UNI}`, { recursive: true });
  assert.equal(await shStat(sb, `${dir}/a/b/c d/${UNI}`, "%F"), "directory");
  await sb.fs.mkdir(`${dir}/a/b`, { recursive: true });
  await sb.fs.mkdir(`${dir}/one`, { recursive: true });
  // non-recursive with a missing parent.
  await expectFsError(sb.fs.mkdir(`${dir}/x/y`), { ...NOT_FOUND, what: "mkdir with a missing parent" });
  assert.equal(await shExists(sb, `${dir}/x`), false);
  // mode
  await sb.fs.mkdir(`${dir}/private`, { mode: 0o700 });
  assert.equal(await shStat(sb, `${dir}/private`, "%a"), "700");
  // recursive over an existing *file* fails.
  await shOk(sb, 'echo > "$1"', [`${dir}/file`]);
  await expectFsError(sb.fs.mkdir(`${dir}/file`, { recursive: true }), { kind: ["AlreadyExists", "NotADirectory"], code: ["EEXIST", "ENOTDIR"], what: "mkdir -p over a file" });
  await expectFsError(sb.fs.mkdir(`${dir}/file`), { ...EXISTS, what: "mkdir over a file" });
  // the image is root's
  await expectFsError(sb.fs.mkdir("/usr/evil"), { ...DENIED, path: "/usr/evil", what: "mkdir /usr/evil" });
  await expectFsError(sb.fs.mkdir("/etc/evil/deeper", { recursive: true }), { ...DENIED, what: "mkdir -p /etc/evil/deeper" });
  assert.equal(await shExists(sb, "/usr/evil"), false);
});

dtest(d, "readDir: entries with types (unicode, spaces, symlinks, empty files); a file → NotADirectory; missing → NotFound", async () => {
  const dir = await scratch("readdir");
  await shOk(sb, `cd "$1" && mkdir sub 'with space' && : > empty && echo x > ${q(UNI)} && ln -s empty link && ln -s nowhere dangling && ln -s sub dirlink`, [dir]);
  const entries = await all(sb.fs.readDir(dir));
  const byName = Object.fromEntries(entries.map((e) => [e.name, e]));
  assert.deepEqual(Object.keys(byName).sort(), ["dangling", "dirlink", "empty", "link", "sub", UNI, "with space"].sort(), "readDir names (no . or ..)");
  const t = (e) => [e.isFile, e.isDirectory, e.isSymlink];
  assert.deepEqual(t(byName.sub), [false, true, false], "sub");
  assert.deepEqual(t(byName["with space"]), [false, true, false], "with space");
  assert.deepEqual(t(byName.empty), [true, false, false], "empty");
  assert.deepEqual(t(byName[UNI]), [true, false, false], UNI);
  // Symlinks are reported as symlinks, not followed (Deno.readDir semantics).
  assert.deepEqual(t(byName.link), [false, false, true], "link");
  assert.deepEqual(t(byName.dangling), [false, false, true], "dangling");
  assert.deepEqual(t(byName.dirlink), [false, false, true], "dirlink");
  for (const e of entries) assert.deepEqual(Object.keys(e).sort(), ["isDirectory", "isFile", "isSymlink", "name"]);
  // Agrees with ls -A.
  const ls = (await shOk(sb, 'ls -A -- "$1"', [dir])).split("\n").filter(Boolean).sort();
  assert.deepEqual(entries.map((e) => e.name).sort(), ls);
  // Empty directory.
  assert.deepEqual(await all(sb.fs.readDir(`${dir}/sub`)), []);
  // Errors.
  await expectFsError(all(sb.fs.readDir(`${dir}/empty`)), { ...NOT_DIR, what: "readDir of a file" });
  await expectFsError(all(sb.fs.readDir(`${dir}/missing`)), { ...NOT_FOUND, path: `${dir}/missing`, what: "readDir of a missing path" });
  // Through a symlink to a directory: lists the target.
  await shOk(sb, 'echo > "$1/sub/inner"', [dir]);
  assert.deepEqual((await all(sb.fs.readDir(`${dir}/dirlink`))).map((e) => e.name), ["inner"]);
});

dtest(d, "remove: file, empty dir, symlink (not its target); non-empty dir needs recursive; missing → NotFound", async () => {
  const dir = await scratch("remove");
  await shOk(sb, 'cd "$1" && echo a > f && mkdir empty && mkdir -p full/sub && echo b > full/sub/g && echo t > target && ln -s target link', [dir]);
  await sb.fs.remove(`${dir}/f`);
  assert.equal(await shExists(sb, `${dir}/f`), false);
  await sb.fs.remove(`${dir}/empty`);
  assert.equal(await shExists(sb, `${dir}/empty`), false);
  await sb.fs.remove(`${dir}/link`);
  assert.equal(await shExists(sb, `${dir}/link`), false, "the symlink must be gone");
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/target`]), "t\n", "remove of a symlink must not touch its target");
  // Non-empty directory without recursive: refused (ENOTEMPTY), nothing removed.
  const e = await expectFsError(sb.fs.remove(`${dir}/full`), { code: ["ENOTEMPTY", "EEXIST"], what: "remove of a non-empty directory without recursive" });
  assert.ok(!["NotFound", "PermissionDenied"].includes(e.constructor.name), `wrong class for ENOTEMPTY: ${e.constructor.name}`);
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/full/sub/g`]), "b\n", "a refused remove must not delete anything");
  await sb.fs.remove(`${dir}/full`, { recursive: true });
  assert.equal(await shExists(sb, `${dir}/full`), false);
  // Missing path.
  await expectFsError(sb.fs.remove(`${dir}/missing`), { ...NOT_FOUND, path: `${dir}/missing`, what: "remove of a missing path" });
  // recursive remove through a symlinked dir removes only the link.
  await shOk(sb, 'cd "$1" && mkdir keep && echo k > keep/k && ln -s keep keeplink', [dir]);
  await sb.fs.remove(`${dir}/keeplink`, { recursive: true });
  assert.equal(await shExists(sb, `${dir}/keeplink`), false);
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/keep/k`]), "k\n", "recursive remove of a symlink followed it");
  // The image.
  await expectFsError(sb.fs.remove("/usr/bin/bash"), { ...DENIED, what: "remove /usr/bin/bash" });
  await expectFsError(sb.fs.remove("/etc", { recursive: true }), { ...DENIED, what: "remove -r /etc" });
  assert.equal(await shExists(sb, "/usr/bin/bash"), true);
  assert.equal(await shExists(sb, "/etc/passwd"), true, "a refused recursive remove of /etc deleted files");
});

dtest(d, "rename: file, over an existing file, a directory, unicode names; missing source → NotFound", async () => {
  const dir = await scratch("rename");
  await shOk(sb, 'cd "$1" && echo a > a && echo b > b && mkdir d && echo in > d/in', [dir]);
  await sb.fs.rename(`${dir}/a`, `${dir}/${UNI}`);
  assert.equal(await shExists(sb, `${dir}/a`), false);
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/${UNI}`]), "a\n");
  await sb.fs.rename(`${dir}/${UNI}`, `${dir}/b`);
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/b`]), "a\n", "rename over an existing file must replace it");
  await sb.fs.rename(`${dir}/d`, `${dir}/d moved`);
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/d moved/in`]), "in\n");
  await expectFsError(sb.fs.rename(`${dir}/missing`, `${dir}/x`), { ...NOT_FOUND, what: "rename of a missing source" });
  await expectFsError(sb.fs.rename(`${dir}/b`, "/usr/bin/b"), { ...DENIED, what: "rename into /usr/bin" });
  assert.equal(await shExists(sb, `${dir}/b`), true, "a refused rename must keep the source");
});

// --- metadata ---------------------------------------------------------------

const FILEINFO_KEYS = ["atime", "birthtime", "blksize", "blocks", "ctime", "dev", "gid", "ino", "isBlockDevice", "isCharDevice", "isDirectory", "isFifo", "isFile", "isSocket", "isSymlink", "mode", "mtime", "nlink", "rdev", "size", "uid"];

function checkFileInfoShape(st, what) {
  for (const k of FILEINFO_KEYS) assert.ok(k in st, `${what}: FileInfo lacks ${k}`);
  for (const k of ["mtime", "atime", "birthtime", "ctime"]) assert.ok(st[k] instanceof Date && !Number.isNaN(st[k].getTime()), `${what}: ${k} must be a valid Date, got ${st[k]}`);
  for (const k of ["size", "dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "blksize", "blocks"]) assert.equal(typeof st[k], "number", `${what}: ${k}`);
  for (const k of ["isFile", "isDirectory", "isSymlink", "isBlockDevice", "isCharDevice", "isFifo", "isSocket"]) assert.equal(typeof st[k], "boolean", `${what}: ${k}`);
}

dtest(d, "stat/lstat: all 21 FileInfo keys, values agree with stat(1); stat follows symlinks, lstat does not", async () => {
  const dir = await scratch("stat");
  await shOk(sb, 'cd "$1" && head -c 12345 /dev/urandom > f && chmod 640 f && ln -s f link && ln -s nowhere dangling && mkfifo fifo', [dir]);
  const st = await sb.fs.stat(`${dir}/f`);
  checkFileInfoShape(st, "stat(f)");
  const [size, mode, ino, nlink, uid, gid, blocks, blksize, mtime, ctime, dev] = (await shStat(sb, `${dir}/f`, "%s %f %i %h %u %g %b %o %Y %Z %d")).split(" ");
  assert.equal(st.isFile, true);
  assert.equal(st.isDirectory, false);
  assert.equal(st.isSymlink, false);
  assert.equal(st.size, Number(size));
  assert.equal(st.mode, parseInt(mode, 16), `mode must be the full st_mode (type bits included): ${st.mode.toString(8)} vs ${parseInt(mode, 16).toString(8)}`);
  assert.equal(st.mode & 0o7777, 0o640);
  assert.equal(st.ino, Number(ino));
  assert.equal(st.nlink, Number(nlink));
  assert.equal(st.uid, 1000);
  assert.equal(st.gid, 1000);
  assert.equal(st.uid, Number(uid));
  assert.equal(st.gid, Number(gid));
  assert.equal(st.blocks, Number(blocks));
  assert.equal(st.blksize, Number(blksize));
  assert.equal(st.dev, Number(dev));
  assert.equal(Math.floor(st.mtime.getTime() / 1000), Number(mtime), "mtime");
  assert.equal(Math.floor(st.ctime.getTime() / 1000), Number(ctime), "ctime");
  assert.ok(Math.abs(st.mtime.getTime() - Date.now()) < 5 * 60_000, `mtime ${st.mtime.toISOString()} is not recent`);

  // stat follows, lstat does not.
  const viaLink = await sb.fs.stat(`${dir}/link`);
  assert.equal(viaLink.isFile, true);
  assert.equal(viaLink.ino, st.ino);
  const l = await sb.fs.lstat(`${dir}/link`);
  checkFileInfoShape(l, "lstat(link)");
  assert.equal(l.isSymlink, true);
  assert.equal(l.isFile, false);
  assert.equal(l.mode & 0o170000, 0o120000, "lstat mode must carry S_IFLNK");
  assert.equal(l.size, 1, "a symlink's size is the length of its target");
  assert.equal(l.ino, Number(await shStat(sb, `${dir}/link`, "%i")));
  // lstat of a plain file equals stat.
  assert.equal((await sb.fs.lstat(`${dir}/f`)).ino, st.ino);
  // Dangling: stat → NotFound, lstat fine.
  await expectFsError(sb.fs.stat(`${dir}/dangling`), { ...NOT_FOUND, what: "stat of a dangling symlink" });
  assert.equal((await sb.fs.lstat(`${dir}/dangling`)).isSymlink, true);
  // Directory, fifo, char device.
  const sd = await sb.fs.stat(dir);
  assert.equal(sd.isDirectory, true);
  assert.equal(sd.isFile, false);
  assert.equal(sd.mode & 0o170000, 0o040000);
  assert.equal((await sb.fs.stat(`${dir}/fifo`)).isFifo, true);
  const dn = await sb.fs.stat("/dev/null");
  assert.equal(dn.isCharDevice, true);
  assert.equal(dn.isFile, false);
  assert.ok(dn.rdev > 0, "rdev of /dev/null");
  // Missing, and the path named.
  await expectFsError(sb.fs.stat(`${dir}/missing`), { ...NOT_FOUND, path: `${dir}/missing`, what: "stat of a missing path" });
  await expectFsError(sb.fs.lstat(`${dir}/missing`), { ...NOT_FOUND, what: "lstat of a missing path" });
  // Relative path.
  assert.equal((await sb.fs.stat(dir.slice(HOME.length + 1) + "/f")).ino, st.ino, "relative stat must resolve in /home/app");
  assert.equal((await sb.fs.stat(".")).ino, Number(await shStat(sb, HOME, "%i")), "stat('.') must be /home/app");
});

dtest(d, "chmod: modes visible in stat(1) and FileInfo; missing → NotFound; root's file → PermissionDenied", async () => {
  const dir = await scratch("chmod");
  await shOk(sb, 'cd "$1" && echo > f && mkdir d', [dir]);
  for (const m of [0o751, 0o600, 0o4755, 0o000, 0o644]) {
    await sb.fs.chmod(`${dir}/f`, m);
    assert.equal(await shStat(sb, `${dir}/f`, "%a"), m.toString(8), `chmod ${m.toString(8)}`);
    assert.equal((await sb.fs.stat(`${dir}/f`)).mode & 0o7777, m);
  }
  await sb.fs.chmod(`${dir}/d`, 0o700);
  assert.equal(await shStat(sb, `${dir}/d`, "%a"), "700");
  await expectFsError(sb.fs.chmod(`${dir}/missing`, 0o644), { ...NOT_FOUND, what: "chmod of a missing path" });
  await expectFsError(sb.fs.chmod("/usr/bin/bash", 0o777), { ...DENIED, what: "chmod of root's /usr/bin/bash" });
  assert.equal(await shStat(sb, "/usr/bin/bash", "%a", { deref: true }), "755");
});

dtest(d, "chown: own ids and null are accepted; giving a file to root → PermissionDenied", async () => {
  const dir = await scratch("chown");
  await shOk(sb, 'echo > "$1"', [`${dir}/f`]);
  await sb.fs.chown(`${dir}/f`, 1000, 1000);
  await sb.fs.chown(`${dir}/f`, null, null);
  await sb.fs.chown(`${dir}/f`, null, 1000);
  assert.equal(await shStat(sb, `${dir}/f`, "%u:%g"), "1000:1000");
  await expectFsError(sb.fs.chown(`${dir}/f`, 0, null), { ...DENIED, what: "chown to uid 0" });
  await expectFsError(sb.fs.chown(`${dir}/f`, null, 0), { ...DENIED, what: "chgrp to gid 0" });
  await expectFsError(sb.fs.chown("/etc/passwd", 1000, 1000), { ...DENIED, what: "chown of root's /etc/passwd" });
  assert.equal(await shStat(sb, `${dir}/f`, "%u:%g"), "1000:1000");
  assert.equal(await shStat(sb, "/etc/passwd", "%u:%g"), "0:0");
  await expectFsError(sb.fs.chown(`${dir}/missing`, 1000, 1000), { ...NOT_FOUND, what: "chown of a missing path" });
});

dtest(d, "copyFile: content and permissions, overwrite; missing source → NotFound; into /usr → PermissionDenied", async () => {
  const dir = await scratch("copy");
  await shOk(sb, 'cd "$1" && head -c 300000 /dev/urandom > src && chmod 750 src && echo old > dst', [dir]);
  const want = (await shOk(sb, 'sha256sum -- "$1"', [`${dir}/src`])).split(" ")[0];
  await sb.fs.copyFile(`${dir}/src`, `${dir}/${UNI}`);
  assert.equal((await shOk(sb, 'sha256sum -- "$1"', [`${dir}/${UNI}`])).split(" ")[0], want);
  assert.equal(await shStat(sb, `${dir}/${UNI}`, "%a:%u"), "750:1000", "copyFile copies permissions (Deno semantics); the copy is app's");
  assert.notEqual(await shStat(sb, `${dir}/${UNI}`, "%i"), await shStat(sb, `${dir}/src`, "%i"), "a copy, not a link");
  await sb.fs.copyFile(`${dir}/src`, `${dir}/dst`);
  assert.equal((await shOk(sb, 'sha256sum -- "$1"', [`${dir}/dst`])).split(" ")[0], want, "copyFile must overwrite");
  // An empty file.
  await shOk(sb, ': > "$1"', [`${dir}/zero`]);
  await sb.fs.copyFile(`${dir}/zero`, `${dir}/zero2`);
  assert.equal(await shStat(sb, `${dir}/zero2`, "%s"), "0");
  await expectFsError(sb.fs.copyFile(`${dir}/missing`, `${dir}/x`), { ...NOT_FOUND, what: "copyFile of a missing source" });
  assert.equal(await shExists(sb, `${dir}/x`), false);
  await expectFsError(sb.fs.copyFile(`${dir}/src`, "/usr/bin/copied"), { ...DENIED, what: "copyFile into /usr/bin" });
  // Copying a file app may read from the image works.
  await sb.fs.copyFile("/etc/passwd", `${dir}/passwd`);
  assert.equal(await shOk(sb, 'cmp -- /etc/passwd "$1" && echo same', [`${dir}/passwd`]), "same\n");
});

dtest(d, "link: hard link shares the inode (nlink 2); existing path → AlreadyExists; missing → NotFound", async () => {
  const dir = await scratch("link");
  await shOk(sb, 'echo one > "$1"', [`${dir}/orig`]);
  await sb.fs.link(`${dir}/orig`, `${dir}/hard`);
  assert.equal(await shStat(sb, `${dir}/hard`, "%i:%h"), `${await shStat(sb, `${dir}/orig`, "%i")}:2`);
  assert.equal((await sb.fs.stat(`${dir}/orig`)).nlink, 2);
  await shOk(sb, 'echo two >> "$1"', [`${dir}/orig`]);
  assert.equal(await sb.fs.readTextFile(`${dir}/hard`), "one\ntwo\n");
  await expectFsError(sb.fs.link(`${dir}/orig`, `${dir}/hard`), { ...EXISTS, what: "link onto an existing path" });
  await expectFsError(sb.fs.link(`${dir}/missing`, `${dir}/h2`), { ...NOT_FOUND, what: "link of a missing target" });
});

dtest(d, "symlink/readLink/realPath: targets kept verbatim, realPath canonical; errors", async () => {
  const dir = await scratch("symlink");
  await shOk(sb, 'cd "$1" && mkdir -p real/sub && echo x > real/sub/f', [dir]);
  await sb.fs.symlink("real/sub/f", `${dir}/rel-link`);
  await sb.fs.symlink(`${dir}/real`, `${dir}/abs link`, { type: "dir" });
  await sb.fs.symlink("does/not/exist", `${dir}/dangling`);
  await sb.fs.symlink(UNI, `${dir}/uni-link`, { type: "file" });
  assert.equal(await shOk(sb, 'readlink -- "$1"', [`${dir}/rel-link`]), "real/sub/f\n");
  assert.equal(await shOk(sb, 'readlink -- "$1"', [`${dir}/abs link`]), `${dir}/real\n`);
  assert.equal(await shOk(sb, 'readlink -- "$1"', [`${dir}/uni-link`]), `${UNI}\n`);
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/rel-link`]), "x\n");
  assert.equal(await shStat(sb, `${dir}/rel-link`, "%u"), "1000", "symlinks made through the fs API belong to app");
  assert.equal(await sb.fs.readLink(`${dir}/rel-link`), "real/sub/f");
  assert.equal(await sb.fs.readLink(`${dir}/abs link`), `${dir}/real`);
  assert.equal(await sb.fs.readLink(`${dir}/dangling`), "does/not/exist");
  assert.equal(await sb.fs.readLink(`${dir}/uni-link`), UNI);
  // realPath: absolute, canonical, symlinks and .. resolved.
  assert.equal(await sb.fs.realPath(`${dir}/rel-link`), `${dir}/real/sub/f`);
  assert.equal(await sb.fs.realPath(`${dir}/abs link/sub/../sub/./f`), `${dir}/real/sub/f`);
  assert.equal(await sb.fs.realPath("."), HOME, "realPath('.') must be the working directory /home/app");
  assert.equal(await sb.fs.realPath(dir.slice(HOME.length + 1)), dir);
  assert.equal(await sb.fs.realPath("/"), "/");
  // Errors.
  await expectFsError(sb.fs.symlink("x", `${dir}/rel-link`), { ...EXISTS, what: "symlink onto an existing path" });
  await expectFsError(sb.fs.realPath(`${dir}/dangling`), { ...NOT_FOUND, what: "realPath of a dangling symlink" });
  await expectFsError(sb.fs.realPath(`${dir}/missing`), { ...NOT_FOUND, what: "realPath of a missing path" });
  await expectFsError(sb.fs.readLink(`${dir}/missing`), { ...NOT_FOUND, what: "readLink of a missing path" });
  // readLink of a non-symlink: EINVAL (TypeError per WIRE.md §2.4, or Error).
  const e = await expectFsError(sb.fs.readLink(`${dir}/real/sub/f`), { kind: ["TypeError", "Error"], what: "readLink of a regular file" });
  assert.ok(e.code === undefined || e.code === "EINVAL", `readLink of a regular file: code ${e.code}`);
  await expectFsError(sb.fs.symlink("x", "/usr/bin/evil-link"), { ...DENIED, what: "symlink in /usr/bin" });
});

dtest(d, "truncate: shrink, extend with zeros, default length 0; missing → NotFound; root's file → PermissionDenied", async () => {
  const dir = await scratch("truncate");
  await shOk(sb, 'printf hello-world > "$1"', [`${dir}/f`]);
  await sb.fs.truncate(`${dir}/f`, 5);
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/f`]), "hello");
  await sb.fs.truncate(`${dir}/f`, 8);
  assert.equal(await shOk(sb, 'od -An -c -- "$1" | tr -s " "', [`${dir}/f`]), " h e l l o \\0 \\0 \\0\n");
  await sb.fs.truncate(`${dir}/f`);
  assert.equal(await shStat(sb, `${dir}/f`, "%s"), "0");
  await expectFsError(sb.fs.truncate(`${dir}/missing`, 1), { ...NOT_FOUND, what: "truncate of a missing file" });
  await expectFsError(sb.fs.truncate("/etc/passwd", 0), { ...DENIED, what: "truncate of /etc/passwd" });
  assert.notEqual(await shStat(sb, "/etc/passwd", "%s"), "0");
});

dtest(d, "utime: Dates and numbers (the SDK sends new Date(n)), visible in stat(1) and FileInfo; missing → NotFound", async () => {
  const dir = await scratch("utime");
  await shOk(sb, 'echo > "$1"', [`${dir}/f`]);
  const atime = new Date("2001-02-03T04:05:06.000Z");
  const mtime = new Date("2002-03-04T05:06:07.250Z");
  await sb.fs.utime(`${dir}/f`, atime, mtime);
  assert.equal(await shStat(sb, `${dir}/f`, "%X %Y"), `${atime.getTime() / 1000} ${Math.floor(mtime.getTime() / 1000)}`);
  const st = await sb.fs.stat(`${dir}/f`);
  assert.equal(st.mtime.getTime(), mtime.getTime(), "mtime must keep millisecond precision");
  assert.equal(st.atime.getTime(), atime.getTime());
  // Numbers: the SDK turns them into Dates with `new Date(n)` before sending
  // (WIRE.md §4.2), i.e. milliseconds — unlike Deno.utime's seconds. The wire
  // only ever carries Dates, so the server cannot tell.
  await sb.fs.utime(`${dir}/f`, 1_000_000_000_000, 1_000_000_001_000);
  assert.equal(await shStat(sb, `${dir}/f`, "%X %Y"), "1000000000 1000000001");
  await expectFsError(sb.fs.utime(`${dir}/missing`, atime, mtime), { ...NOT_FOUND, what: "utime of a missing path" });
  await expectFsError(sb.fs.utime("/etc/passwd", atime, mtime), { ...DENIED, what: "utime of root's /etc/passwd" });
});

dtest(d, "umask: reads without changing, sets and returns the previous mask, governs fs API creations", async () => {
  const box = await d.create("a");
  try {
    const dir = `${HOME}/umask`;
    assert.equal(await box.fs.umask(), 0o022, "initial umask");
    assert.equal(await box.fs.umask(), 0o022, "umask() without a mask must not change it");
    assert.equal(await box.fs.umask(0o077), 0o022, "umask(m) returns the previous mask");
    assert.equal(await box.fs.umask(), 0o077);
    await box.fs.mkdir(dir);
    await box.fs.writeTextFile(`${dir}/f`, "x");
    assert.equal(await shStat(box, dir, "%a"), "700", "mkdir under umask 077");
    assert.equal(await shStat(box, `${dir}/f`, "%a"), "600", "writeTextFile under umask 077");
    assert.equal(await box.fs.umask(0o022), 0o077);
    await box.fs.writeTextFile(`${dir}/g`, "x");
    assert.equal(await shStat(box, `${dir}/g`, "%a"), "644");
  } finally {
    await box.close();
  }
});

dtest(d, "makeTempDir/makeTempFile: unique, in /tmp by default, honour dir/prefix/suffix, 700/600 and app's", async () => {
  const dir = await scratch("tmp");
  const t1 = await sb.fs.makeTempDir();
  const t2 = await sb.fs.makeTempDir();
  assert.notEqual(t1, t2);
  for (const t of [t1, t2]) {
    assert.match(t, /^\/tmp\/[^/]+$/, `default temp dir ${t} must be directly in /tmp`);
    assert.equal(await shStat(sb, t, "%F:%u:%a"), "directory:1000:700");
  }
  const f1 = await sb.fs.makeTempFile();
  assert.match(f1, /^\/tmp\/[^/]+$/);
  assert.equal(await shStat(sb, f1, "%F:%u:%a:%s"), "regular empty file:1000:600:0");
  const withOpts = await sb.fs.makeTempDir({ dir, prefix: "pre-", suffix: "-suf" });
  assert.ok(withOpts.startsWith(`${dir}/pre-`) && withOpts.endsWith("-suf"), `makeTempDir with options gave ${withOpts}`);
  assert.equal(await shStat(sb, withOpts, "%F"), "directory");
  const fOpts = await sb.fs.makeTempFile({ dir, prefix: "ü ", suffix: ".txt" });
  assert.ok(fOpts.startsWith(`${dir}/ü `) && fOpts.endsWith(".txt"), `makeTempFile with options gave ${fOpts}`);
  assert.equal(await shStat(sb, fOpts, "%F"), "regular empty file");
  const many = await Promise.all(Array.from({ length: 10 }, () => sb.fs.makeTempFile({ dir })));
  assert.equal(new Set(many).size, 10, "concurrent makeTempFile calls must return distinct paths");
  await expectFsError(sb.fs.makeTempDir({ dir: `${dir}/missing` }), { ...NOT_FOUND, what: "makeTempDir in a missing dir" });
  await expectFsError(sb.fs.makeTempFile({ dir: "/usr" }), { ...DENIED, what: "makeTempFile in /usr" });
});

// --- file handles -----------------------------------------------------------

dtest(d, "FsFile: create, write, seek (number and bigint), read to EOF, stat, truncate, sync, utime, close", async () => {
  const dir = await scratch("fsfile");
  const path = `${dir}/h ${UNI}`;
  const f = await sb.fs.create(path);
  try {
    const data = enc.encode("0123456789abcdef");
    assert.equal(await f.write(data), data.length);
    assert.equal(await f.seek(0, 1), 16, "seek(0, Current) after writing 16 bytes");
    assert.equal(await f.seek(2, 0), 2);
    const buf = new Uint8Array(4);
    assert.equal(await f.read(buf), 4);
    assert.equal(new TextDecoder().decode(buf), "2345");
    assert.equal(await f.seek(3, 1), 9, "seek Current");
    assert.equal(await f.seek(-4, 2), 12, "seek End");
    const rest = new Uint8Array(100);
    assert.equal(await f.read(rest), 4);
    assert.equal(new TextDecoder().decode(rest.subarray(0, 4)), "cdef");
    assert.equal(await f.read(rest), null, "read at EOF must resolve to null");
    assert.equal(await f.seek(5n, 0), 5, "seek with a bigint offset");
    const st = await f.stat();
    checkFileInfoShape(st, "FsFile.stat");
    assert.equal(st.size, 16);
    assert.equal(st.isFile, true);
    assert.equal(st.uid, 1000);
    await f.sync();
    await f.syncData();
    await f.truncate(10);
    assert.equal((await f.stat()).size, 10);
    assert.equal(await shStat(sb, path, "%s"), "10");
    await f.truncate();
    assert.equal(await shStat(sb, path, "%s"), "0", "FsFile.truncate() without a length empties the file");
    await f.write(enc.encode("again"));
    const mtime = new Date("2010-01-01T00:00:00.000Z");
    await f.utime(mtime, mtime);
    assert.equal(await shStat(sb, path, "%Y"), String(mtime.getTime() / 1000));
  } finally {
    await f.close();
  }
  // create() truncates and the file is app's 644 (Deno: read+write+create+truncate).
  assert.equal(await shStat(sb, path, "%u:%a"), "1000:644");
  const g = await sb.fs.create(path);
  await g.close();
  assert.equal(await shStat(sb, path, "%s"), "0", "create() of an existing file must truncate it");
  // After close the handle is gone.
  await expectFsError(f.read(new Uint8Array(4)), { what: "read on a closed FsFile" });
  await expectFsError(sb.fs.create(`${dir}/missing/x`), { ...NOT_FOUND, what: "create in a missing directory" });
  await expectFsError(sb.fs.create("/usr/bin/created"), { ...DENIED, what: "create in /usr/bin" });
});

dtest(d, "FsFile via open(): read-only default, write/append/createNew/create:false semantics", async () => {
  const dir = await scratch("open");
  await shOk(sb, 'printf base > "$1"', [`${dir}/f`]);
  // No options ⇒ read-only: reads work, writes fail and change nothing.
  const ro = await sb.fs.open(`${dir}/f`);
  try {
    const buf = new Uint8Array(16);
    assert.equal(await ro.read(buf), 4);
    await expectFsError(ro.write(enc.encode("nope")), { what: "write on a read-only handle" });
  } finally {
    await ro.close();
  }
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/f`]), "base");
  // append
  const ap = await sb.fs.open(`${dir}/f`, { append: true });
  await ap.write(enc.encode("+more"));
  await ap.close();
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/f`]), "base+more");
  // write without truncate overwrites in place
  const wr = await sb.fs.open(`${dir}/f`, { write: true });
  await wr.write(enc.encode("BA"));
  await wr.close();
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/f`]), "BAse+more");
  // write + truncate
  const tr = await sb.fs.open(`${dir}/f`, { write: true, truncate: true });
  await tr.close();
  assert.equal(await shStat(sb, `${dir}/f`, "%s"), "0");
  // createNew
  await expectFsError(sb.fs.open(`${dir}/f`, { write: true, createNew: true }), { ...EXISTS, what: "open createNew on an existing file" });
  const cn = await sb.fs.open(`${dir}/new`, { write: true, createNew: true, mode: 0o600 });
  await cn.close();
  assert.equal(await shStat(sb, `${dir}/new`, "%a:%u"), "600:1000");
  // missing without create
  await expectFsError(sb.fs.open(`${dir}/missing`), { ...NOT_FOUND, path: `${dir}/missing`, what: "open of a missing file" });
  await expectFsError(sb.fs.open(`${dir}/missing`, { write: true }), { ...NOT_FOUND, what: "open write of a missing file without create" });
  assert.equal(await shExists(sb, `${dir}/missing`), false);
  // Seeking before the start is refused (EINVAL); past the end and writing makes a hole.
  const sk = await sb.fs.open(`${dir}/new`, { read: true, write: true });
  const e = await expectFsError(sk.seek(-1, 0), { kind: ["TypeError", "Error"], what: "seek to -1" });
  assert.ok(e.code === undefined || e.code === "EINVAL", `seek to -1: code ${e.code}`);
  assert.equal(await sk.seek(10, 0), 10);
  await sk.write(enc.encode("Z"));
  await sk.close();
  assert.equal(await shOk(sb, 'od -An -c -- "$1" | tr -s " "', [`${dir}/new`]), " \\0 \\0 \\0 \\0 \\0 \\0 \\0 \\0 \\0 \\0 Z\n");
  // root's files
  await expectFsError(sb.fs.open("/etc/passwd", { write: true }), { ...DENIED, what: "open /etc/passwd for writing" });
  const pw = await sb.fs.open("/etc/passwd", { read: true });
  const buf = new Uint8Array(5);
  assert.equal(await pw.read(buf), 5);
  assert.equal(new TextDecoder().decode(buf), "root:");
  await pw.close();
  // A directory can be opened read-only but not read as a file.
  await expectFsError(sb.fs.open(dir, { write: true }), { ...IS_DIR, what: "open a directory for writing" });
});

dtest(d, "FsFile.readable / FsFile.writable stream whole files byte-exactly", async () => {
  const dir = await scratch("fsstreams");
  await shOk(sb, 'head -c 1000000 /dev/urandom > "$1"', [`${dir}/src`]);
  const want = (await shOk(sb, 'sha256sum -- "$1"', [`${dir}/src`])).split(" ")[0];
  const r = await sb.fs.open(`${dir}/src`);
  const parts = [];
  for await (const c of r.readable) parts.push(Buffer.from(c));
  await r.close();
  const got = Buffer.concat(parts);
  assert.equal(got.length, 1_000_000);
  assert.equal(sha256(got), want, "FsFile.readable bytes differ from the file");
  // writable: pipe the bytes back into a new file.
  const w = await sb.fs.create(`${dir}/dst`);
  const chunks = [got.subarray(0, 1), got.subarray(1, 70_000), got.subarray(70_000, 700_000), got.subarray(700_000)].map((b) => new Uint8Array(b));
  await new ReadableStream({
    pull(c) {
      const x = chunks.shift();
      if (x) c.enqueue(x);
      else c.close();
    },
  }).pipeTo(w.writable, { preventClose: true });
  await w.close();
  assert.equal((await shOk(sb, 'sha256sum -- "$1"', [`${dir}/dst`])).split(" ")[0], want, "FsFile.writable wrote different bytes");
  // Text through the writable (Deno doc example).
  const t = await sb.fs.open(`${dir}/text`, { write: true, create: true });
  await ReadableStream.from(["hello", " ", "world"]).pipeThrough(new TextEncoderStream()).pipeTo(t.writable, { preventClose: true });
  await t.close();
  assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/text`]), "hello world");
  // A zero-byte file's readable ends at once.
  await shOk(sb, ': > "$1"', [`${dir}/zero`]);
  const z = await sb.fs.open(`${dir}/zero`);
  const zparts = [];
  for await (const c of z.readable) zparts.push(c);
  await z.close();
  assert.equal(zparts.reduce((s, c) => s + c.length, 0), 0);
});

dtest(d, "FsFile.lock/unlock: an exclusive lock excludes flock(1) until unlocked; shared locks coexist", async () => {
  const dir = await scratch("lock");
  const path = `${dir}/lockfile`;
  await shOk(sb, ': > "$1"', [path]);
  const probe = async () => (await sh(sb, 'flock -n -x "$1" true', [path])).code === 0;
  assert.equal(await probe(), true, "flock(1) must succeed on an unlocked file");
  const a = await sb.fs.open(path, { read: true, write: true });
  const b = await sb.fs.open(path, { read: true, write: true });
  try {
    await withTimeout(a.lock(true), 10_000, "exclusive lock on a free file");
    assert.equal(await probe(), false, "flock -n -x succeeded while the fs API held an exclusive lock");
    // A second handle blocks on the exclusive lock until the first unlocks.
    let bLocked = false;
    const bLock = b.lock(true).then(() => {
      bLocked = true;
    });
    // The daemon must keep serving other calls while b.lock() waits (WIRE.md §2.7).
    assert.equal(await withTimeout(sb.fs.readTextFile("/etc/hostname").then(() => "served"), 10_000, "a call while a lock waits"), "served");
    assert.equal(bLocked, false, "a second exclusive lock was granted while the first was held");
    await a.unlock();
    await withTimeout(bLock, 10_000, "the waiting lock after unlock");
    assert.equal(await probe(), false, "b's exclusive lock must exclude flock(1)");
    await b.unlock();
    assert.equal(await probe(), true, "unlock must release the lock");
    // Shared locks coexist with each other and with flock -s, but exclude -x.
    await withTimeout(a.lock(false), 10_000, "shared lock a");
    await withTimeout(b.lock(), 10_000, "shared lock b (default is shared)");
    assert.equal((await sh(sb, 'flock -n -s "$1" true', [path])).code, 0, "a shared flock(1) must coexist with shared locks");
    assert.equal(await probe(), false, "an exclusive flock(1) must fail while shared locks are held");
  } finally {
    await a.close();
    await b.close();
  }
  assert.equal(await probe(), true, "closing the handles must release their locks");
});

dtest(d, "awkward names (newline, quotes, backslash, tab, emoji, leading dash) survive write/readDir/stat/walk/expandGlob", async () => {
  const dir = await scratch("names");
  const names = ["line\nbreak", 'dq"uote', "sq'uote", "back\\slash", "tab\there", "emoji 😀 🧪", "-leading-dash", " lead space", "trail space ", "%s %n $HOME `x`"];
  for (const name of names) await sb.fs.writeTextFile(`${dir}/${name}`, name);
  // Independently: python lists the names and contents.
  const listed = JSON.parse(await shOk(sb, `python3 -c 'import os,sys,json; d=sys.argv[1]; print(json.dumps({n: open(os.path.join(d,n)).read() for n in os.listdir(d)}))' "$1"`, [dir]));
  assert.deepEqual(Object.keys(listed).sort(), [...names].sort(), "names on disk differ from the names written");
  for (const name of names) assert.equal(listed[name], name, `content of ${JSON.stringify(name)}`);
  assert.deepEqual((await all(sb.fs.readDir(dir))).map((e) => e.name).sort(), [...names].sort(), "readDir names");
  for (const name of names) {
    assert.equal((await sb.fs.stat(`${dir}/${name}`)).size, Buffer.byteLength(name), `stat ${JSON.stringify(name)}`);
    assert.equal(await sb.fs.readTextFile(`${dir}/${name}`), name);
  }
  const walked = await withTimeout(all(sb.fs.walk(dir, { includeDirs: false })), 20_000, "walk over awkward names");
  assert.deepEqual(walked.map((e) => e.name).sort(), [...names].sort(), "walk must carry one whole entry per record, whatever the names contain");
  for (const e of walked) assert.equal(e.path, `${dir}/${e.name}`);
  const globbed = await withTimeout(all(sb.fs.expandGlob("*", { root: dir })), 20_000, "expandGlob over awkward names");
  assert.deepEqual(globbed.map((e) => e.name).sort(), [...names].sort());
  // A name over NAME_MAX is refused with an fs error, not a crash.
  const long = "x".repeat(300);
  await expectFsError(sb.fs.writeTextFile(`${dir}/${long}`, "x"), { code: "ENAMETOOLONG", what: "writeTextFile with a 300-byte name" });
  assert.equal(await sb.fs.readTextFile(`${dir}/${names[0]}`), names[0], "the connection must keep working");
});

// --- walk / expandGlob ------------------------------------------------------

async function walkTree() {
  const root = await scratch("walk");
  await shOk(sb, 'cd "$1" && echo a > a.txt && echo b > b.md && mkdir -p sub/deep skipme && echo c > sub/c.txt && echo d > sub/deep/d.txt && echo e > skipme/e.txt && ln -s a.txt link-to-a', [root]);
  return root;
}
const rels = (root, entries) => entries.map((e) => (e.path === root ? "." : e.path.slice(root.length + 1))).sort();

dtest(d, "walk: root first, pre-order, entry shape, symlinks reported not followed; missing → NotFound", async () => {
  const root = await walkTree();
  const entries = await withTimeout(all(sb.fs.walk(root)), 20_000, "walk");
  assert.deepEqual(rels(root, entries), [".", "a.txt", "b.md", "link-to-a", "skipme", "skipme/e.txt", "sub", "sub/c.txt", "sub/deep", "sub/deep/d.txt"]);
  assert.equal(entries[0].path, root, "the root must come first (fs.download relies on it)");
  assert.deepEqual(entries[0], { path: root, name: root.split("/").pop(), isFile: false, isDirectory: true, isSymlink: false });
  // Every directory precedes its contents.
  const seen = new Set();
  for (const e of entries) {
    if (e.path !== root) assert.ok(seen.has(e.path.slice(0, e.path.lastIndexOf("/"))), `${e.path} came before its directory`);
    seen.add(e.path);
    assert.deepEqual(Object.keys(e).sort(), ["isDirectory", "isFile", "isSymlink", "name", "path"]);
    assert.equal(e.name, e.path.split("/").pop());
  }
  const by = Object.fromEntries(entries.map((e) => [e.path.slice(root.length + 1), e]));
  assert.deepEqual([by["a.txt"].isFile, by["a.txt"].isDirectory, by["a.txt"].isSymlink], [true, false, false]);
  assert.deepEqual([by.sub.isFile, by.sub.isDirectory, by.sub.isSymlink], [false, true, false]);
  assert.deepEqual([by["link-to-a"].isFile, by["link-to-a"].isDirectory, by["link-to-a"].isSymlink], [false, false, true]);
  await expectFsError(all(sb.fs.walk(`${root}/missing`)), { ...NOT_FOUND, what: "walk of a missing root" });
});

dtest(d, "walk options: maxDepth, includeFiles/Dirs/Symlinks, exts, match, skip, followSymlinks", async () => {
  const root = await walkTree();
  const w = async (opts) => rels(root, await withTimeout(all(sb.fs.walk(root, opts)), 20_000, `walk ${JSON.stringify(opts)}`));
  assert.deepEqual(await w({ maxDepth: 0 }), ["."]);
  assert.deepEqual(await w({ maxDepth: 1 }), [".", "a.txt", "b.md", "link-to-a", "skipme", "sub"]);
  assert.deepEqual(await w({ includeDirs: false }), ["a.txt", "b.md", "link-to-a", "skipme/e.txt", "sub/c.txt", "sub/deep/d.txt"]);
  assert.deepEqual(await w({ includeFiles: false }), [".", "link-to-a", "skipme", "sub", "sub/deep"]);
  assert.deepEqual(await w({ includeSymlinks: false, includeDirs: false }), ["a.txt", "b.md", "skipme/e.txt", "sub/c.txt", "sub/deep/d.txt"]);
  assert.deepEqual(await w({ exts: [".txt"] }), ["a.txt", "skipme/e.txt", "sub/c.txt", "sub/deep/d.txt"]);
  assert.deepEqual(await w({ exts: ["md"] }), ["b.md"], "an ext without a leading dot gets one");
  assert.deepEqual(await w({ match: [/deep/] }), ["sub/deep", "sub/deep/d.txt"]);
  assert.deepEqual(await w({ skip: [/skipme/] }), [".", "a.txt", "b.md", "link-to-a", "sub", "sub/c.txt", "sub/deep", "sub/deep/d.txt"]);
  assert.deepEqual(await w({ skip: [/\.TXT$/i], includeDirs: false }), ["b.md", "link-to-a"], "regex flags must survive the wire");
  // followSymlinks: the link to a.txt is followed (canonicalized to a.txt's path).
  const followed = await withTimeout(all(sb.fs.walk(root, { followSymlinks: true, includeDirs: false })), 20_000, "walk followSymlinks");
  assert.equal(followed.filter((e) => e.isSymlink).length <= 1, true);
  assert.equal(followed.some((e) => e.path === `${root}/link-to-a`), false, "with followSymlinks and canonicalize the link must be reported under its target's path");
  assert.equal(followed.filter((e) => e.path === `${root}/a.txt`).length, 2, "a.txt is reached directly and through the followed link");
  // canonicalize:false keeps the path under the link's name.
  const kept = await withTimeout(all(sb.fs.walk(root, { followSymlinks: true, canonicalize: false, includeDirs: false })), 20_000, "walk followSymlinks canonicalize:false");
  assert.ok(kept.some((e) => e.path === `${root}/link-to-a`), `with canonicalize:false the followed link keeps its own path: ${JSON.stringify(kept.map((e) => e.path))}`);
});

dtest(d, "walk terminates on symlink loops (default and followSymlinks)", async () => {
  const root = await scratch("loops");
  await shOk(sb, 'cd "$1" && mkdir -p a/b && echo f > a/b/f && ln -s . self-dir && ln -s .. a/up && ln -s ../.. a/b/upup && ln -s self self && ln -s y x && ln -s x y', [root]);
  const cap = 5_000;
  const bounded = async (opts) => {
    const out = [];
    for await (const e of sb.fs.walk(root, opts)) {
      out.push(e);
      if (out.length > cap) break;
    }
    return out;
  };
  const plain = await withTimeout(bounded({}), 20_000, "walk over symlink loops");
  assert.deepEqual(rels(root, plain), [".", "a", "a/b", "a/b/f", "a/b/upup", "a/up", "self", "self-dir", "x", "y"]);
  for (const name of ["self", "self-dir", "x", "y", "a/up", "a/b/upup"]) {
    const e = plain.find((x) => x.path === `${root}/${name}`);
    assert.equal(e.isSymlink, true, `${name} must be reported as a symlink`);
  }
  // Following symlinks into loops: must end, either with an error (e.g. ELOOP /
  // FilesystemLoop) or with a finite listing — never spin forever.
  let res;
  try {
    res = await withTimeout(bounded({ followSymlinks: true }), 30_000, "walk followSymlinks over symlink loops");
  } catch (e) {
    if (/no result within/.test(e.message)) throw e;
    assertFsError(e, { what: "walk followSymlinks over loops" });
    res = null;
  }
  if (res) assert.ok(res.length <= cap, `walk followSymlinks yielded more than ${cap} entries: it does not terminate`);
  // The connection is still healthy.
  assert.equal(await sb.fs.readTextFile(`${root}/a/b/f`), "f\n");
});

dtest(d, "expandGlob: *, **, root, relative globs, includeDirs, caseInsensitive; absent prefix → empty", async () => {
  const root = await walkTree();
  const g = async (glob, opts = {}) => (await withTimeout(all(sb.fs.expandGlob(glob, opts)), 20_000, `expandGlob ${glob}`)).map((e) => e.path);
  assert.deepEqual(await g("*.txt", { root }), [`${root}/a.txt`]);
  assert.deepEqual(await g(`${root}/*`, { includeDirs: false }), [`${root}/a.txt`, `${root}/b.md`, `${root}/link-to-a`]);
  assert.deepEqual(await g(`${root}/*`), [`${root}/a.txt`, `${root}/b.md`, `${root}/link-to-a`, `${root}/skipme`, `${root}/sub`], "results are sorted");
  assert.deepEqual((await g(`${root}/**/*.txt`)).sort(), [`${root}/a.txt`, `${root}/skipme/e.txt`, `${root}/sub/c.txt`, `${root}/sub/deep/d.txt`]);
  assert.deepEqual((await g("**/*.txt", { root, exclude: ["skipme"] })).sort(), [`${root}/a.txt`, `${root}/sub/c.txt`, `${root}/sub/deep/d.txt`]);
  assert.deepEqual((await g(`${root}/**/*.txt`, { exclude: [`${root}/skipme`] })).sort(), [`${root}/a.txt`, `${root}/sub/c.txt`, `${root}/sub/deep/d.txt`], "absolute glob with an absolute exclude");
  // Relative glob without root: resolved against /home/app.
  assert.deepEqual(await g(`${root.slice(HOME.length + 1)}/*.md`), [`${root}/b.md`]);
  assert.deepEqual(await g("*.TXT", { root, caseInsensitive: true }), [`${root}/a.txt`]);
  assert.deepEqual(await g("*.TXT", { root }), []);
  assert.deepEqual(await g(`${root}/no-such-dir/*.txt`), [], "a missing fixed prefix yields nothing, not an error");
  const entries = await all(sb.fs.expandGlob("sub/deep", { root }));
  assert.deepEqual(entries, [{ path: `${root}/sub/deep`, name: "deep", isFile: false, isDirectory: true, isSymlink: false }]);
});

// --- wire ---------------------------------------------------------------------

dtest(d, "wire: errors the SDK rebuilds as plain Error in Node still carry the exact constructorName and code", async () => {
  const dir = await scratch("wire");
  await shOk(sb, 'echo > "$1/file"', [dir]);
  const raw = await rawSession(d, sb.id);
  try {
    assertWireError(await raw.call("readDir", { path: `${dir}/file` }), { constructorName: "NotADirectory", code: "ENOTDIR", what: "readDir of a file" });
    assertWireError(await raw.call("readFile", { path: dir }), { constructorName: "IsADirectory", code: "EISDIR", what: "readFile of a directory" });
    const nf = assertWireError(await raw.call("stat", { path: `${dir}/missing` }), { constructorName: "NotFound", code: "ENOENT", what: "stat of a missing path" });
    assert.ok(nf.message.includes(`${dir}/missing`), `the message must name the path: ${nf.message}`);
    assertWireError(await raw.call("mkdir", { path: dir }), { constructorName: "AlreadyExists", code: "EEXIST", what: "mkdir existing" });
    assertWireError(await raw.call("writeFile", { path: "/usr/bin/x", content: "eA==" }), { constructorName: "PermissionDenied", code: ["EACCES", "EPERM"], what: "writeFile /usr/bin/x" });
    // ok envelopes: `null` results carry the ok key.
    const ok = await raw.call("mkdir", { path: `${dir}/made` });
    assert.deepEqual(ok.result, { ok: null }, `mkdir must answer {"ok":null}: ${JSON.stringify(ok)}`);
    // truncate takes `name`, not `path` (WIRE.md §4.2).
    await shOk(sb, 'printf 12345 > "$1"', [`${dir}/t`]);
    assert.deepEqual((await raw.call("truncate", { name: `${dir}/t`, length: 2 })).result, { ok: null });
    assert.equal(await shOk(sb, 'cat -- "$1"', [`${dir}/t`]), "12");
    // fileSeek accepts a decimal string offset (a JS bigint on the wire).
    const h = await raw.call("open", { path: `${dir}/t`, options: { read: true } });
    const id = h.result?.ok?.fileHandleId;
    assert.equal(typeof id, "number", `open: ${JSON.stringify(h)}`);
    assert.deepEqual((await raw.call("fileSeek", { fileHandleId: id, offset: "1", whence: 0 })).result, { ok: { position: 1 } });
    assert.deepEqual((await raw.call("fileRead", { fileHandleId: id, length: 10 })).result, { ok: { data: Buffer.from("2").toString("base64") } });
    assert.deepEqual((await raw.call("fileRead", { fileHandleId: id, length: 10 })).result, { ok: { data: null } }, "EOF must be data:null");
    assert.deepEqual((await raw.call("fileClose", { fileHandleId: id })).result, { ok: null });
  } finally {
    await raw.close();
  }
});

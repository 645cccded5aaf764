// Helpers for the filesystem suites (tests/conformance/fs*.test.mjs,
// tests/security/fs*.test.mjs): error-class checks that follow WIRE.md §2.4,
// shell probes inside the sandbox, byte-exact tree manifests (local and
// in-sandbox), stream builders, and a raw JSON-RPC session on a secondary
// connection for wire-level checks the SDK hides.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join, relative } from "node:path";
import { register } from "node:module";
import { Deno } from "@deno/shim-deno";
import { rawUpgrade, recorder, rpc } from "./rawws.mjs";
import { withTimeout } from "./harness.mjs";

export { Deno };

// Node will not load `*.test.mjs.pending` (unknown extension). While the fs
// suites are pending, run them with this file preloaded:
//   node --import ./tests/lib/fs-helpers.mjs --test tests/conformance/fs*.test.mjs.pending tests/security/fs*.test.mjs.pending
// The hook only treats `.mjs.pending` URLs as ES modules and is registered
// only in processes started for such a file.
if (process.argv.some((a) => a.endsWith(".mjs.pending"))) {
  register(
    "data:text/javascript," +
      encodeURIComponent('export async function load(url, context, next) { return next(url, url.endsWith(".mjs.pending") ? { ...context, format: "module" } : context); }'),
  );
}

export const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");
export const enc = new TextEncoder();
export const dec = new TextDecoder();

/** Single-quotes `s` for bash (also safe for unicode and spaces). */
export const q = (s) => `'${String(s).replace(/'/g, `'"'"'`)}'`;

/**
 * Runs a bash script in `sb` as app; returns {code, out, err} without
 * throwing. Extra positional args become $1, $2, ... (no quoting needed).
 */
export async function sh(sb, script, args = []) {
  const child = await sb.spawn("bash", { args: ["-c", script, "bash", ...args], stdout: "piped", stderr: "piped" });
  const o = await child.output();
  return { code: o.status.code, out: o.stdoutText ?? "", err: o.stderrText ?? "" };
}

/** Like `sh` but the script must succeed; returns stdout. */
export async function shOk(sb, script, args = []) {
  const r = await sh(sb, script, args);
  assert.equal(r.code, 0, `in-sandbox script failed (code ${r.code}): ${script}\nstdout: ${r.out}\nstderr: ${r.err}`);
  return r.out;
}

/** `stat -c <fmt> -- path` inside the sandbox (no symlink following unless `deref`). */
export async function shStat(sb, path, fmt, { deref = false } = {}) {
  return (await shOk(sb, `stat ${deref ? "-L " : ""}-c "$1" -- "$2"`, [fmt, path])).trim();
}

/** True if `path` exists inside (test -e, or -L for a symlink). */
export async function shExists(sb, path) {
  return (await sh(sb, 'test -e "$1" || test -L "$1"', [path])).code === 0;
}

// --- errors (WIRE.md §2.4) ------------------------------------------------

/**
 * Classes the SDK can only rebuild where the runtime has them: in Node with
 * @deno/shim-deno 0.18 these fall back to a plain `Error` (the wire's
 * constructorName is lost; `code` survives).
 */
const FALLBACK_KINDS = new Set(["WouldBlock", "NotSupported", "FilesystemLoop", "IsADirectory", "NetworkUnreachable", "NotADirectory", "NotCapable"]);

function describe(err) {
  if (!(err instanceof Error)) return `non-Error ${JSON.stringify(err)}`;
  return `${err.constructor?.name} (name ${err.name}, code ${JSON.stringify(err.code)}): ${err.message}`;
}

/**
 * Asserts `err` is what the SDK builds from an fs ErrorObject of class
 * `kind` with errno name `code` (string or list of accepted names). `path`
 * (string or list) must appear in the message when given.
 * kind "Error" = plain Error (for errnos without a class: ENOTEMPTY, EROFS...),
 * kind "TypeError" = TypeError (EINVAL / bad arguments).
 */
export function assertFsError(err, { kind, code, path, what = "operation" } = {}) {
  assert.ok(err instanceof Error, `${what}: expected an Error, got ${describe(err)}`);
  if (err.constructor?.name === "RpcError") {
    assert.fail(`${what}: JSON-RPC-level error instead of an fs error in result.error: RpcError ${err.code} ${err.message}` + (err.code === -32601 ? " (fs method not implemented by the daemon)" : ""));
  }
  if (err.constructor?.name === "ConnectionClosedError") assert.fail(`${what}: the connection closed: ${describe(err)}`);
  if (err.constructor?.name === "ZodError") assert.fail(`${what}: the reply failed the SDK's schema validation: ${err.message.slice(0, 800)}`);
  if (kind) {
    const kinds = Array.isArray(kind) ? kind : [kind];
    const ok = kinds.some((k) => {
      if (k === "Error") return err.constructor === Error;
      if (k === "TypeError") return err.constructor === TypeError;
      const C = Deno.errors?.[k];
      if (C) return err instanceof C && err.constructor.name === k;
      // Not in this runtime: the SDK falls back to a plain Error.
      return FALLBACK_KINDS.has(k) && err.constructor === Error;
    });
    assert.ok(ok, `${what}: expected error class ${kinds.join("/")} (WIRE.md §2.4), got ${describe(err)}`);
  }
  if (code !== undefined) {
    const codes = Array.isArray(code) ? code : [code];
    assert.ok(codes.includes(err.code), `${what}: expected err.code ${codes.join("/")}, got ${describe(err)}`);
  }
  if (path !== undefined) {
    const paths = Array.isArray(path) ? path : [path];
    for (const p of paths) assert.ok(err.message.includes(p), `${what}: the message must name the path ${JSON.stringify(p)}: ${describe(err)}`);
  }
  return err;
}

/** Expects `p` to reject with an fs error as in `assertFsError`; returns it. */
export async function expectFsError(p, opts = {}) {
  let err;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  if (err === undefined) assert.fail(`${opts.what ?? "operation"}: expected ${[opts.kind].flat().join("/") || "an error"} ${opts.code ? `(${[opts.code].flat().join("/")})` : ""} but it succeeded`);
  return assertFsError(err, opts);
}

export const NOT_FOUND = { kind: "NotFound", code: "ENOENT" };
export const EXISTS = { kind: "AlreadyExists", code: "EEXIST" };
export const DENIED = { kind: "PermissionDenied", code: ["EACCES", "EPERM"] };
export const NOT_DIR = { kind: "NotADirectory", code: "ENOTDIR" };
export const IS_DIR = { kind: "IsADirectory", code: "EISDIR" };

// --- data and streams ----------------------------------------------------

/** Every byte value, then `n` random bytes. */
export function binaryPayload(n = 4096) {
  const all = new Uint8Array(256 + n);
  for (let i = 0; i < 256; i++) all[i] = i;
  all.set(randomBytes(n), 256);
  return all;
}

/** A ReadableStream<Uint8Array> that yields `chunks` in order (empty chunks included). */
export function streamOf(chunks) {
  let i = 0;
  return new ReadableStream({
    pull(c) {
      if (i < chunks.length) c.enqueue(chunks[i++]);
      else c.close();
    },
  });
}

/** Collects a ReadableStream<Uint8Array> into one Buffer. */
export async function collect(stream) {
  const parts = [];
  for await (const c of stream) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

/** Collects an async iterable into an array. */
export async function all(it) {
  const out = [];
  for await (const x of it) out.push(x);
  return out;
}

// --- tree manifests ------------------------------------------------------

/**
 * Manifest of a local tree: sorted [rel, type, detail] with type "dir",
 * "file" (detail = sha256 + size) or "symlink" (detail = link text).
 */
export function localManifest(root) {
  const out = [];
  const visit = (dir) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      const rel = relative(root, p);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out.push([rel, "symlink", readlinkSync(p)]);
      else if (st.isDirectory()) {
        out.push([rel, "dir", null]);
        visit(p);
      } else out.push([rel, "file", `${sha256(readFileSync(p))}:${st.size}`]);
    }
  };
  visit(root);
  return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

const PY_MANIFEST = `
import os, sys, json, hashlib
root = sys.argv[1]
out = []
uids = set()
for dp, dns, fns in os.walk(root):
    for n in dns + fns:
        p = os.path.join(dp, n)
        rel = os.path.relpath(p, root)
        st = os.lstat(p)
        uids.add(st.st_uid)
        if os.path.islink(p):
            out.append([rel, "symlink", os.readlink(p)])
        elif os.path.isdir(p):
            out.append([rel, "dir", None])
        else:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for b in iter(lambda: f.read(1 << 20), b""):
                    h.update(b)
            out.append([rel, "file", "%s:%d" % (h.hexdigest(), st.st_size)])
uids.add(os.lstat(root).st_uid)
out.sort(key=lambda e: e[0].encode("utf-8", "surrogateescape"))
print(json.dumps({"entries": out, "uids": sorted(uids)}))
`;

/**
 * The same manifest computed inside the sandbox by python3 (independent of
 * the fs API), plus the set of owner uids seen (root included).
 */
export async function sandboxManifest(sb, root) {
  const child = await sb.spawn("python3", { args: ["-c", PY_MANIFEST, root], stdout: "piped", stderr: "piped" });
  const o = await child.output();
  assert.equal(o.status.code, 0, `manifest of ${root} inside failed: ${o.stderrText}`);
  const j = JSON.parse(o.stdoutText);
  // Sort the same way as localManifest (UTF-16 code unit order; names here are BMP).
  j.entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return j;
}

// --- raw wire ------------------------------------------------------------

/**
 * A secondary raw connection to sandbox `id`, for checks on the wire shape
 * (constructorName the SDK cannot rebuild in Node, handle scoping).
 * call() resolves to the whole JSON-RPC response object.
 */
export async function rawSession(d, id, org = "a") {
  const res = await rawUpgrade(d.url, `/api/v3/sandbox/${id}/connect`, { token: d.tokens[org] });
  assert.equal(res.ok, true, `raw connect to ${id} failed: ${res.status} ${res.body}`);
  const rec = recorder(res.ws);
  let nextId = 0;
  return {
    ws: res.ws,
    rec,
    async call(method, params = {}, ms = 15_000) {
      const id = nextId++;
      res.ws.send(rpc(id, method, params));
      const m = await rec.next((x) => x.json && x.json.id === id && ("result" in x.json || "error" in x.json), ms, `reply to ${method}`);
      return m.json;
    },
    async close() {
      res.ws.close();
      await withTimeout(rec.closed, 10_000, "raw connection close").catch(() => {});
    },
  };
}

/** Asserts a raw reply is `result.error` with the given constructorName/code; returns the ErrorObject. */
export function assertWireError(reply, { constructorName, code, what = "call" }) {
  assert.equal(reply.error, undefined, `${what}: JSON-RPC-level error ${JSON.stringify(reply.error)} instead of result.error`);
  const e = reply.result?.error;
  assert.ok(e && typeof e === "object", `${what}: expected result.error, got ${JSON.stringify(reply).slice(0, 500)}`);
  if (constructorName) {
    const names = [constructorName].flat();
    assert.ok(names.includes(e.constructorName), `${what}: constructorName ${JSON.stringify(e.constructorName)}, expected ${names.join("/")} (${JSON.stringify(e)})`);
  }
  if (code) assert.ok([code].flat().includes(e.code), `${what}: code ${JSON.stringify(e.code)}, expected ${[code].flat().join("/")}`);
  assert.equal(typeof e.message, "string");
  return e;
}

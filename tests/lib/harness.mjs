// Test harness for the node suites (conformance, security, leak): starts one
// sandboxd per test file on a free port with a fresh data dir, creates one
// org token per org, and tears everything down afterwards.
//
// Contract:
//   const d = useDaemon({ orgs: ["a", "b"] });   // at module top level
//   dtest("name", async (t) => { ... d.opts("a") ... });
// `useDaemon` registers node:test before/after hooks; the returned object is
// filled in by the `before` hook. `dtest` wraps `test` with a timeout and, on
// failure, prints the tail of the daemon's stderr log so a red test comes with
// the daemon's view of what happened.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, after, test } from "node:test";
import { Sandbox, Client } from "@deno/sandbox";

export const SANDBOXD_BIN = process.env.SANDBOXD_BIN ?? "/work/main/build/bin/sandboxd";
/**
 * The --isolation of every daemon (unless a test passes its own): SANDBOXD_ISOLATION
 * (namespaces, microvm, auto), else namespaces, so that a host where KVM works (auto
 * would pick microvm there) runs the same suites as every other.
 */
export const ISOLATION = process.env.SANDBOXD_ISOLATION || "namespaces";
/** Every harness data dir starts with this; the leak suite looks for leftovers. */
export const TMP_PREFIX = "sbxd-test-";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `fn` until it returns a truthy value or `timeoutMs` passes. Returns
 * the value; throws (with `what` and the last value/error) on timeout.
 */
export async function waitFor(fn, { timeoutMs = 10_000, intervalMs = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      lastErr = undefined;
      if (last) return last;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(last)}` +
          (lastErr ? `; last error: ${lastErr?.stack ?? lastErr}` : ""),
      );
    }
    await sleep(intervalMs);
  }
}

/** Rejects if `p` does not settle within `ms` (so a hang is a failure, not a stall). */
export function withTimeout(p, ms, what) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`${what}: no result within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function runBin(args, { timeoutMs = 30_000 } = {}) {
  return execFileSync(SANDBOXD_BIN, args, {
    encoding: "utf8",
    timeout: timeoutMs,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** A random /22 inside 10.128.0.0/9, for one daemon's sandbox links. */
export function randomNetRange() {
  const a = 128 + Math.floor(Math.random() * 128);
  const b = Math.floor(Math.random() * 64) * 4;
  return `10.${a}.${b}.0/22`;
}

export class Daemon {
  constructor() {
    this.dataDir = null;
    this.logPath = null;
    this.url = null;
    this.port = null;
    // With --ingress-listen: "sandboxd ingress on http(s)://HOST:PORT" and, with the
    // local CA, "sandboxd ingress CA certificate: PATH".
    this.ingressUrl = null;
    this.ingressPort = null;
    this.ingressCa = null;
    this.sshPort = null; // with --ssh-listen: the SSH gateway's port ("sandboxd ssh on HOST:PORT")
    this.proc = null;
    this.tokens = {};
    this.exited = null; // promise resolving to {code, signal}
    this.tracked = new Set(); // SDK Sandbox objects to close at the end
  }

  /** Starts the daemon. Tokens are created first so a daemon that caches tokens at start-up sees them. */
  async start({ orgs = ["a"], extraArgs = [], startTimeoutMs = 30_000, restart = false } = {}) {
    if (!existsSync(SANDBOXD_BIN)) throw new Error(`sandboxd binary not found at ${SANDBOXD_BIN} (set SANDBOXD_BIN)`);
    if (!restart) {
      this.dataDir = mkdtempSync(join(tmpdir(), TMP_PREFIX));
      // Owner marker: lets the leak suite tell a leftover dir of a dead run from one in use.
      writeFileSync(join(this.dataDir, ".harness-owner"), JSON.stringify({ pid: process.pid, started: Date.now() }));
      this.logPath = join(this.dataDir, "sandboxd.log");
      for (const org of orgs) this.tokens[org] = this.createToken(org);
    } else if (this.isRunning()) {
      throw new Error("restart: the daemon is still running");
    }

    const logFd = openSync(this.logPath, "a");
    // Daemons running side by side need disjoint sandbox address ranges: a
    // random /22 in 10.128.0.0/9 (kept across restarts of this daemon).
    if (!this.netRange) this.netRange = randomNetRange();
    const netArgs = extraArgs.includes("--net-range") ? [] : ["--net-range", this.netRange];
    if (!extraArgs.includes("--isolation")) netArgs.push("--isolation", ISOLATION);
    this.proc = spawn(SANDBOXD_BIN, ["serve", "--listen", "127.0.0.1:0", "--data-dir", this.dataDir, ...netArgs, ...extraArgs], {
      stdio: ["ignore", "pipe", logFd],
    });
    closeSync(logFd);
    // Safety net: if this test process dies without running `after`, do not
    // leave a daemon (and its sandboxes) behind; SIGTERM lets it clean up.
    const onExit = () => {
      if (this.isRunning()) this.proc.kill("SIGTERM");
    };
    process.once("exit", onExit);
    this.exited = new Promise((resolve) => this.proc.once("exit", (code, signal) => resolve({ code, signal })));

    const wantSsh = extraArgs.includes("--ssh-listen");
    this.url = await new Promise((resolve, reject) => {
      let buf = "";
      const timer = setTimeout(() => reject(new Error(`sandboxd did not print its listen line within ${startTimeoutMs} ms\n${this.logTail()}`)), startTimeoutMs);
      const onData = (chunk) => {
        buf += chunk.toString("utf8");
        const m = /sandboxd listening on (http:\/\/127\.0\.0\.1:(\d+))/.exec(buf);
        const ingressOk = this.parseIngress(buf, extraArgs);
        const ssh = /sandboxd ssh on \S+:(\d+)\n/.exec(buf);
        if (ssh) this.sshPort = Number(ssh[1]);
        if (m && ingressOk && (!wantSsh || ssh)) {
          clearTimeout(timer);
          this.port = Number(m[2]);
          resolve(m[1]);
        }
      };
      this.proc.stdout.on("data", onData);
      this.proc.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`sandboxd exited during start-up (code ${code}, signal ${signal})\n${this.logTail()}`));
      });
      this.proc.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    // Keep draining stdout so the daemon never blocks on a full pipe.
    this.proc.stdout.on("data", () => {});
    return this;
  }

  /** Reads the ingress lines from the daemon's stdout so far; true once all expected ones are there. */
  parseIngress(buf, extraArgs) {
    if (!extraArgs.includes("--ingress-listen")) return true;
    const m = /sandboxd ingress on ((https?):\/\/[^\s]+:(\d+))\n/.exec(buf);
    if (!m) return false;
    this.ingressUrl = m[1];
    this.ingressPort = Number(m[3]);
    const ca = /sandboxd ingress CA certificate: (\S+)\n/.exec(buf);
    if (ca) this.ingressCa = ca[1];
    return m[2] === "http" || extraArgs.includes("--ingress-tls-cert") || !!ca;
  }

  /** Creates an org token with the CLI; the token is the last non-empty line of stdout. */
  createToken(org) {
    const out = runBin(["token", "create", "--org", org, "--data-dir", this.dataDir]);
    const lines = out.split("\n").map((l) => l.trim()).filter(Boolean);
    const tok = lines.at(-1);
    if (!tok || !tok.startsWith("ddo_")) throw new Error(`token create --org ${org} printed no ddo_ token: ${JSON.stringify(out)}`);
    return tok;
  }

  /** SDK options for `org` (token + both endpoints), merged with `extra`. */
  opts(org = "a", extra = {}) {
    const token = this.tokens[org];
    if (!token) throw new Error(`no token for org ${org}`);
    return { token, sandboxEndpoint: this.url, apiEndpoint: this.url, ...extra };
  }

  /** Sandbox.create with org credentials; the sandbox is closed at the end of the file if still open. */
  async create(org = "a", options = {}) {
    const sb = await Sandbox.create(this.opts(org, options));
    this.tracked.add(sb);
    return sb;
  }

  async connect(id, org = "a", options = {}) {
    const sb = await Sandbox.connect({ id, ...this.opts(org, options) });
    this.tracked.add(sb);
    return sb;
  }

  client(org = "a") {
    return new Client({ token: this.tokens[org], apiEndpoint: this.url });
  }

  async list(org = "a", labels) {
    return await this.client(org).sandboxes.list(labels ? { labels } : {});
  }

  /** Status ("running"/"stopped") of `id` as the org sees it, or undefined if not listed. */
  async statusOf(id, org = "a") {
    const all = await this.list(org);
    return all.find((s) => s.id === id)?.status;
  }

  async waitStatus(id, status, { org = "a", timeoutMs = 10_000 } = {}) {
    return await waitFor(async () => (await this.statusOf(id, org)) === status, {
      timeoutMs,
      what: `sandbox ${id} to be listed as ${status}`,
    });
  }

  /** Raw HTTP against the daemon (for REST checks the SDK does not expose). */
  async fetch(path, { org = "a", token, method = "GET", headers = {}, body } = {}) {
    const h = { ...headers };
    const tok = token ?? this.tokens[org];
    if (tok) h.authorization = `Bearer ${tok}`;
    return await fetch(this.url + path, { method, headers: h, body });
  }

  isRunning() {
    return this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  logTail(lines = 60) {
    try {
      const text = readFileSync(this.logPath, "utf8").split("\n");
      return `--- sandboxd stderr (last ${lines} lines of ${this.logPath}) ---\n` + text.slice(-lines).join("\n");
    } catch {
      return "(no daemon log)";
    }
  }

  /** Closes tracked SDK sandboxes (bounded), so no keepalive timer keeps the test process alive. */
  async closeTracked() {
    await Promise.allSettled(
      [...this.tracked].map((sb) => withTimeout(sb.close(), 5_000, "close").catch(() => {})),
    );
    this.tracked.clear();
  }

  /**
   * SIGTERM, then wait (bounded) for exit. Returns {code, signal, forced}.
   * `forced` is true when the daemon ignored SIGTERM for `graceMs` and had to be SIGKILLed.
   */
  async stop({ graceMs = 20_000 } = {}) {
    if (!this.proc) return { code: null, signal: null, forced: false };
    let forced = false;
    if (this.isRunning()) {
      this.proc.kill("SIGTERM");
      let timer;
      const res = await Promise.race([
        this.exited,
        new Promise((r) => {
          timer = setTimeout(() => r(null), graceMs);
        }),
      ]);
      clearTimeout(timer);
      if (res === null) {
        forced = true;
        this.proc.kill("SIGKILL");
      }
    }
    const res = await this.exited;
    return { ...res, forced };
  }

  /** Mount points at or below the data dir (from /proc/self/mountinfo, octal-escapes decoded). */
  mountsUnderDataDir() {
    if (!this.dataDir) return [];
    return mountPoints().filter((m) => m === this.dataDir || m.startsWith(this.dataDir + "/"));
  }

  /**
   * Removes the data dir. Never recurse through a live mount: if the daemon
   * left mounts behind, detach them first (deepest first) so `rm` cannot reach
   * into a bind-mounted host directory. Returns the list of mounts found.
   */
  cleanupDataDir() {
    if (!this.dataDir) return [];
    const left = this.mountsUnderDataDir();
    for (const m of [...left].sort((a, b) => b.length - a.length)) {
      try {
        execFileSync("umount", ["-l", m], { stdio: "ignore" });
      } catch {}
    }
    if (this.mountsUnderDataDir().length === 0) rmSync(this.dataDir, { recursive: true, force: true });
    return left;
  }
}

/** Decoded mount points of this mount namespace. */
export function mountPoints() {
  const text = readFileSync("/proc/self/mountinfo", "utf8");
  return text
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(" ")[4].replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8))));
}

/**
 * Registers before/after hooks that start a daemon for this test file and
 * stop it afterwards. The after hook fails the file if the daemon had crashed
 * or ignored SIGTERM.
 */
export function useDaemon(startOpts = {}) {
  const d = new Daemon();
  before(async () => {
    // A function lets the file prepare things first (e.g. a fake upstream whose flags the daemon needs).
    await d.start(typeof startOpts === "function" ? await startOpts() : startOpts);
  });
  after(async () => {
    await d.closeTracked();
    // A start-up failure was already reported by `before`; only a crash after start counts here.
    const crashed = d.url && d.proc && !d.isRunning() ? { code: d.proc.exitCode, signal: d.proc.signalCode } : null;
    const res = await d.stop();
    const tail = d.logTail();
    const leftMounts = d.cleanupDataDir();
    if (crashed) throw new Error(`sandboxd died during the suite (code ${crashed.code}, signal ${crashed.signal})\n${tail}`);
    if (res.forced) throw new Error(`sandboxd did not exit within 20 s of SIGTERM (had to SIGKILL)\n${tail}`);
    if (leftMounts.length) throw new Error(`sandboxd left mounts under its data dir after SIGTERM: ${leftMounts.join(", ")}`);
  });
  return d;
}

/**
 * `test` with a default timeout; on failure prints the daemon log tail (and
 * whether the daemon is still alive) before rethrowing.
 */
export function dtest(d, name, fn, { timeout = 60_000, ...opts } = {}) {
  return test(name, { timeout, ...opts }, async (t) => {
    try {
      await fn(t);
    } catch (e) {
      const alive = d.isRunning() ? "daemon still running" : `daemon EXITED (code ${d.proc?.exitCode}, signal ${d.proc?.signalCode})`;
      console.error(`\n### ${name} failed (${alive})\n${d.logTail()}\n`);
      throw e;
    }
  });
}

/** Expects `p` to reject; returns the error. */
export async function rejects(p, what = "operation") {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error(`${what} was expected to fail but succeeded`);
}

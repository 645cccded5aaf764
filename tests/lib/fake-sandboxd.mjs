#!/usr/bin/env node
// A protocol-level stand-in for sandboxd with NO isolation (commands run as
// host processes). It exists only to test the test suites themselves:
//   SANDBOXD_BIN=tests/lib/fake-sandboxd tests/run-node-tests.sh
// Conformance tests should mostly pass against it; the security and leak
// suites must FAIL against it (proof that they can fail). Never deploy this.
import { createServer } from "node:http";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, mkdirSync, readFileSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { constants as osc } from "node:os";
import { WebSocketServer } from "ws";

const argv = process.argv.slice(2);
const arg = (name) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const dataDir = arg("--data-dir");
const tokensFile = join(dataDir, "tokens.json");
const readTokens = () => (existsSync(tokensFile) ? JSON.parse(readFileSync(tokensFile, "utf8")) : {});

if (argv[0] === "token" && argv[1] === "create") {
  const t = readTokens();
  const tok = "ddo_" + randomBytes(20).toString("hex");
  t[tok] = arg("--org");
  writeFileSync(tokensFile, JSON.stringify(t));
  console.log(tok);
  process.exit(0);
}
if (argv[0] !== "serve") {
  console.error("usage: fake-sandboxd serve|token create");
  process.exit(2);
}

const CROCK = "0123456789abcdefghjkmnpqrstvwxyz";
const newId = () => "sbx_loc_" + [...randomBytes(20)].map((b) => CROCK[b & 31]).join("");
const sandboxes = new Map();
let streamCounter = 1000;

const sendJson = (res, status, obj) => {
  const body = obj === undefined ? "" : JSON.stringify(obj);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
};
const err = (code, message) => ({ code, message });
const orgOf = (req) => {
  const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? "");
  return m ? readTokens()[m[1]] : undefined;
};

function validateConfig(raw) {
  if (!raw) return "missing config";
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(raw)) return "bad base64";
  let cfg;
  try {
    cfg = JSON.parse(Buffer.from(raw, "base64").toString("latin1"));
  } catch {
    return "bad json";
  }
  if (!cfg || typeof cfg !== "object" || Array.isArray(cfg)) return "not an object";
  if (!Number.isInteger(cfg.memory_mb) || cfg.memory_mb < 768 || cfg.memory_mb > 4096) return "memory";
  const labels = cfg.labels ?? {};
  if (Object.keys(labels).length > 5) return "labels";
  for (const [k, v] of Object.entries(labels)) if (Buffer.byteLength(k) > 64 || Buffer.byteLength(v) > 128) return "label size";
  return cfg;
}

function stopSandbox(sb, reason = "sandbox stopped") {
  if (sb.status === "stopped") return;
  sb.status = "stopped";
  sb.stoppedAt = new Date().toISOString();
  clearTimeout(sb.timer);
  for (const p of sb.procs.values()) {
    try {
      process.kill(-p.pid, "SIGKILL");
    } catch {}
  }
  for (const c of sb.conns) c.close(1001, reason);
  rmSync(sb.home, { recursive: true, force: true });
}

function armDeadline(sb) {
  clearTimeout(sb.timer);
  if (sb.stopAt) sb.timer = setTimeout(() => stopSandbox(sb, "timeout"), Math.max(0, sb.stopAt - Date.now()));
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  const org = orgOf(req);
  if (!org) return sendJson(res, 401, err("INVALID_TOKEN", "invalid token"));
  let m;
  if (req.method === "GET" && url.pathname === "/api/v2/sandboxes") {
    const want = [...url.searchParams].filter(([k]) => /^labels\[.*\]$/.test(k)).map(([k, v]) => [k.slice(7, -1), v]);
    const out = [...sandboxes.values()]
      .filter((s) => s.org === org && want.every(([k, v]) => s.labels[k] === v))
      .map((s) => ({ id: s.id, createdAt: s.createdAt, stoppedAt: s.stoppedAt, region: "loc", status: s.status, labels: s.labels }));
    return sendJson(res, 200, out);
  }
  if ((m = /^\/api\/v3\/sandbox\/([^/]+)$/.exec(url.pathname))) {
    const sb = sandboxes.get(m[1]);
    if (!sb || sb.org !== org) return sendJson(res, 404, err("SANDBOX_NOT_FOUND", "no such sandbox"));
    if (req.method === "DELETE") {
      sendJson(res, 200);
      stopSandbox(sb, "sandbox killed");
      return;
    }
    if (req.method === "PATCH") {
      let body = "";
      for await (const c of req) body += c;
      const want = JSON.parse(body).stop_at_ms;
      if (sb.status !== "running" || !sb.stopAt) return sendJson(res, 400, err("INVALID_CONFIG", "not extendable"));
      sb.stopAt = Math.max(sb.stopAt, Math.min(want, sb.stopAt + 30 * 60_000));
      armDeadline(sb);
      return sendJson(res, 200, { stop_at_ms: sb.stopAt });
    }
  }
  sendJson(res, 404, err("NOT_FOUND", "no route"));
});

const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 * 1024 });
server.on("upgrade", (req, socket, head) => {
  const refuse = (status, body) => {
    const b = JSON.stringify(body);
    socket.end(`HTTP/1.1 ${status} X\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(b)}\r\nconnection: close\r\n\r\n${b}`);
  };
  const url = new URL(req.url, "http://x");
  const org = orgOf(req);
  if (!org) return refuse(401, err("INVALID_TOKEN", "invalid token"));
  let sb;
  let primary = false;
  if (url.pathname === "/api/v3/sandboxes/create") {
    const cfg = validateConfig(req.headers["x-deno-sandbox-config"]);
    if (typeof cfg === "string") return refuse(400, err("INVALID_CONFIG", cfg));
    if (cfg.region !== undefined && cfg.region !== "loc") return refuse(400, err("REGION_NOT_SERVED", "region"));
    const id = newId();
    // Homes live outside the 0700 data dir so uid 1000 can use them.
    mkdirSync("/tmp/fake-sandboxd-homes", { recursive: true, mode: 0o1777 });
    const home = join("/tmp/fake-sandboxd-homes", id);
    mkdirSync(home, { recursive: true });
    chownSync(home, 1000, 1000);
    sb = { id, org, labels: cfg.labels ?? {}, createdAt: new Date().toISOString(), stoppedAt: null, status: "running", stopAt: cfg.stop_at_ms, conns: new Set(), env: {}, procs: new Map(), home };
    sandboxes.set(id, sb);
    armDeadline(sb);
    primary = true;
  } else {
    const m = /^\/api\/v3\/sandbox\/([^/]+)\/connect$/.exec(url.pathname);
    sb = m && sandboxes.get(m[1]);
    if (!sb || sb.org !== org || sb.status !== "running") return refuse(404, err("SANDBOX_NOT_FOUND", "no such sandbox"));
  }
  wss.once("headers", (headers) => headers.push(`x-deno-sandbox-id: ${sb.id}`));
  wss.handleUpgrade(req, socket, head, (ws) => serveConn(sb, ws, primary));
});

function serveConn(sb, ws, primary) {
  sb.conns.add(ws);
  ws.on("error", () => {});
  const inStreams = new Map(); // client stream id -> {buf: [], ended, sink}
  const send = (o) => ws.readyState === 1 && ws.send(JSON.stringify(o));
  const notify = (method, params) => send({ jsonrpc: "2.0", method, params });
  const reply = (id, result) => send({ jsonrpc: "2.0", id, result });
  ws.on("close", () => {
    sb.conns.delete(ws);
    if (primary && !sb.stopAt) setTimeout(() => stopSandbox(sb, "session ended"), 1000);
  });
  ws.on("message", async (data) => {
    const text = data.toString("utf8");
    if (text === "ping") return ws.send("pong");
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return ws.close(4000, "Invalid JSON");
    }
    if (!msg || typeof msg !== "object" || Array.isArray(msg) || msg.jsonrpc !== "2.0" || typeof msg.method !== "string") return ws.close(4001, "Invalid message");
    const p = msg.params ?? {};
    if (!("id" in msg)) {
      if (msg.method === "$sandbox.stream.start") inStreams.set(p.streamId, { buf: [], ended: false, sink: null });
      const s = inStreams.get(p.streamId);
      if (!s) return;
      if (msg.method === "$sandbox.stream.enqueue") {
        const b = Buffer.from(p.data, "base64");
        s.sink ? s.sink.write(b) : s.buf.push(b);
      } else if (msg.method === "$sandbox.stream.end") {
        s.ended = true;
        s.sink?.end();
      }
      return;
    }
    const id = msg.id;
    const ok = (v) => reply(id, { ok: v });
    switch (msg.method) {
      case "envGet":
        return ok(sb.env[p.key] ?? null);
      case "envSet":
        sb.env[p.key] = p.value;
        return ok(null);
      case "envDelete":
        delete sb.env[p.key];
        return ok(null);
      case "envToObject":
        return ok({ ...sb.env });
      case "spawn": {
        const env = { PATH: process.env.PATH, HOME: sb.home, ...sb.env, ...(p.env ?? {}) };
        if (env.BASH_ENV === "$HOME/.bashrc") delete env.BASH_ENV;
        const child = spawn(p.command, p.args ?? [], {
          cwd: p.cwd ?? sb.home,
          env,
          detached: true,
          uid: 1000, // never run test payloads as root on the host
          gid: 1000,
          stdio: [p.stdinStreamId !== undefined ? "pipe" : "ignore", p.stdout === "null" ? "ignore" : "pipe", p.stderr === "null" ? "ignore" : "pipe"],
        });
        const failed = await new Promise((r) => {
          child.once("spawn", () => r(null));
          child.once("error", (e) => r(e));
        });
        if (failed) return reply(id, { error: { constructorName: "NotFound", message: String(failed.message), code: failed.code ?? null } });
        const entry = { pid: child.pid, status: null, waiters: [] };
        sb.procs.set(child.pid, entry);
        const out = (s) => {
          if (!s) return null;
          const sid = streamCounter++;
          notify("$sandbox.stream.start", { streamId: sid });
          s.on("data", (c) => c.length && notify("$sandbox.stream.enqueue", { streamId: sid, data: c.toString("base64") }));
          s.on("end", () => notify("$sandbox.stream.end", { streamId: sid }));
          return sid;
        };
        if (p.stdinStreamId !== undefined) {
          const s = inStreams.get(p.stdinStreamId) ?? { buf: [], ended: false, sink: null };
          inStreams.set(p.stdinStreamId, s);
          s.sink = child.stdin;
          child.stdin.on("error", () => {});
          for (const b of s.buf) child.stdin.write(b);
          if (s.ended) child.stdin.end();
        }
        const stdoutStreamId = out(child.stdout);
        const stderrStreamId = out(child.stderr);
        child.on("exit", (code, signal) => {
          const num = signal ? osc.signals[signal] : 0;
          entry.status = { success: code === 0, code: signal ? 128 + num : code, signal: signal ?? null, oom: null };
          for (const w of entry.waiters) w(entry.status);
        });
        return ok({ pid: child.pid, stdoutStreamId, stderrStreamId });
      }
      case "processWait": {
        const e = sb.procs.get(p.pid);
        if (!e) return reply(id, { error: { constructorName: "TypeError", message: "no such process", code: "ENOENT" } });
        const st = e.status ?? (await new Promise((r) => e.waiters.push(r)));
        return ok(st);
      }
      case "processKill": {
        const e = sb.procs.get(p.pid);
        if (!e || e.status) return reply(id, { error: { constructorName: "TypeError", message: "process exited", code: "ENOENT" } });
        try {
          process.kill(p.pid, p.signal ?? "SIGTERM");
        } catch {}
        return ok(null);
      }
      default:
        return send({ jsonrpc: "2.0", id, error: { code: -32601, message: "Method not found" } });
    }
  });
}

server.listen(Number(arg("--listen").split(":")[1]), "127.0.0.1", () => {
  console.log(`sandboxd listening on http://127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => {
  // FAKE_LEAK=1 simulates a daemon that forgets its sandboxes (to prove the leak suite fails).
  if (!process.env.FAKE_LEAK) for (const sb of sandboxes.values()) stopSandbox(sb, "daemon stopping");
  server.close();
  setTimeout(() => process.exit(0), 200);
});

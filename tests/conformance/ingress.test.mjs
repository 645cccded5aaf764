// HTTP ingress (sandbox.exposeHttp) with the official SDK: services started
// inside a sandbox (python3 http.server, a Node server) are reached through
// the URL the SDK returns — over TLS with the daemon's local CA, and over
// plain HTTP on the same port; keep-alive, streaming uploads, Server-Sent
// Events, WebSocket echo, {pid} exposure; the errors for what is not
// exposed, not listening, not answering, and for killed sandboxes; and the
// isolation between sandboxes.
import assert from "node:assert/strict";
import http from "node:http";
import https from "node:https";
import { createHash, randomBytes } from "node:crypto";
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import WebSocket from "ws";
import { SANDBOXD_BIN, useDaemon, dtest, waitFor, withTimeout, ISOLATION } from "../lib/harness.mjs";

const d = useDaemon({
  orgs: ["a", "b"],
  // Either backend (SANDBOXD_ISOLATION): a microVM is reached at the guest's
  // address instead of inside its network namespace (docs/api.md, Ingress).
  extraArgs: ["--ingress-listen", "127.0.0.1:0", "--ingress-response-timeout", "2s"],
});
const VM = ISOLATION === "microvm";
// Servers start slowly in a TCG guest (a cold python3 or node takes seconds
// on a loaded host): waits for them to listen are longer there.
const LISTEN_WAIT = VM ? 40_000 : 10_000;

// *.localhost does not resolve everywhere: every name goes to loopback.
function lookup(_host, opts, cb) {
  if (typeof opts === "function") cb = opts;
  if (opts?.all) cb(null, [{ address: "127.0.0.1", family: 4 }]);
  else cb(null, "127.0.0.1", 4);
}
let ca;
const agents = [];
function agent(url, keepAlive = false) {
  const a = new (url.startsWith("https:") ? https : http).Agent({ keepAlive, ca, lookup });
  agents.push(a);
  return a;
}

/** One request; resolves {status, headers, body} (body as a string). */
function request(url, { method = "GET", headers = {}, body, via } = {}) {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith("https:") ? https : http;
    const req = mod.request(url, { method, headers, agent: via ?? agent(url), lookup, ca }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.setTimeout(15_000, () => req.destroy(new Error(`${method} ${url}: no answer within 15 s`)));
    if (typeof body === "function") body(req);
    else req.end(body);
  });
}

const plain = (url) => url.replace(/^https:/, "http:");
const portUrl = (sb, port) => `https://${sb.id.replaceAll("_", "-")}-${port}.localhost:${d.ingressPort}`;

// A Node service without dependencies: JSON about each request, an upload
// digest, an event stream and a minimal WebSocket echo (RFC 6455 text frames).
const NODE_SERVER = `
const http = require("http"), crypto = require("crypto");
const port = Number(process.argv[2]);
const srv = http.createServer((req, res) => {
  if (req.url === "/sse" || req.url === "/sse-forever") {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    let n = 0;
    const t = setInterval(() => { res.write("data: " + n++ + "\\n\\n"); if (n === 4 && req.url === "/sse") { clearInterval(t); res.end(); } }, 250);
    return;
  }
  if (req.url === "/upload") {
    const h = crypto.createHash("sha256"); let size = 0;
    req.on("data", (c) => { size += c.length; h.update(c); });
    req.on("end", () => res.end(JSON.stringify({ size, sha: h.digest("hex") })));
    return;
  }
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ url: req.url, method: req.method, remoteAddress: req.socket.remoteAddress, remotePort: req.socket.remotePort, headers: req.headers }));
});
srv.on("upgrade", (req, sock, head) => {
  const accept = crypto.createHash("sha1").update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  sock.write("HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: " + accept + "\\r\\n\\r\\n");
  let buf = head;
  sock.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 2) {
      const op = buf[0] & 15; let len = buf[1] & 127, off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      if (buf.length < off + 4 + len) return;
      const mask = buf.subarray(off, off + 4), data = Buffer.from(buf.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < len; i++) data[i] ^= mask[i % 4];
      buf = buf.subarray(off + 4 + len);
      if (op === 8) { sock.end(Buffer.from([0x88, 0])); return; }
      const reply = Buffer.from("echo: " + data.toString());
      const hdr = reply.length < 126 ? Buffer.from([0x81, reply.length]) : Buffer.from([0x81, 126, reply.length >> 8, reply.length & 255]);
      sock.write(Buffer.concat([hdr, reply]));
    }
  });
});
srv.listen(port, process.argv[3] || "0.0.0.0");
`;

let sb; // org a: the shared sandbox
let nodeUrl; // the Node service on 3000, as exposeHttp returned it

async function startNode(box, port, host) {
  await box.fs.writeTextFile("/tmp/srv.js", NODE_SERVER);
  const args = ["/tmp/srv.js", String(port)];
  if (host) args.push(host);
  return await box.spawn("node", { args, stdout: "null", stderr: "null" });
}

dtest(d, "the daemon prints the ingress address and its local CA", async () => {
  assert.match(d.ingressUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
  assert.ok(d.ingressCa, "the CA certificate path is printed");
  ca = readFileSync(d.ingressCa, "utf8");
  assert.match(ca, /BEGIN CERTIFICATE/);
});

dtest(d, "python3 http.server is reached through the URL exposeHttp returns (TLS and plain)", async () => {
  sb = await d.create("a");
  await sb.sh`mkdir -p /tmp/www && printf 'hello from python\n' > /tmp/www/hello.txt`;
  await sb.spawn("python3", {
    args: ["-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/tmp/www"],
    stdout: "null",
    stderr: "null",
  });
  const url = await sb.exposeHttp({ port: 8000 });
  assert.match(url, new RegExp(`^https://${sb.id.replaceAll("_", "-")}-h[0-9a-z]{10}\\.localhost:${d.ingressPort}$`));
  const res = await waitFor(
    async () => {
      const r = await request(`${url}/hello.txt`);
      return r.status === 200 ? r : null;
    },
    { timeoutMs: LISTEN_WAIT, what: "python3 http.server to answer through the ingress" },
  );
  assert.equal(res.body, "hello from python\n");
  assert.equal((await request(`${plain(url)}/hello.txt`)).body, "hello from python\n", "plain HTTP on the same port");
  // The port form of the name routes to the same exposed port.
  assert.equal((await request(`${portUrl(sb, 8000)}/hello.txt`)).status, 200);
  assert.equal((await request(`${url}/missing`)).status, 404, "the service's own 404 passes through");
});

const SANDBOX_CLI = join(dirname(SANDBOXD_BIN), "sandbox");

function cli(args, token) {
  const env = { ...process.env, DENO_SANDBOX_ENDPOINT: d.url, DENO_DEPLOY_TOKEN: token };
  return new Promise((resolve) =>
    execFile(SANDBOX_CLI, args, { env, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (err.code ?? -1) : 0, stdout, stderr }),
    ),
  );
}

dtest(d, "CLI: `sandbox expose ID PORT` prints the URL of the exposed port", async (t) => {
  if (!existsSync(SANDBOX_CLI)) return t.skip(`no CLI at ${SANDBOX_CLI}`);
  const r = await cli(["expose", sb.id, "8000"], d.tokens.a);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `${portUrl(sb, 8000)}\n`);
  assert.equal((await request(`${r.stdout.trim()}/hello.txt`)).body, "hello from python\n");
  const again = await cli(["expose", sb.id, "8000"], d.tokens.a);
  assert.equal(again.stdout, r.stdout, "exposing the same port again gives the same URL");
  const bad = await cli(["expose", sb.id, "70000"], d.tokens.a);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /port/);
  const foreign = await cli(["expose", sb.id, "8000"], d.tokens.b);
  assert.notEqual(foreign.code, 0, "another org's token cannot expose this sandbox");
  assert.match(foreign.stderr, /not found|404/i);
});

dtest(d, "a Node server: keep-alive, forwarded headers, streamed upload", async () => {
  await startNode(sb, 3000);
  nodeUrl = await sb.exposeHttp({ port: 3000 });
  const keep = agent(nodeUrl, true);
  const first = await waitFor(
    async () => {
      const r = await request(`${nodeUrl}/one`, { via: keep });
      return r.status === 200 ? JSON.parse(r.body) : null;
    },
    { timeoutMs: LISTEN_WAIT, what: "the Node server to answer" },
  );
  const second = JSON.parse((await request(`${nodeUrl}/two?x=1`, { via: keep })).body);
  assert.equal(second.url, "/two?x=1");
  assert.equal(second.remotePort, first.remotePort, "a kept-alive client connection keeps its upstream connection");
  const host = new URL(nodeUrl).host;
  assert.equal(second.headers.host, host);
  assert.equal(second.headers["x-forwarded-host"], host);
  assert.equal(second.headers["x-forwarded-proto"], "https");
  assert.equal(second.headers["x-forwarded-for"], "127.0.0.1");
  assert.equal(JSON.parse((await request(`${plain(nodeUrl)}/p`)).body).headers["x-forwarded-proto"], "http");

  // 4 MiB in 64 KiB pieces, chunked (no Content-Length).
  const hash = createHash("sha256");
  const res = await request(`${nodeUrl}/upload`, {
    method: "POST",
    body: async (req) => {
      for (let i = 0; i < 64; i++) {
        const piece = randomBytes(64 * 1024);
        hash.update(piece);
        if (!req.write(piece)) await new Promise((r) => req.once("drain", r));
      }
      req.end();
    },
  });
  assert.equal(res.status, 200);
  assert.deepEqual(JSON.parse(res.body), { size: 4 * 1024 * 1024, sha: hash.digest("hex") });
});

dtest(d, "Server-Sent Events arrive as they are sent", async () => {
  const events = await new Promise((resolve, reject) => {
    const got = [];
    https
      .get(`${nodeUrl}/sse`, { agent: agent(nodeUrl), lookup, ca }, (res) => {
        assert.equal(res.headers["content-type"], "text/event-stream");
        res.setEncoding("utf8");
        res.on("data", (c) => got.push({ t: Date.now(), c }));
        res.on("end", () => resolve(got));
      })
      .on("error", reject);
  });
  const text = events.map((e) => e.c).join("");
  assert.equal(text, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n");
  assert.ok(events.length >= 3, `events came in ${events.length} piece(s): buffered, not streamed`);
  assert.ok(events.at(-1).t - events[0].t >= 500, "the first event arrived long before the last");
});

dtest(d, "WebSocket echo through the ingress (wss and ws)", async () => {
  for (const base of [nodeUrl, plain(nodeUrl)]) {
    const ws = new WebSocket(base.replace(/^http/, "ws") + "/ws", { ca, lookup });
    await withTimeout(new Promise((res, rej) => { ws.once("open", res); ws.once("error", rej); }), 10_000, "ws open");
    const replies = [];
    const done = new Promise((res) => ws.on("message", (m) => { replies.push(m.toString()); if (replies.length === 2) res(); }));
    ws.send("hello");
    ws.send("x".repeat(1000));
    await withTimeout(done, 10_000, "ws echo");
    assert.deepEqual(replies, ["echo: hello", "echo: " + "x".repeat(1000)]);
    ws.close();
  }
});

dtest(d, "exposeHttp({pid}) routes to the port that process listens on", async () => {
  const child = await startNode(sb, 3100, "127.0.0.1");
  const url = await sb.exposeHttp({ pid: child.pid });
  const r = await waitFor(
    async () => {
      const x = await request(`${url}/by-pid`);
      return x.status === 200 ? x : null;
    },
    { timeoutMs: LISTEN_WAIT, what: "the pid-exposed server to answer" },
  );
  assert.equal(JSON.parse(r.body).url, "/by-pid");
  await child.kill("SIGKILL");
  await child.status;
  const gone = await request(`${url}/`);
  assert.equal(gone.status, 502);
  assert.equal(gone.headers["x-sandboxd-error"], "PROCESS_EXITED");
});

dtest(d, "a microVM guest is reached at its address, a loopback-only server through its agent", async (t) => {
  if (!VM) return t.skip("microvm only");
  // The ingress dials the guest's own address (from the gateway, the host end
  // of its link); a server bound to 127.0.0.1 is reached through the agent's
  // loopback relay inside the guest (common/loopback_relay.h).
  const net = await (await d.fetch(`/api/v3/sandboxes/${sb.id}/network`, { org: "a" })).json();
  const gw = net.address.replace(/\.(\d+)$/, (_, n) => `.${Number(n) - 1}`);
  await startNode(sb, 3200, net.address);
  await startNode(sb, 3201, "127.0.0.1");
  for (const [port, from] of [[3200, gw], [3201, "127.0.0.1"]]) {
    const url = await sb.exposeHttp({ port });
    const r = await waitFor(async () => {
      const x = await request(`${url}/who`);
      return x.status === 200 ? x : null;
    }, { timeoutMs: LISTEN_WAIT, what: `the server on port ${port}` });
    assert.equal(JSON.parse(r.body).remoteAddress.replace(/^::ffff:/, ""), from, `port ${port}`);
  }
});

dtest(d, "errors: not exposed 404, nothing listening 502, no answer 504, unknown sandbox 404", async () => {
  const notExposed = await request(`${portUrl(sb, 3999)}/`);
  assert.equal(notExposed.status, 404);
  assert.equal(notExposed.headers["x-sandboxd-error"], "NOT_EXPOSED");

  const nothing = await request(`${await sb.exposeHttp({ port: 3998 })}/`);
  assert.equal(nothing.status, 502);
  assert.equal(nothing.headers["x-sandboxd-error"], "UPSTREAM_UNREACHABLE");
  assert.match(nothing.body, /nothing listens on port 3998/);

  // Accepts and never answers: 504 after the (test) response timeout of 2 s.
  await sb.spawn("node", { args: ["-e", "require('net').createServer(() => {}).listen(3997)"], stdout: "null", stderr: "null" });
  const silentUrl = await sb.exposeHttp({ port: 3997 });
  let took = 0;
  const silent = await waitFor(
    async () => {
      const t0 = Date.now();
      const r = await request(`${silentUrl}/`);
      took = Date.now() - t0;
      return r.status !== 502 ? r : null; // 502 until it listens
    },
    { timeoutMs: LISTEN_WAIT, what: "the silent server to listen" },
  );
  assert.equal(silent.status, 504);
  assert.equal(silent.headers["x-sandboxd-error"], "UPSTREAM_TIMEOUT");
  assert.ok(took >= 1_900 && took < 6_000, `504 after ${took} ms`);

  const unknown = await request(`https://sbx-loc-0123456789abcdefghjk-80.localhost:${d.ingressPort}/`);
  assert.equal(unknown.status, 404);
  assert.equal(unknown.headers["x-sandboxd-error"], "SANDBOX_NOT_FOUND");
  // A name outside the ingress domain (plain HTTP: over TLS the client
  // already refuses the certificate, which is only for the domain).
  const foreign = await request(`http://example.com:${d.ingressPort}/`);
  assert.equal(foreign.status, 404);
  assert.equal(foreign.headers["x-sandboxd-error"], "UNKNOWN_HOST");
});

dtest(d, "a killed sandbox: open streams end, its URLs answer 404", async () => {
  const box = await d.create("b");
  await startNode(box, 3000);
  const url = await box.exposeHttp({ port: 3000 });
  await waitFor(async () => (await request(`${url}/`)).status === 200, { timeoutMs: LISTEN_WAIT, what: "the server to answer" });
  // An event stream still open when the sandbox dies (it would never end by
  // itself): its end must come from the sandbox's end.
  let streaming;
  const started = new Promise((r) => (streaming = r));
  const streamEnded = new Promise((resolve) => {
    https
      .get(`${url}/sse-forever`, { agent: agent(url), lookup, ca }, (res) => {
        res.on("data", () => streaming());
        res.on("end", () => resolve("end"));
        res.on("error", () => resolve("error"));
        res.on("aborted", () => resolve("aborted"));
      })
      .on("error", () => resolve("error"));
  });
  await withTimeout(started, 10_000, "the first event");
  await box.kill();
  assert.ok(await withTimeout(streamEnded, 10_000, "the open stream of a killed sandbox"));
  const after = await waitFor(
    async () => {
      const r = await request(`${url}/`);
      return r.status === 404 ? r : null;
    },
    { timeoutMs: 10_000, what: "the killed sandbox's URL to answer 404" },
  );
  assert.equal(after.headers["x-sandboxd-error"], "SANDBOX_NOT_FOUND");
});

dtest(d, "isolation: only exposed ports, only through the ingress, not from another sandbox", async () => {
  const other = await d.create("b");
  await startNode(other, 3000);
  await other.spawn("python3", { args: ["-m", "http.server", "3001"], stdout: "null", stderr: "null" });
  const url = await other.exposeHttp({ port: 3000 });
  await waitFor(async () => (await request(`${url}/`)).status === 200, { timeoutMs: LISTEN_WAIT, what: "the other server to answer" });
  // Its unexposed port is not reachable through the ingress.
  const hidden = await request(`${portUrl(other, 3001)}/`);
  assert.equal(hidden.status, 404);
  // Org a cannot expose org b's sandbox.
  const rest = await d.fetch(`/api/v3/sandbox/${other.id}/expose/http`, { org: "a", method: "POST", body: "{}" });
  assert.equal(rest.status, 404);

  // From sandbox a: neither b's address nor the ingress (via the gateway, or
  // loopback, which is a's own) reaches b's server.
  const net = await (await d.fetch(`/api/v3/sandboxes/${other.id}/network`, { org: "b" })).json();
  const host = new URL(url).hostname;
  const script = `
    h=$(awk '$2=="00000000"{print $3}' /proc/net/route | head -n1)
    gw=$(printf '%d.%d.%d.%d' 0x\${h:6:2} 0x\${h:4:2} 0x\${h:2:2} 0x\${h:0:2})
    for target in "http://${net.address}:3000/" "http://$gw:${d.ingressPort}/" "http://127.0.0.1:${d.ingressPort}/"; do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 -H "Host: ${host}" "$target")
      echo "$target $code"
    done`;
  const out = await sb.sh`bash -c ${script}`.text();
  for (const line of out.trim().split("\n")) {
    assert.match(line, / (000|403|502)$/, `sandbox a reached sandbox b: ${line}`);
  }
});

process.on("exit", () => agents.forEach((a) => a.destroy()));

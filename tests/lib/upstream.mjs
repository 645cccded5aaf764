// A fake "internet" for the egress tests: a network namespace of its own,
// joined to the host by a veth pair with addresses in 198.18.0.0/15 (the
// benchmarking range, which the proxy treats as public), running
// upstream-server.mjs. A test CA signs its certificate; the daemon is told to
// trust that CA and to resolve the test names from a hosts file, both
// test-only settings. Nothing leaves this machine.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const here = dirname(fileURLToPath(import.meta.url));
const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...opts }).toString();

export class Upstream {
  /** names: DNS names the upstream answers for (hosts file + certificate SANs). */
  constructor(names = ["api.test", "other.test", "a.svc.test", "svc.test"]) {
    this.names = names;
    const r = Math.floor(Math.random() * 0x7fff);
    this.ns = `sbxup${process.pid % 100000}${r}`.slice(0, 15);
    this.hostIf = `sbxu${r.toString(16)}${process.pid % 1000}`.slice(0, 15);
    // 198.18.0.0/15 in /30 blocks: 32768 choices.
    const block = r * 4;
    this.gw = `198.${18 + (block >> 16)}.${(block >> 8) & 255}.${(block & 255) + 1}`;
    this.ip = `198.${18 + (block >> 16)}.${(block >> 8) & 255}.${(block & 255) + 2}`;
    this.dir = mkdtempSync(join(tmpdir(), "sbx-upstream-"));
  }

  async start() {
    const d = this.dir;
    const cnf = join(d, "ext.cnf");
    const san = this.names.map((n) => `DNS:${n}`).concat([`IP:${this.ip}`]).join(",");
    writeFileSync(cnf, `basicConstraints=CA:FALSE\nsubjectAltName=${san}\nextendedKeyUsage=serverAuth\n`);
    sh("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
      "-subj", "/CN=sandboxd test upstream CA", "-keyout", join(d, "ca.key"), "-out", join(d, "ca.pem")]);
    sh("openssl", ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=upstream",
      "-keyout", join(d, "srv.key"), "-out", join(d, "srv.csr")]);
    sh("openssl", ["x509", "-req", "-in", join(d, "srv.csr"), "-CA", join(d, "ca.pem"), "-CAkey", join(d, "ca.key"),
      "-CAcreateserial", "-days", "2", "-extfile", cnf, "-out", join(d, "srv.pem")]);
    this.caFile = join(d, "ca.pem");
    this.hostsFile = join(d, "hosts");
    writeFileSync(this.hostsFile, this.names.map((n) => `${this.ip} ${n}\n`).join("") + this.extraHosts());

    sh("ip", ["netns", "add", this.ns]);
    sh("ip", ["link", "add", this.hostIf, "type", "veth", "peer", "name", "eth0", "netns", this.ns]);
    sh("ip", ["addr", "add", `${this.gw}/30`, "dev", this.hostIf]);
    sh("ip", ["link", "set", this.hostIf, "up"]);
    sh("ip", ["-n", this.ns, "addr", "add", `${this.ip}/30`, "dev", "eth0"]);
    sh("ip", ["-n", this.ns, "link", "set", "eth0", "up"]);
    sh("ip", ["-n", this.ns, "link", "set", "lo", "up"]);
    sh("ip", ["-n", this.ns, "route", "add", "default", "via", this.gw]);

    this.proc = spawn("ip", ["netns", "exec", this.ns, process.execPath, join(here, "upstream-server.mjs"),
      "--cert", join(d, "srv.pem"), "--key", join(d, "srv.key")], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise((resolve, reject) => {
      const rl = createInterface({ input: this.proc.stdout });
      rl.once("line", (l) => (l === "ready" ? resolve() : reject(new Error(l))));
      this.proc.once("exit", (c) => reject(new Error(`upstream server exited ${c}`)));
    });
    return this;
  }

  /** Names that resolve to internal addresses (for the refusal tests). */
  extraHosts() {
    return "10.1.2.3 private.test\n169.254.169.254 metadata.test\n127.0.0.1 loopback.test\n";
  }

  /** Daemon flags that point its resolver and upstream trust at this fake internet. */
  daemonArgs() {
    return ["--egress-hosts-file", this.hostsFile, "--egress-hosts-only", "--egress-extra-ca", this.caFile];
  }

  /** What the upstream has counted (UDP datagrams), read from the host side. */
  async counters() {
    const r = await fetch(`http://${this.ip}:8080/counters`);
    return r.json();
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill("SIGKILL");
      await new Promise((r) => this.proc.once("exit", r));
    }
    try { sh("ip", ["link", "del", this.hostIf]); } catch {}
    try { sh("ip", ["netns", "del", this.ns]); } catch {}
    rmSync(this.dir, { recursive: true, force: true });
  }
}

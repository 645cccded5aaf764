// The microVM guest's network, measured (docs/microvm.md, "Measured: guest
// networking"): per create, what the network adds on the daemon's side
// (attaching the link to the guest's tap, and the agent configuring eth0,
// read from the daemon's debug log), and from inside a VM a curl through the
// egress proxy to a fake upstream (tests/lib/upstream.mjs): a small HTTPS GET
// (time_total) and a 10 MB download (MB/s). Prints p50/p99; asserts nothing.
//
//   node bench/vm_network.mjs [creates=10] [curls=10]
//   SANDBOXD_BIN (default build/bin/sandboxd); needs root and the VM images.
//   SANDBOXD_ISOLATION=namespaces: the same curls from a namespace sandbox,
//   for comparison (no tap, no configureNetwork lines).
import { readFileSync } from "node:fs";
import { Daemon } from "../tests/lib/harness.mjs";
import { Upstream } from "../tests/lib/upstream.mjs";

const creates = Number(process.argv[2] ?? 10);
const curls = Number(process.argv[3] ?? 10);
const q = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const line = (name, xs, unit) =>
  console.log(`${name.padEnd(44)} n=${String(xs.length).padEnd(4)} p50 ${q(xs, 0.5).toFixed(2).padStart(9)} ${unit}   p99 ${q(xs, 0.99).toFixed(2).padStart(9)} ${unit}`);

const up = await new Upstream().start();
const d = new Daemon();
try {
  const isolation = process.env.SANDBOXD_ISOLATION || "microvm";
  await d.start({ orgs: ["a"], extraArgs: [...up.daemonArgs(), "--isolation", isolation, "--log-level", "debug"] });
  console.log(`isolation ${isolation}, ${creates} creates, ${curls} curls`);
  const ca = readFileSync(up.caFile, "utf8");
  const createMs = [];
  const small = [];
  const mbps = [];
  for (let i = 0; i < creates; i++) {
    const t0 = Date.now();
    const sb = await d.create("a", { allowNet: ["api.test"] });
    createMs.push(Date.now() - t0);
    if (i === 0) {
      await sb.fs.writeTextFile("/tmp/ca.pem", ca);
      const script = `for i in $(seq ${curls}); do curl -sS -o /dev/null --cacert /tmp/ca.pem -w '%{time_total}\\n' https://api.test/echo; done;
        curl -sS -o /dev/null --cacert /tmp/ca.pem -w 'dl %{size_download} %{time_total}\\n' 'https://api.test/big?n=10000000'`;
      const out = await sb.sh`bash -c ${script}`.text();
      for (const l of out.trim().split("\n")) {
        const m = /^dl (\d+) ([\d.]+)$/.exec(l);
        if (m) mbps.push(Number(m[1]) / 1e6 / Number(m[2]));
        else small.push(Number(l) * 1000);
      }
    }
    await sb.kill();
  }
  const log = readFileSync(d.logPath, "utf8");
  const us = (re) => [...log.matchAll(re)].map((m) => Number(m[1]) / 1000);
  const when = (name, xs, unit) => xs.length && line(name, xs, unit);
  when("attach the link (namespace sandbox)", us(/network attached in (\d+) us/g), "ms");
  when("attach the link to the guest's tap", us(/network attached to the guest's tap in (\d+) us/g), "ms");
  when("configureNetwork (agent link round trip)", us(/guest network configured in (\d+) us/g), "ms");
  line("create (SDK, boot included)", createMs, "ms");
  line("curl https GET through egress, in the sandbox", small, "ms");
  line("curl 10 MB through egress, in the sandbox", mbps, "MB/s");
} finally {
  await d.stop();
  d.cleanupDataDir();
  await up.stop();
}

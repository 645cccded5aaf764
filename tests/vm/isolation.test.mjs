// Per-create backends (our extension of the create config, docs/api.md): a
// daemon whose default is namespaces also holds the microVM backend when its
// VM files are there, and a create config with "isolation": "microvm" gets a
// VM. The official SDK does not forward unknown options, so those creates go
// through a raw WebSocket upgrade with a hand-made config header; the SDK then
// connects to the sandbox and works with it as with any other. Unknown values
// and backends this server lacks get a 400; a restarted daemon reaps a VM of
// its previous run although its default backend is namespaces.
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { release } from "node:os";
import { dirname, join } from "node:path";
import { useDaemon, dtest, waitFor, SANDBOXD_BIN } from "../lib/harness.mjs";
import { cgroupPids, guestRelease } from "../lib/vm.mjs";
import { rawCreate } from "../lib/rawws.mjs";

const d = useDaemon({
  orgs: ["a"],
  extraArgs: ["--isolation", "namespaces", "--ingress-listen", "127.0.0.1:0", "--ingress-tls", "off"],
});
// The same without VM files: microvm is not available there.
const novm = useDaemon({ orgs: ["a"], extraArgs: ["--isolation", "namespaces", "--vm-kernel", "/nonexistent/vmlinux"] });
const BOOT = { timeout: 180_000 }; // a TCG boot takes seconds, more on a loaded host

const comm = (pid) => {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return null;
  }
};

/** Creates through a raw upgrade with `extra` in the config; a timed sandbox, so the socket can close. */
async function createWith(daemon, extra) {
  const config = { memory_mb: 1280, volumes: [], stop_at_ms: Date.now() + 5 * 60_000, ...extra };
  const r = await rawCreate(daemon.url, daemon.tokens.a, config, { timeoutMs: 170_000 });
  if (r.ok) r.ws.close();
  return r;
}

dtest(
  d,
  'a create with "isolation": "microvm" gets a VM on a daemon whose default is namespaces',
  async () => {
    const plain = await d.create("a");
    assert.equal((await plain.sh`uname -r`.text()).trim(), release(), "the default is namespaces: the host's kernel");

    const r = await createWith(d, { isolation: "microvm" });
    assert.ok(r.ok, `create: ${r.status} ${r.body}`);
    const vm = await d.connect(r.id);
    assert.equal((await vm.sh`uname -r`.text()).trim(), guestRelease());
    assert.match(await vm.sh`xargs -0 echo </proc/1/cmdline`.text(), /^\/init --vm /);
    assert.ok(cgroupPids(r.id).some((p) => comm(p)?.startsWith("qemu-system")), "QEMU runs in its cgroup");
    await vm.fs.writeTextFile("/home/app/x", "through the SDK\n");
    assert.equal(await vm.sh`cat /home/app/x`.text(), "through the SDK\n");

    // The ingress reaches a VM's services too (over its network); both
    // sandboxes of this daemon get a name.
    const exposeVm = await d.fetch(`/api/v3/sandbox/${r.id}/expose/http`, { method: "POST", body: "{}" });
    assert.equal(exposeVm.status, 200, await exposeVm.clone().text());
    assert.match((await exposeVm.json()).url, /^http:\/\//);
    const exposeNs = await d.fetch(`/api/v3/sandbox/${plain.id}/expose/http`, { method: "POST", body: "{}" });
    assert.equal(exposeNs.status, 200);
    // And the VM has its network: eth0 carries the sandbox's address.
    assert.match(await vm.sh`cat /proc/net/dev`.text(), /eth0:/);

    const pids = cgroupPids(r.id);
    await vm.kill();
    await waitFor(() => cgroupPids(r.id).length === 0 && !existsSync(join(d.dataDir, "sandboxes", r.id)), {
      timeoutMs: 20_000,
      what: "the VM's cgroup and state dir to be gone",
    });
    for (const p of pids) assert.ok(!existsSync(`/proc/${p}`) || comm(p) === null, `process ${p} survived`);
    await plain.kill();
  },
  BOOT,
);

dtest(d, 'an explicit "isolation": "namespaces" gets the namespaces backend', async () => {
  const r = await createWith(d, { isolation: "namespaces" });
  assert.ok(r.ok, `create: ${r.status} ${r.body}`);
  const sb = await d.connect(r.id);
  assert.equal((await sb.sh`uname -r`.text()).trim(), release());
  await sb.kill();
});

dtest(d, "unknown isolation values are a 400 INVALID_CONFIG", async () => {
  for (const bad of ["auto", "kvm", "", 3, ["microvm"]]) {
    const r = await createWith(d, { isolation: bad });
    assert.equal(r.ok, false, `isolation ${JSON.stringify(bad)} was accepted`);
    assert.equal(r.status, 400);
    assert.equal(r.json?.code, "INVALID_CONFIG");
    assert.match(r.json?.message, /isolation/);
  }
});

dtest(novm, "a backend the server does not have is a 400 ISOLATION_UNAVAILABLE that says why", async () => {
  const r = await createWith(novm, { isolation: "microvm" });
  assert.equal(r.ok, false);
  assert.equal(r.status, 400);
  assert.equal(r.json?.code, "ISOLATION_UNAVAILABLE");
  assert.match(r.json?.message, /microvm.*\/nonexistent\/vmlinux/);
  const ok = await createWith(novm, { isolation: "namespaces" });
  assert.ok(ok.ok, `namespaces: ${ok.status} ${ok.body}`);
  const sb = await novm.connect(ok.id);
  await sb.kill();
});

dtest(
  d,
  "a restarted daemon (default namespaces) reaps the VM of its previous run",
  async () => {
    const r = await createWith(d, { isolation: "microvm" });
    assert.ok(r.ok, `create: ${r.status} ${r.body}`);
    const qemu = cgroupPids(r.id).filter((p) => comm(p)?.startsWith("qemu-system"));
    assert.equal(qemu.length, 1);

    d.proc.kill("SIGKILL");
    await d.exited;
    d.tracked.clear();
    await d.start({
      restart: true,
      extraArgs: ["--isolation", "namespaces", "--ingress-listen", "127.0.0.1:0", "--ingress-tls", "off"],
    });
    assert.equal(await d.statusOf(r.id), "stopped");
    await waitFor(() => !existsSync(`/proc/${qemu[0]}`) && cgroupPids(r.id).length === 0, {
      timeoutMs: 20_000,
      what: `QEMU ${qemu[0]} and the cgroup of ${r.id} to be gone`,
    });
    assert.ok(!existsSync(join(d.dataDir, "sandboxes", r.id)));
    assert.match(readFileSync(d.logPath, "utf8"), /marked 1 microvm sandboxes of a previous run as stopped/);
  },
  BOOT,
);

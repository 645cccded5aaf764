// Resource exhaustion from inside: a fork bomb and a memory hog must be
// contained to their own sandbox, while the daemon and other sandboxes keep
// serving.
import assert from "node:assert/strict";
import { useDaemon, dtest, withTimeout, ISOLATION } from "../lib/harness.mjs";

// Under the microVM backend (TCG) ~1000 forks and execs of the bomb take
// 20-45 s on a 2-core host, depending on its load; the bounds below are for
// a hang, not for speed.
const TCG = ISOLATION === "microvm";

const d = useDaemon({ orgs: ["a"] });

async function run(box, script) {
  const child = await box.spawn("bash", { args: ["-c", script], stdout: "piped", stderr: "piped" });
  const o = await child.output();
  return { status: o.status, code: o.status.code, out: o.stdoutText ?? "", err: o.stderrText ?? "" };
}

dtest(d, "a fork bomb is contained by the pids limit; the daemon keeps serving", async () => {
  const bomb = await d.create("a", { timeout: "2m" });
  // python forks fail fast with EAGAIN (bash would retry each fork for seconds).
  const py = `
import os, sys
ok = fail = 0
for i in range(2000):
    try:
        pid = os.fork()
    except OSError as e:
        fail += 1
        continue
    if pid == 0:
        try:
            # Do not hold the stdout pipe open: output() waits for its EOF.
            n = os.open("/dev/null", os.O_RDWR)
            os.dup2(n, 1)
            os.dup2(n, 2)
            os.execv("/bin/sleep", ["sleep", "30"])
        finally:
            os._exit(1)
    ok += 1
print(ok, fail, flush=True)
`;
  const r = await withTimeout(run(bomb, `python3 -c '${py}'`), TCG ? 150_000 : 60_000, "fork bomb script");
  const [ok, fail] = r.out.trim().split(/\s+/).map(Number);
  assert.ok(Number.isFinite(ok) && Number.isFinite(fail), `fork bomb printed ${JSON.stringify(r.out)} / ${r.err.slice(0, 500)}`);
  assert.ok(fail > 0, `all 2000 forks succeeded: no pids limit (ok=${ok})`);
  assert.ok(ok < 2000, `ok=${ok}`);
  // While the bomb's sleepers still hold every pid slot, another sandbox works.
  const other = await withTimeout(d.create("a"), 30_000, "create while a fork bomb runs");
  assert.equal(await other.sh`echo fine`.text(), "fine\n");
  await other.close();
  // And the bombed sandbox can still be killed promptly.
  await withTimeout(bomb.kill(), 20_000, "kill() of the fork-bombed sandbox");
  await d.waitStatus(bomb.id, "stopped", { timeoutMs: 10_000 });
}, { timeout: TCG ? 240_000 : 60_000 });

dtest(d, "a memory hog over memoryMb is OOM-killed (oom: true); the daemon and others keep serving", async () => {
  const hog = await d.create("a", { memory: "800MiB", timeout: "2m" });
  const bystander = await d.create("a");
  try {
    // 1.5 GB of touched memory, in 100 MB steps so the kernel cannot skip zero pages.
    const child = await hog.spawn("python3", {
      args: ["-c", "x = []\nfor i in range(15):\n    x.append(b'x' * (100 * 1024 * 1024))\nprint('survived', flush=True)"],
      stdout: "piped",
      stderr: "piped",
    });
    const o = await withTimeout(child.output(), 60_000, "memory hog status");
    assert.ok(!/survived/.test(o.stdoutText ?? ""), "1.5 GB allocation succeeded under an 800 MiB limit");
    assert.equal(o.status.code, 137, `status ${JSON.stringify(o.status)} stderr ${o.stderrText?.slice(0, 300)}`);
    assert.equal(o.status.signal, "SIGKILL");
    assert.equal(o.status.oom, true, "ChildProcessStatus.oom must be true for an OOM kill");
    // The agent (PID 1) survived: the same sandbox still runs commands.
    assert.equal(await hog.sh`echo agent-alive`.text(), "agent-alive\n");
    // A plain process in the same sandbox afterwards is not reported as OOM.
    const after = await (await hog.spawn("true", { stdout: "null", stderr: "null" })).status;
    assert.equal(after.oom, false);
    // Others keep serving.
    assert.equal(await bystander.sh`echo bystander`.text(), "bystander\n");
    const fresh = await d.create("a");
    assert.equal(await fresh.sh`echo fresh`.text(), "fresh\n");
    await fresh.close();
    assert.ok(d.isRunning(), "the daemon must survive");
  } finally {
    await bystander.close();
    await withTimeout(hog.kill(), 20_000, "kill() of the hog sandbox");
  }
});

dtest(d, "memoryMb is enforced as the limit: 768 MiB sandbox cannot hold 1 GB, 4 GiB one can hold 1 GB", async () => {
  const small = await d.create("a", { memory: "768MiB" });
  const big = await d.create("a", { memory: "4GiB" });
  try {
    const script = "x = []\nfor i in range(10):\n    x.append(b'x' * (100 * 1024 * 1024))\nprint('survived', flush=True)";
    const s = await (await small.spawn("python3", { args: ["-c", script], stdout: "piped", stderr: "null" })).output();
    assert.equal(s.status.oom, true, `768 MiB sandbox: ${JSON.stringify(s.status)}`);
    const b = await (await big.spawn("python3", { args: ["-c", script], stdout: "piped", stderr: "null" })).output();
    assert.equal(b.stdoutText, "survived\n", `4 GiB sandbox could not allocate 1 GB: ${JSON.stringify(b.status)}`);
    assert.equal(b.status.oom, false);
  } finally {
    await Promise.all([small.close(), big.close()]);
  }
});

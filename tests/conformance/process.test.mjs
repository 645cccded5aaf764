// The official SDK, unchanged, against sandboxd: create, sh, spawn, stdio,
// signals, env.
import assert from "node:assert/strict";
import { SandboxCommandError } from "@deno/sandbox";
import { useDaemon, dtest, withTimeout } from "../lib/harness.mjs";

const d = useDaemon({ orgs: ["a"] });
let sb; // one shared sandbox for the cheap checks in this file

dtest(d, "Sandbox.create returns a sandbox with a well-formed id", async () => {
  sb = await d.create("a");
  assert.match(sb.id, /^sbx_[a-z]{3}_[0-9a-hjkmnp-z]{20}$/, "x-deno-sandbox-id must match the SDK's id regex");
});

dtest(d, "sh: echo hello", async () => {
  assert.equal(await sb.sh`echo hello`.text(), "hello\n");
});

dtest(d, "sh: runs in /home/app as a login-ish bash with HOME set", async () => {
  assert.equal(await sb.sh`pwd`.text(), "/home/app\n");
  assert.equal(await sb.sh`echo $HOME`.text(), "/home/app\n");
  assert.equal((await sb.sh`echo "$BASH_VERSION"`.text()).trim().length > 0, true, "sh must run bash");
});

dtest(d, "sh: interpolated values are quoted, not interpreted", async () => {
  const evil = "a b'c;$(echo pwned)";
  assert.equal(await sb.sh`printf %s ${evil}`.text(), evil);
});

dtest(d, "sh: non-zero exit throws SandboxCommandError with the code; noThrow returns it", async () => {
  const err = await sb.sh`exit 7`.then(() => null, (e) => e);
  assert.ok(err instanceof SandboxCommandError, `expected SandboxCommandError, got ${err}`);
  assert.equal(err.code, 7);
  const res = await sb.sh`exit 5`.noThrow();
  assert.equal(res.status.code, 5);
  assert.equal(res.status.success, false);
});

dtest(d, "spawn: piped stdout and stderr, exit code 3", async () => {
  const child = await sb.spawn("bash", {
    args: ["-c", "echo out; echo err >&2; exit 3"],
    stdout: "piped",
    stderr: "piped",
  });
  assert.equal(typeof child.pid, "number");
  const out = await child.output();
  assert.equal(out.stdoutText, "out\n");
  assert.equal(out.stderrText, "err\n");
  assert.equal(out.status.code, 3);
  assert.equal(out.status.success, false);
  assert.equal(out.status.signal, null);
  assert.equal(out.status.oom, false);
});

dtest(d, "spawn: stdout 'null' gives no stream", async () => {
  const child = await sb.spawn("echo", { args: ["x"], stdout: "null", stderr: "null" });
  assert.equal(child.stdout, null);
  const st = await child.status;
  assert.equal(st.code, 0);
  assert.equal(st.success, true);
});

dtest(d, "spawn: stdin piped to cat, EOF on close", async () => {
  const child = await sb.spawn("cat", { stdin: "piped", stdout: "piped", stderr: "null" });
  const w = child.stdin.getWriter();
  const enc = new TextEncoder();
  await w.write(enc.encode("abc"));
  await w.write(enc.encode("def\n"));
  await w.close();
  const out = await withTimeout(child.output(), 15_000, "cat did not exit after stdin close (EOF not delivered?)");
  assert.equal(out.stdoutText, "abcdef\n");
  assert.equal(out.status.code, 0);
});

dtest(d, "spawn: large output arrives complete and in order", async () => {
  // ~2 MB through the stream machinery; catches dropped/reordered chunks.
  const out = await sb.spawn("bash", { args: ["-c", "seq 1 300000"], stdout: "piped", stderr: "null" }).then((c) => c.output());
  const lines = out.stdoutText.split("\n");
  assert.equal(lines.length, 300001);
  assert.equal(lines[0], "1");
  assert.equal(lines[299999], "300000");
  assert.equal(out.status.code, 0);
});

dtest(d, "kill('SIGKILL') of a sleeping child: code 137, signal SIGKILL", async () => {
  const child = await sb.spawn("sleep", { args: ["60"], stdout: "null", stderr: "null" });
  await child.kill("SIGKILL");
  const st = await withTimeout(child.status, 10_000, "status after SIGKILL");
  assert.equal(st.code, 137);
  assert.equal(st.signal, "SIGKILL");
  assert.equal(st.success, false);
  assert.equal(st.oom, false, "a plain SIGKILL is not an OOM kill");
});

dtest(d, "kill() default SIGTERM: code 143", async () => {
  const child = await sb.spawn("sleep", { args: ["60"], stdout: "null", stderr: "null" });
  await child.kill();
  const st = await withTimeout(child.status, 10_000, "status after SIGTERM");
  assert.equal(st.code, 143);
  assert.equal(st.signal, "SIGTERM");
});

dtest(d, "spawn of a missing binary fails with NotFound-like error", async () => {
  const err = await sb.spawn("/no/such/binary", { stdout: "null", stderr: "null" }).then(
    async (c) => ({ status: await c.status }),
    (e) => e,
  );
  // Either the spawn rejects (Deno semantics: NotFound/ENOENT) or a status
  // reports failure; silently succeeding is the bug.
  if (err instanceof Error) assert.match(`${err.name} ${err.code} ${err.message}`, /NotFound|ENOENT|No such file/i);
  else assert.equal(err.status.success, false);
});

dtest(d, "env option at create is visible to processes", async () => {
  const s2 = await d.create("a", { env: { FOO_AT_CREATE: "bar baz", SECOND: "2" } });
  try {
    assert.equal(await s2.sh`printf %s "$FOO_AT_CREATE"`.text(), "bar baz");
    assert.equal(await s2.env.get("SECOND"), "2");
  } finally {
    await s2.close();
  }
});

dtest(d, "env API: set/get/toObject/delete, and spawned processes see it", async () => {
  await sb.env.set("MY_VAR", "hello world");
  assert.equal(await sb.env.get("MY_VAR"), "hello world");
  const obj = await sb.env.toObject();
  assert.equal(obj.MY_VAR, "hello world");
  const child = await sb.spawn("bash", { args: ["-c", 'printf %s "$MY_VAR"'], stdout: "piped", stderr: "null" });
  assert.equal((await child.output()).stdoutText, "hello world");
  assert.equal(await sb.sh`printf %s "$MY_VAR"`.text(), "hello world");
  await sb.env.delete("MY_VAR");
  assert.equal(await sb.env.get("MY_VAR"), undefined);
  assert.equal((await sb.env.toObject()).MY_VAR, undefined);
  assert.equal(await sb.sh`printf %s "\${MY_VAR-unset}"`.text(), "unset");
});

dtest(d, "spawn env option overrides for that process only", async () => {
  const child = await sb.spawn("bash", {
    args: ["-c", 'printf %s "$ONLY_HERE"'],
    env: { ONLY_HERE: "yes" },
    stdout: "piped",
    stderr: "null",
  });
  assert.equal((await child.output()).stdoutText, "yes");
  assert.equal(await sb.env.get("ONLY_HERE"), undefined);
});

dtest(d, "close() of the shared sandbox resolves", async () => {
  await withTimeout(sb.close(), 10_000, "close()");
});

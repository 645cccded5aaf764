// The SSH gateway (exposeSsh) driven by a real OpenSSH client: exec with
// separate stdout/stderr and the exit code, stdin and bulk output through the
// flow control, an interactive shell on a terminal (window size and resize),
// scp and sftp, refusals, and what a killed sandbox does to its sessions.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after } from "node:test";
import { SANDBOXD_BIN, useDaemon, dtest, withTimeout, waitFor } from "../lib/harness.mjs";

const d = useDaemon({ orgs: ["a", "b"], extraArgs: ["--ssh-listen", "127.0.0.1:0"] });
const local = mkdtempSync(join(tmpdir(), "sbxd-ssh-local-"));
after(() => rmSync(local, { recursive: true, force: true }));

let sb; // shared sandbox, created with {ssh: true}
let user;

/** Options every OpenSSH invocation here uses: no user config, no known_hosts, no prompts. */
function baseOpts(logLevel = "ERROR") {
  return [
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", `LogLevel=${logLevel}`,
    "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=10",
  ];
}
const sshArgs = (u, rest, logLevel) => [...baseOpts(logLevel), "-p", String(d.sshPort), `${u}@127.0.0.1`, ...rest];

/** Runs a program to completion; resolves {code, signal, stdout (Buffer), stderr (string), ms}. */
function run(cmd, args, { input, timeoutMs = 30_000, env } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], env: env ?? process.env });
    const out = [];
    const err = [];
    p.stdout.on("data", (c) => out.push(c));
    p.stderr.on("data", (c) => err.push(c));
    const timer = setTimeout(() => {
      p.kill("SIGKILL");
      reject(new Error(`${cmd} ${args.join(" ")}: no exit within ${timeoutMs} ms; stderr: ${Buffer.concat(err)}`));
    }, timeoutMs);
    p.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString(), ms: performance.now() - t0 });
    });
    p.stdin.on("error", () => {}); // the remote may stop reading early
    if (input !== undefined) p.stdin.end(input);
    else p.stdin.end();
  });
}
const ssh = (u, rest, opts = {}) => run("ssh", sshArgs(u, rest, opts.logLevel), opts);

dtest(d, "exposeSsh: Sandbox.create({ssh: true}) gets {hostname, username}; REST adds the port", async () => {
  sb = await d.create("a", { ssh: true });
  assert.ok(sb.ssh, "sandbox.ssh must be set after create with ssh: true");
  assert.equal(sb.ssh.hostname, "127.0.0.1");
  assert.match(sb.ssh.username, /^[a-z2-7]{26}$/, "a random username of at least 128 bits");
  user = sb.ssh.username;
  // Asking again names the same credential.
  assert.deepEqual(await sb.exposeSsh(), { hostname: "127.0.0.1", username: user });
  const res = await d.fetch(`/api/v3/sandbox/${sb.id}/expose/ssh`, { method: "POST", body: "{}" });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { hostname: "127.0.0.1", username: user, port: d.sshPort });
  // Another org cannot expose (or even see) it.
  const other = await d.fetch(`/api/v3/sandbox/${sb.id}/expose/ssh`, { org: "b", method: "POST", body: "{}" });
  assert.equal(other.status, 404);
});

dtest(d, "exec: separate stdout and stderr, and `ssh host 'exit 7'` returns 7", async () => {
  const r = await ssh(user, ["echo out; echo err >&2; whoami; pwd; exit 7"]);
  assert.equal(r.code, 7, r.stderr);
  assert.equal(r.stdout.toString(), "out\napp\n/home/app\n");
  assert.equal(r.stderr, "err\n");
  assert.equal((await ssh(user, ["exit 7"])).code, 7);
  assert.equal((await ssh(user, ["true"])).code, 0);
});

dtest(d, "exec: the sandbox environment, no terminal unless asked for", async () => {
  await sb.env.set("SSH_TEST_VAR", "from-env-set");
  const r = await ssh(user, ['echo "$SSH_TEST_VAR|$HOME|$USER"; test -t 0 && echo tty || echo notty']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), "from-env-set|/home/app|app\nnotty\n");
});

dtest(d, "exec: a process killed by a signal ends the session with exit-signal", async () => {
  const r = await ssh(user, ["kill -KILL $$"]);
  // OpenSSH reports a remote death by signal as 255.
  assert.equal(r.code, 255, r.stderr);
});

dtest(d, "exec: stdin reaches the process, EOF ends it, and bulk output arrives whole", async () => {
  const input = randomBytes(3 * 1024 * 1024);
  const r = await ssh(user, ["sha256sum; echo done >&2"], { input });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString().split(" ")[0], createHash("sha256").update(input).digest("hex"));
  assert.equal(r.stderr, "done\n");
  const big = await ssh(user, ["head -c 20000000 /dev/zero"]);
  assert.equal(big.code, 0, big.stderr);
  assert.equal(big.stdout.length, 20_000_000);
});

dtest(d, "exec: a command that does not exist is 127 with bash's message", async () => {
  const r = await ssh(user, ["no-such-command-here"]);
  assert.equal(r.code, 127);
  assert.match(r.stderr, /no-such-command-here: command not found/);
});

// Runs ssh on a real terminal (python's pty), as a person would: the shell
// must see the terminal's size, follow a resize, and exit with its status.
const PTY_DRIVER = String.raw`
import fcntl, json, os, pty, re, select, struct, sys, termios, time
args = json.loads(sys.argv[1])
def setsize(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
pid, fd = pty.fork()
if pid == 0:
    setsize(0, 33, 101)
    os.execvp(args[0], args)
buf = b""
def until(pat, timeout=20):
    global buf
    deadline = time.time() + timeout
    while True:
        m = re.search(pat, buf)
        if m:
            buf = buf[m.end():]
            return m
        left = deadline - time.time()
        if left <= 0:
            sys.exit("timeout waiting for %r; got %r" % (pat, buf[-400:]))
        if select.select([fd], [], [], left)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                sys.exit("EOF waiting for %r; got %r" % (pat, buf[-400:]))
            buf += data
res = {}
until(rb"\$ ")
os.write(fd, b"stty size; echo T=$TERM; tty\r")
m = until(rb"(\d+) (\d+)\r\nT=(\S*)\r\n(\S+)\r\n")
res["size"] = [int(m.group(1)), int(m.group(2))]
res["term"] = m.group(3).decode()
res["tty"] = m.group(4).decode()
setsize(fd, 40, 120)  # the client gets SIGWINCH and sends window-change
for attempt in range(50):
    os.write(fd, b"stty size\r")
    m = until(rb"[\r\n](\d+) (\d+)\r\n")
    res["resized"] = [int(m.group(1)), int(m.group(2))]
    if res["resized"] == [40, 120]:
        break
    time.sleep(0.1)
os.write(fd, b"exit 3\r")
_, status = os.waitpid(pid, 0)
res["exit"] = os.waitstatus_to_exitcode(status)
print(json.dumps(res))
`;

dtest(d, "shell on a pty: the program sees the window size, follows a resize, exit status returns", async () => {
  const args = ["ssh", "-tt", ...sshArgs(user, [])];
  const r = await run("python3", ["-c", PTY_DRIVER, JSON.stringify(args)], {
    env: { ...process.env, TERM: "xterm-256color" },
  });
  assert.equal(r.code, 0, `pty driver failed: ${r.stderr}`);
  const res = JSON.parse(r.stdout.toString());
  assert.deepEqual(res.size, [33, 101]);
  assert.equal(res.term, "xterm-256color");
  assert.match(res.tty, /^\/dev\/pts\/\d+$/);
  assert.deepEqual(res.resized, [40, 120]);
  assert.equal(res.exit, 3);
});

dtest(d, "scp and sftp: a file round-trips byte for byte", async () => {
  const data = randomBytes(700 * 1024);
  const src = join(local, "up.bin");
  const back = join(local, "back.bin");
  const back2 = join(local, "back2.bin");
  writeFileSync(src, data);
  const scpOpts = [...baseOpts(), "-P", String(d.sshPort)];
  let r = await run("scp", [...scpOpts, src, `${user}@127.0.0.1:/home/app/up.bin`]);
  assert.equal(r.code, 0, `scp upload: ${r.stderr}`);
  // The file is in the sandbox, owned by the sandbox user.
  r = await ssh(user, ["stat -c '%U %s' up.bin; sha256sum up.bin"]);
  assert.equal(r.stdout.toString().split("\n")[0], `app ${data.length}`);
  assert.match(r.stdout.toString(), new RegExp(createHash("sha256").update(data).digest("hex")));
  r = await run("scp", [...scpOpts, `${user}@127.0.0.1:/home/app/up.bin`, back]);
  assert.equal(r.code, 0, `scp download: ${r.stderr}`);
  assert.ok(readFileSync(back).equals(data), "scp download differs");
  // sftp in batch mode: rename and fetch.
  const batch = "rename up.bin moved.bin\nget moved.bin " + back2 + "\nls -1\n";
  r = await run("sftp", [...baseOpts(), "-P", String(d.sshPort), "-b", "-", `${user}@127.0.0.1`], { input: batch });
  assert.equal(r.code, 0, `sftp: ${r.stderr}`);
  assert.ok(readFileSync(back2).equals(data), "sftp download differs");
  assert.match(r.stdout.toString(), /moved\.bin/);
});

dtest(d, "a wrong username is refused with a clear message", async () => {
  const r = await ssh("abcdefghijklmnopqrstuvwxyz", ["true"], { logLevel: "INFO" });
  assert.equal(r.code, 255);
  assert.match(r.stderr, /unknown SSH username/);
  const root = await ssh("root", ["true"], { logLevel: "INFO" });
  assert.equal(root.code, 255);
  assert.match(root.stderr, /unknown SSH username/);
});

dtest(d, "an open SSH session keeps a session sandbox alive after its SDK client leaves", async () => {
  const s2 = await d.create("a");
  const { username } = await s2.exposeSsh();
  const p = spawn("ssh", sshArgs(username, ["echo started; sleep 2; echo still-here"]), { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  p.stdout.on("data", (c) => (out += c));
  p.stderr.on("data", (c) => (err += c));
  const exited = new Promise((resolve) => p.on("close", (code) => resolve(code)));
  await waitFor(() => out.includes("started"), { timeoutMs: 15_000, what: "the session to start" });
  await s2.close(); // the SDK client leaves; the SSH connection is still attached
  assert.equal(await withTimeout(exited, 15_000, "ssh"), 0, err);
  assert.equal(out, "started\nstill-here\n");
  await d.waitStatus(s2.id, "stopped", { timeoutMs: 10_000 });
});

dtest(d, "a killed sandbox ends its open sessions and refuses new ones", async () => {
  const s3 = await d.create("a", { ssh: true });
  const u = s3.ssh.username;
  const p = spawn("ssh", sshArgs(u, ["echo ready; sleep 60"]), { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let err = "";
  p.stdout.on("data", (c) => (out += c));
  p.stderr.on("data", (c) => (err += c));
  const exited = new Promise((resolve) => p.on("close", (code) => resolve(code)));
  await waitFor(() => out.includes("ready"), { timeoutMs: 15_000, what: "the session to start" });
  const t0 = Date.now();
  await s3.kill();
  const code = await withTimeout(exited, 10_000, "ssh after kill");
  assert.equal(code, 255);
  assert.ok(Date.now() - t0 < 10_000);
  assert.match(err, /stopped/);
  const again = await ssh(u, ["true"], { logLevel: "INFO" });
  assert.equal(again.code, 255);
  assert.match(again.stderr, /not running|unknown SSH username/);
});

dtest(d, "timing: ssh host true round trip", async (t) => {
  const times = [];
  for (let i = 0; i < 5; i++) {
    const r = await ssh(user, ["true"]);
    assert.equal(r.code, 0, r.stderr);
    times.push(r.ms);
  }
  times.sort((a, b) => a - b);
  t.diagnostic(`ssh host true: median ${times[2].toFixed(1)} ms, min ${times[0].toFixed(1)} ms`);
  console.log(`# ssh host true: median ${times[2].toFixed(1)} ms, min ${times[0].toFixed(1)} ms`);
});

const SANDBOX_CLI = join(dirname(SANDBOXD_BIN), "sandbox");

dtest(d, "CLI: `sandbox ssh ID CMD` runs the system ssh with the exposed credential", async (t) => {
  if (!existsSync(SANDBOX_CLI)) return t.skip(`no CLI at ${SANDBOX_CLI}`);
  const env = { ...process.env, DENO_SANDBOX_ENDPOINT: d.url, DENO_DEPLOY_TOKEN: d.tokens.a };
  const printed = await run(SANDBOX_CLI, ["ssh", "--print", sb.id], { env });
  assert.equal(printed.code, 0, printed.stderr);
  assert.equal(printed.stdout.toString(), `ssh -p ${d.sshPort} -o StrictHostKeyChecking=accept-new ${user}@127.0.0.1\n`);
  const opts = ["UserKnownHostsFile=/dev/null", "StrictHostKeyChecking=no", "BatchMode=yes", "LogLevel=ERROR"];
  const r = await run(SANDBOX_CLI, ["ssh", ...opts.flatMap((o) => ["-o", o]), sb.id, "echo", "hi;", "exit", "5"], { env });
  assert.equal(r.code, 5, r.stderr);
  assert.equal(r.stdout.toString(), "hi\n");
});

dtest(d, "the host key is generated once, kept 0600 in the data dir, and survives a restart", async () => {
  const keyPath = join(d.dataDir, "ssh_host_ed25519_key");
  assert.equal(statSync(keyPath).mode & 0o777, 0o600);
  const scan = async () => {
    const r = await run("ssh-keyscan", ["-t", "ed25519", "-p", String(d.sshPort), "127.0.0.1"]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.toString().trim().split(/\s+/).slice(1).join(" ");
  };
  const before = await scan();
  assert.match(before, /^ssh-ed25519 /);
  const pub = (await run("ssh-keygen", ["-y", "-f", keyPath])).stdout.toString().trim();
  assert.equal(before, pub.split(/\s+/).slice(0, 2).join(" "));
  await d.closeTracked();
  await d.stop();
  await d.start({ orgs: ["a", "b"], extraArgs: ["--ssh-listen", "127.0.0.1:0"], restart: true });
  assert.equal(await scan(), before);
});

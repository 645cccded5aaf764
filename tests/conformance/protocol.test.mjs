// Protocol robustness with a raw `ws` client after a successful create
// upgrade: keepalive, garbage, unknown methods, oversized messages, and a
// client that vanishes mid-stream. After each, the daemon must keep serving.
import assert from "node:assert/strict";
import { useDaemon, dtest, withTimeout } from "../lib/harness.mjs";
import { rawCreate, recorder, rpc } from "../lib/rawws.mjs";

const d = useDaemon({ orgs: ["a"] });

async function open() {
  const res = await rawCreate(d.url, d.tokens.a);
  assert.equal(res.ok, true, `create upgrade failed: ${res.status} ${res.body}`);
  assert.match(res.id ?? "", /^sbx_[a-z]{3}_[0-9a-hjkmnp-z]{20}$/, "101 must carry x-deno-sandbox-id");
  assert.equal(res.headers["sec-websocket-protocol"], undefined, "no subprotocol may be sent back");
  return { ...res, rec: recorder(res.ws) };
}

/** The daemon still works: a fresh SDK sandbox runs a command. */
async function stillServes() {
  const sb = await d.create("a");
  assert.equal(await sb.sh`echo serving`.text(), "serving\n");
  await sb.close();
}

dtest(d, "text 'ping' is answered with text 'pong'", async () => {
  const { ws, rec } = await open();
  ws.send("ping");
  const m = await rec.next((x) => x.text === "pong", 5_000, "pong");
  assert.equal(m.isBinary, false, "pong must be a text frame");
  ws.close();
  await rec.closedWithin(5_000);
});

dtest(d, "malformed JSON closes the connection with 4000", async () => {
  const { ws, rec, id } = await open();
  ws.send("{this is not json");
  const c = await rec.closedWithin(5_000, "close after malformed JSON");
  assert.equal(c.code, 4000);
  // The raw create was the primary connection of a session sandbox: it ends.
  await d.waitStatus(id, "stopped", { timeoutMs: 8_000 });
  await stillServes();
});

dtest(d, "valid JSON that is not JSON-RPC 2.0 closes with 4001", async () => {
  for (const bad of ['{"foo":1}', '{"jsonrpc":"1.0","id":1,"method":"envToObject","params":{}}', "[]", "42"]) {
    const { ws, rec } = await open();
    ws.send(bad);
    const c = await rec.closedWithin(5_000, `close after ${bad}`);
    assert.equal(c.code, 4001, `message ${bad}: close code`);
  }
  await stillServes();
});

dtest(d, "unknown method: JSON-RPC error -32601 echoing the numeric id (0 included)", async () => {
  const { ws, rec } = await open();
  for (const id of [0, 7, 123456789]) {
    ws.send(rpc(id, "noSuchMethod", {}));
    const m = await rec.next((x) => x.json && x.json.id === id, 5_000, `reply to id ${id}`);
    assert.equal(m.json.jsonrpc, "2.0");
    assert.equal(typeof m.json.id, "number", "id must keep its JSON type");
    assert.equal(m.json.error?.code, -32601, `reply: ${m.text}`);
    assert.equal(typeof m.json.error?.message, "string");
    assert.equal(m.json.result, undefined);
  }
  // The connection is still usable afterwards.
  ws.send(rpc(8, "envToObject", {}));
  const ok = await rec.next((x) => x.json && x.json.id === 8, 5_000, "envToObject reply");
  assert.equal(typeof ok.json.result?.ok, "object", ok.text);
  assert.ok(!rec.msgs.some((x) => x.json && x.json.id === null), "never answer with id null");
  ws.close();
});

dtest(d, "a 70 MiB message closes the connection with 1009; the daemon keeps serving", async () => {
  const { ws, rec, id } = await open();
  const big = Buffer.alloc(70 * 1024 * 1024, 0x61).toString("latin1");
  ws.send(big);
  const c = await withTimeout(rec.closed, 30_000, "close after 70 MiB message");
  assert.equal(c.code, 1009, `close code ${c.code} (${c.reason})`);
  await d.waitStatus(id, "stopped", { timeoutMs: 8_000 });
  await stillServes();
});

dtest(d, "a client that vanishes mid-stream (yes | piped) does not hurt the daemon", async () => {
  const { ws, rec, id } = await open();
  ws.send(rpc(0, "spawn", { command: "yes", stdout: "piped", stderr: "null" }));
  const res = await rec.next((x) => x.json && x.json.id === 0, 10_000, "spawn reply");
  const sid = res.json.result?.ok?.stdoutStreamId;
  assert.equal(typeof sid, "number", `spawn reply: ${res.text}`);
  // Wait for real data to flow, then drop the TCP connection without a close frame.
  await rec.next((x) => x.json?.method === "$sandbox.stream.enqueue" && x.json.params?.streamId === sid, 10_000, "stdout data");
  ws._socket.destroy();
  // The session sandbox must end (its only connection is gone) ...
  await d.waitStatus(id, "stopped", { timeoutMs: 10_000 });
  // ... and the daemon keeps serving others.
  await stillServes();
  assert.ok(d.isRunning(), "daemon must still be running");
});

dtest(d, "a client that stops reading while `yes` floods does not wedge other sandboxes", async () => {
  const { ws, rec, id } = await open();
  ws.send(rpc(0, "spawn", { command: "yes", stdout: "piped", stderr: "null" }));
  await rec.next((x) => x.json && x.json.id === 0, 10_000, "spawn reply");
  ws._socket.pause(); // stop reading: the daemon must apply back-pressure, not buffer without bound
  await stillServes();
  ws._socket.destroy();
  await d.waitStatus(id, "stopped", { timeoutMs: 10_000 });
});

dtest(d, "stream notifications for unknown ids and unknown notifications are ignored", async () => {
  const { ws, rec } = await open();
  ws.send(JSON.stringify({ jsonrpc: "2.0", method: "$sandbox.stream.enqueue", params: { streamId: 999999, data: "YQ==" } }));
  ws.send(JSON.stringify({ jsonrpc: "2.0", method: "$sandbox.nonsense", params: {} }));
  ws.send(rpc(1, "envToObject", {}));
  const ok = await rec.next((x) => x.json && x.json.id === 1, 5_000, "envToObject reply");
  assert.equal(typeof ok.json.result?.ok, "object", ok.text);
  ws.close();
});

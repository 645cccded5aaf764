// Refusals: bad config (SDK-side and server-side), bad tokens, unknown ids,
// and organisation isolation.
import assert from "node:assert/strict";
import {
  Sandbox,
  Client,
  ApiError,
  ConnectionEstablishmentError,
  InvalidMemoryError,
  InvalidTokenError,
} from "@deno/sandbox";
import { useDaemon, dtest, withTimeout, rejects } from "../lib/harness.mjs";
import { rawCreate, b64 } from "../lib/rawws.mjs";

const d = useDaemon({ orgs: ["a", "b"] });

// WIRE.md §1.6 names both for bad labels; the brief only requires a 400.
const LABEL_CODES = ["INVALID_CONFIG", "INVALID_LABELS"];

// Ids only: statuses of earlier session sandboxes may legitimately change meanwhile.
const ids = async (org) => (await d.list(org)).map((s) => s.id).sort();

dtest(d, "out-of-range memory is rejected by the SDK (InvalidMemoryError) before any I/O", async () => {
  for (const memory of ["100MiB", "5GiB", 2048, "767MiB"]) {
    const err = await rejects(Sandbox.create(d.opts("a", { memory })), `create with memory ${memory}`);
    assert.ok(err instanceof InvalidMemoryError, `memory ${memory}: expected InvalidMemoryError, got ${err}`);
  }
});

/** One raw create that must be refused with 400 and `code` (or one of several), creating nothing. */
async function expectRefused(what, upgradeOpts, code = "INVALID_CONFIG") {
  const before = await ids("a");
  const res = await rawCreate(d.url, d.tokens.a, undefined, upgradeOpts);
  if (res.ok) res.ws.terminate();
  assert.equal(res.ok, false, `${what}: the upgrade must be refused, got 101 (id ${res.id})`);
  assert.equal(res.status, 400, `${what}: status ${res.status}, body ${res.body}`);
  assert.ok(res.json && typeof res.json === "object", `${what}: body must be JSON, got ${JSON.stringify(res.body)}`);
  const codes = Array.isArray(code) ? code : [code];
  assert.ok(codes.includes(res.json.code), `${what}: code must be one of ${codes.join("/")}; body ${res.body}`);
  assert.equal(typeof res.json.message, "string");
  assert.match(String(res.headers["content-type"]), /application\/json/);
  assert.deepEqual(await ids("a"), before, `${what}: nothing may be created`);
}

dtest(d, "raw create with memory_mb 100 gets 400 INVALID_CONFIG", async () => {
  await expectRefused("memory_mb 100", { config: { memory_mb: 100, volumes: [] } });
  await expectRefused("memory_mb 5000", { config: { memory_mb: 5000, volumes: [] } });
});

dtest(d, "raw create with 6 labels gets 400", async () => {
  const labels = Object.fromEntries([1, 2, 3, 4, 5, 6].map((i) => [`k${i}`, "v"]));
  await expectRefused("6 labels", { config: { memory_mb: 1280, labels, volumes: [] } }, LABEL_CODES);
});

dtest(d, "raw create with a 65-byte label key (and a 129-byte value) gets 400", async () => {
  await expectRefused("65-byte key", { config: { memory_mb: 1280, labels: { ["k".repeat(65)]: "v" }, volumes: [] } }, LABEL_CODES);
  await expectRefused("129-byte value", { config: { memory_mb: 1280, labels: { k: "v".repeat(129) }, volumes: [] } }, LABEL_CODES);
});

dtest(d, "limits are inclusive: 5 labels, 64-byte key, 128-byte value are accepted", async () => {
  const labels = { ["k".repeat(64)]: "v".repeat(128), a: "1", b: "2", c: "3", e: "4" };
  const res = await rawCreate(d.url, d.tokens.a, { memory_mb: 768, labels, volumes: [] });
  assert.equal(res.ok, true, `expected 101, got ${res.status} ${res.body}`);
  assert.match(res.id ?? "", /^sbx_[a-z]{3}_[0-9a-hjkmnp-z]{20}$/);
  const entry = (await d.list("a")).find((s) => s.id === res.id);
  assert.deepEqual(entry?.labels, labels);
  res.ws.close();
});

dtest(d, "raw create with a malformed base64 config header gets 400", async () => {
  await expectRefused("not base64", { configRaw: "%%%not-base64%%%" });
  await expectRefused("base64 of non-JSON", { configRaw: b64("{memory_mb:") });
  await expectRefused("base64 of a JSON array", { configRaw: b64("[1,2]") });
});

dtest(d, 'raw create with "region":"xyz" gets 400 REGION_NOT_SERVED', async () => {
  await expectRefused("region xyz", { config: { memory_mb: 1280, volumes: [], region: "xyz" } }, "REGION_NOT_SERVED");
});

dtest(d, "a bad token is rejected with InvalidTokenError (create, connect) and 401 on REST", async () => {
  const bad = "ddo_" + "0".repeat(40);
  const err = await rejects(Sandbox.create({ ...d.opts("a"), token: bad }), "create with a bad token");
  assert.ok(err instanceof InvalidTokenError, `expected InvalidTokenError, got ${err}`);
  const sb = await d.create("a");
  try {
    const err2 = await rejects(Sandbox.connect({ id: sb.id, ...d.opts("a"), token: bad }), "connect with a bad token");
    assert.ok(err2 instanceof InvalidTokenError, `expected InvalidTokenError, got ${err2}`);
    const err3 = await rejects(new Client({ token: bad, apiEndpoint: d.url }).sandboxes.list(), "list with a bad token");
    assert.ok(err3 instanceof ApiError, `expected ApiError, got ${err3}`);
    assert.equal(err3.status, 401);
    assert.equal(err3.code, "INVALID_TOKEN");
    const del = await d.fetch(`/api/v3/sandbox/${sb.id}`, { method: "DELETE", token: bad });
    assert.equal(del.status, 401);
    const noAuth = await fetch(`${d.url}/api/v3/sandbox/${sb.id}`, { method: "DELETE" });
    assert.equal(noAuth.status, 401, "DELETE without Authorization must be 401");
    assert.equal(await d.statusOf(sb.id), "running", "a refused DELETE must not stop the sandbox");
    assert.equal(await sb.sh`echo ok`.text(), "ok\n");
  } finally {
    await sb.close();
  }
});

dtest(d, "connect to a well-formed unknown id: ConnectionEstablishmentError 404", async () => {
  const err = await rejects(Sandbox.connect({ id: "sbx_ord_0123456789abcdefghjk", ...d.opts("a") }), "connect unknown id");
  assert.ok(err instanceof ConnectionEstablishmentError, `expected ConnectionEstablishmentError, got ${err}`);
  assert.equal(err.status, 404);
  assert.equal(err.code, "SANDBOX_NOT_FOUND");
});

dtest(d, "org B cannot see, connect to, extend or kill org A's sandbox", async () => {
  const sbA = await d.create("a", { timeout: "1m", labels: { owner: "a" } });
  try {
    const listB = await d.list("b");
    assert.ok(!listB.some((s) => s.id === sbA.id), "org B's list must not contain A's sandbox");
    assert.deepEqual(await d.list("b", { owner: "a" }), []);

    const err = await rejects(d.connect(sbA.id, "b"), "org B connecting to A's sandbox");
    assert.ok(err instanceof ConnectionEstablishmentError, `expected ConnectionEstablishmentError, got ${err}`);
    assert.ok([403, 404].includes(err.status), `status ${err.status}`);

    const del = await d.fetch(`/api/v3/sandbox/${sbA.id}`, { org: "b", method: "DELETE" });
    assert.ok([403, 404].includes(del.status), `org B's DELETE answered ${del.status}`);
    const patch = await d.fetch(`/api/v3/sandbox/${sbA.id}`, {
      org: "b",
      method: "PATCH",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ stop_at_ms: Date.now() + 60_000 }),
    });
    assert.ok([403, 404].includes(patch.status), `org B's PATCH answered ${patch.status}`);

    assert.equal(await d.statusOf(sbA.id, "a"), "running", "A's sandbox must survive B's attempts");
    assert.equal(await sbA.sh`echo alive`.text(), "alive\n");
  } finally {
    await withTimeout(sbA.kill(), 15_000, "kill()");
  }
});

// A raw WebSocket client (the `ws` package, as the SDK uses) for checks the
// SDK cannot express: hand-made config headers, garbage frames, oversized
// messages, abrupt disconnects.
import WebSocket from "ws";

export const b64 = (s) => Buffer.from(s, "latin1").toString("base64");
export const configHeader = (cfg) => b64(JSON.stringify(cfg));

/**
 * Opens an upgrade to `path` with the given headers. Resolves to
 *   { ok: true, ws, id, headers }                  on 101
 *   { ok: false, status, body, json, headers }     on any other status
 * Rejects on network errors or after `timeoutMs`.
 */
export function rawUpgrade(baseUrl, path, { token, config, configRaw, headers = {}, timeoutMs = 30_000 } = {}) {
  const h = { ...headers };
  if (token !== undefined) h.authorization = `Bearer ${token}`;
  if (config !== undefined) h["x-deno-sandbox-config"] = configHeader(config);
  if (configRaw !== undefined) h["x-deno-sandbox-config"] = configRaw;
  const ws = new WebSocket(baseUrl.replace(/^http/, "ws") + path, [], { headers: h });
  return new Promise((resolve, reject) => {
    let id = null;
    let upgradeHeaders = null;
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`upgrade ${path}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.on("upgrade", (res) => {
      id = res.headers["x-deno-sandbox-id"] ?? null;
      upgradeHeaders = res.headers;
    });
    ws.on("open", () => {
      clearTimeout(timer);
      resolve({ ok: true, ws, id, headers: upgradeHeaders });
    });
    ws.on("unexpected-response", (_req, res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        clearTimeout(timer);
        const body = Buffer.concat(chunks).toString("utf8");
        let json = null;
        try {
          json = JSON.parse(body);
        } catch {}
        ws.terminate();
        resolve({ ok: false, status: res.statusCode, body, json, headers: res.headers });
      });
    });
    ws.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

export function rawCreate(baseUrl, token, config = { memory_mb: 1280, volumes: [] }, opts = {}) {
  return rawUpgrade(baseUrl, "/api/v3/sandboxes/create", { token, config, ...opts });
}

/**
 * Message/close recorder for a raw socket: `next(pred, ms)` waits for a text
 * message matching pred; `closed` resolves to {code, reason}.
 */
export function recorder(ws) {
  const msgs = [];
  const waiters = [];
  ws.on("message", (data, isBinary) => {
    const text = data.toString("utf8");
    const m = { text, isBinary, json: undefined };
    try {
      m.json = JSON.parse(text);
    } catch {}
    msgs.push(m);
    for (const w of [...waiters]) {
      if (w.pred(m)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  });
  const closed = new Promise((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString("utf8") })));
  ws.on("error", () => {}); // surfaced through `closed` (code 1006)
  return {
    msgs,
    closed,
    next(pred, ms = 10_000, what = "message") {
      const hit = msgs.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve };
        waiters.push(w);
        const timer = setTimeout(() => {
          const i = waiters.indexOf(w);
          if (i >= 0) {
            waiters.splice(i, 1);
            reject(new Error(`no ${what} within ${ms} ms; got ${msgs.length} messages, last: ${msgs.slice(-3).map((x) => x.text.slice(0, 200)).join(" | ")}`));
          }
        }, ms);
        timer.unref();
      });
    },
    /** Resolves to the close event, or rejects after `ms` (a connection the server should have closed). */
    closedWithin(ms, what = "server close") {
      return Promise.race([
        closed,
        new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: connection still open after ${ms} ms`)), ms).unref()),
      ]);
    },
  };
}

export const rpc = (id, method, params = {}) => JSON.stringify({ jsonrpc: "2.0", id, method, params });

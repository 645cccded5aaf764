// bench/ingress.sh's set-up through the official SDK: a timed sandbox (it
// outlives this script) running a small Node HTTP server, exposed with
// exposeHttp. Prints "id=…", "url=…", "marker=…" for the shell script.
// Env: DENO_SANDBOX_ENDPOINT, DENO_DEPLOY_TOKEN; arg: PORT.
import { Sandbox } from "@deno/sandbox";
import http from "node:http";
import { randomBytes } from "node:crypto";

const port = Number(process.argv[2] ?? 3000);
const ingressPort = Number(process.argv[3]);
const marker = "bench-ingress-" + randomBytes(4).toString("hex");
const SERVER = `
const body = Buffer.from("hello from the sandbox\\n");
require("http").createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
  res.end(body);
}).listen(Number(process.argv[2]), "127.0.0.1");
`;

const sb = await Sandbox.create({ timeout: "10m" });
await sb.fs.writeTextFile("/tmp/bench-srv.js", SERVER);
await sb.spawn("node", { args: ["/tmp/bench-srv.js", String(port), marker], stdout: "null", stderr: "null" });
const url = await sb.exposeHttp({ port });
// Plain HTTP to the ingress with the exposed name as Host, until it answers.
const host = new URL(url).host;
for (let i = 0; ; i++) {
  const ok = await new Promise((resolve) => {
    http
      .get({ host: "127.0.0.1", port: ingressPort, path: "/", headers: { host } }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      })
      .on("error", () => resolve(false));
  });
  if (ok) break;
  if (i > 100) throw new Error("the exposed server did not answer");
  await new Promise((r) => setTimeout(r, 100));
}
console.log(`id=${sb.id}`);
console.log(`url=${url}`);
console.log(`host=${host}`);
console.log(`marker=${marker}`);
await sb.close();

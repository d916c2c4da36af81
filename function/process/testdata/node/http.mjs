// The fourth function (fourth.mjs) behind a plain Node.js HTTP server, as
// idem's http function kind runs it: for comparing the latency of the two
// ways to run a Node.js function (see BENCHMARKS.md). It prints the port it
// listens on.
import http from "node:http";
import { handler } from "./fourth.mjs";

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    const out = await handler(JSON.parse(Buffer.concat(chunks).toString()));
    const body = JSON.stringify(out);
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => console.log(`listening on ${server.address().port}`));

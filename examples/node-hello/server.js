// A minimal HTTP server for Slipway's nodejs buildpack; listens on $PORT.
"use strict";
const http = require("node:http");

const port = Number(process.env.PORT || 5000);
const server = http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/plain" });
  res.end(`Hello from node-hello on ${process.env.DYNO || "unknown dyno"}\n`);
});
server.listen(port, "0.0.0.0", () => console.log(`listening on ${port}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));

// The reference Node socket.io server: the same /chats handlers as the bare Python server
// (a ping answered with the one ack envelope), no auth, no presence.
// Usage: node server.js PORT   (binds 127.0.0.1 only)
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const httpServer = http.createServer((req, res) => {
  res.writeHead(req.url === "/health" ? 200 : 404);
  res.end();
});
// socket.io 4 already defaults to perMessageDeflate: false; said here so nobody wonders.
const io = new Server(httpServer, { perMessageDeflate: false, transports: ["polling", "websocket"] });

io.of("/chats").on("connection", (socket) => {
  socket.on("ping", (data, ack) => {
    if (typeof ack === "function") ack({ ok: true, data: { status: "online" } });
  });
});

httpServer.listen(port, "127.0.0.1");
process.on("SIGTERM", () => process.exit(0));

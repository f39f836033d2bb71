// Send one acked event with the official socket.io-client and print, as one JSON
// line, the ack and the raw Engine.IO packets the server sent (what went over the wire).
//
//   node echo.js URL NAMESPACE TOKEN EVENT PAYLOAD_JSON
"use strict";

const { io } = require("socket.io-client");

const [url, namespace, token, event, payloadJson] = process.argv.slice(2);
const socket = io(url + namespace, {
  transports: ["websocket"],
  reconnection: false,
  timeout: 10000,
  auth: { token },
});
const raw = [];
socket.io.on("open", () => {
  socket.io.engine.on("packet", (packet) => raw.push(packet.data === undefined ? null : packet.data));
});

function finish(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
  socket.close();
  process.exit(0);
}

socket.on("connect", () => {
  socket.timeout(10000).emit(event, JSON.parse(payloadJson), (err, ack) => {
    finish(err ? { event: "ack_timeout" } : { event: "ack", ack, raw });
  });
});
socket.on("connect_error", (err) => finish({ event: "connect_error", message: err.message }));
setTimeout(() => finish({ event: "timeout" }), 20000);

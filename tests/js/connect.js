// Connect with the official socket.io-client the way a browser app does, and
// print one JSON line saying what happened.
//
//   node connect.js URL NAMESPACE TOKEN [TRANSPORTS]
//
// TOKEN "-" connects without a token. TRANSPORTS is a comma-separated list
// (default "polling,websocket": polling first, then the upgrade, as browsers do).
// On connect it sends an acked "ping" and prints {"event": "connect", "ack": ...};
// on a refusal it prints {"event": "connect_error", "message": ..., "data": ...}
// with err.data exactly as the client hands it to the app.
"use strict";

const { io } = require("socket.io-client");

const [url, namespace, token, transports] = process.argv.slice(2);
const options = {
  transports: (transports || "polling,websocket").split(","),
  reconnection: false,
  timeout: 10000,
};
if (token !== "-") {
  options.auth = { token };
}

const socket = io(url + namespace, options);

function finish(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
  socket.close();
  process.exit(0);
}

socket.on("connect", () => {
  socket.timeout(10000).emit("ping", {}, (err, ack) => {
    if (err) {
      finish({ event: "ack_timeout" });
    } else {
      finish({ event: "connect", ack, transport: socket.io.engine.transport.name });
    }
  });
});

socket.on("connect_error", (err) => {
  finish({ event: "connect_error", message: err.message, data: err.data === undefined ? null : err.data });
});

setTimeout(() => finish({ event: "timeout" }), 20000);

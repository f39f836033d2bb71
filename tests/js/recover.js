// Connection state recovery with the official socket.io-client, driven line by
// line from a Python test.
//
//   node recover.js URL TOKEN
//
// Connects to URL/chats and URL/notifications with auth {token, recover: true}
// (the only thing an app adds for recovery) and prints one JSON line per thing
// that happens: {"event": "connect", "nsp", "recovered", "pid"}, {"event": "disconnect",
// "nsp", "reason"}, {"event": "<name>", "nsp", "args"} for every event received,
// {"event": "ack", "id", "ack"} for a command's answer. Commands on stdin:
//   join ID CONVERSATION    chat:join, answered by an "ack" line
//   call ID EVENT JSON      any acked event on /chats (JSON without spaces)
//   close                   socket.io.engine.close(): the network went away
//   reconnect [URL]         connect again, to URL if given (another node behind
//                           the same load balancer); the client keeps pid and offset
//   forge PID OFFSET        a tampered client: present PID and OFFSET on the next connect
//   exit
"use strict";

const readline = require("readline");
const { io } = require("socket.io-client");

const [url, token] = process.argv.slice(2);
const options = { auth: { token, recover: true }, transports: ["websocket"], reconnection: false };
const sockets = {
  "/chats": io(url + "/chats", options),
  "/notifications": io(url + "/notifications", options),
};

function print(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

for (const [nsp, socket] of Object.entries(sockets)) {
  socket.on("connect", () =>
    print({ event: "connect", nsp, recovered: socket.recovered, pid: socket._pid || null }),
  );
  socket.on("disconnect", (reason) => print({ event: "disconnect", nsp, reason }));
  socket.on("connect_error", (err) => print({ event: "connect_error", nsp, message: err.message }));
  socket.onAny((event, ...args) => print({ event, nsp, args }));
}

const commands = {
  join(id, conversation) {
    commands.call(id, "chat:join", JSON.stringify({ conversation_id: conversation }));
  },
  call(id, event, json) {
    sockets["/chats"]
      .timeout(10000)
      .emit(event, JSON.parse(json), (err, ack) => print({ event: "ack", id, ack: err ? null : ack }));
  },
  close() {
    sockets["/chats"].io.engine.close();
  },
  reconnect(other) {
    const manager = sockets["/chats"].io;
    if (other) {
      manager.uri = other; // the Engine.IO socket is built from it on open
    }
    for (const socket of Object.values(sockets)) {
      socket.connect();
    }
  },
  forge(pid, offset) {
    sockets["/chats"]._pid = pid;
    sockets["/chats"]._lastOffset = offset;
  },
  exit() {
    for (const socket of Object.values(sockets)) {
      socket.close();
    }
    process.exit(0);
  },
};

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [name, ...args] = line.trim().split(/\s+/);
  if (commands[name]) {
    commands[name](...args);
  }
});

setTimeout(() => process.exit(3), 120000);

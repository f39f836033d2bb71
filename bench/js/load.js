// Load generator for make bench: many socket.io-client connections in one node process.
//
// Usage: node load.js '<json options>'; the HS256 secret comes from BENCH_JWT_SECRET (never argv,
// which other users can read in ps). Reports are JSON lines on stdout; the Python driver reads
// them and samples the server's CPU and RSS between them. Every phase is bounded in time: the
// process exits by itself after opts.maxSeconds whatever happens.
"use strict";

const crypto = require("crypto");
const readline = require("readline");
const { io } = require("socket.io-client");

const opts = JSON.parse(process.argv[2]);
const SECRET = process.env.BENCH_JWT_SECRET || "";
const now = () => performance.now();

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const hardStop = setTimeout(() => {
  emit({ event: "error", message: `hard time limit ${opts.maxSeconds}s reached` });
  process.exit(3);
}, opts.maxSeconds * 1000);
hardStop.unref();

function b64url(buf) {
  return Buffer.from(buf).toString("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}

// The servers under test accept HS256; signing here keeps 5,000 tokens off the command line.
function token(userId) {
  const iat = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub: userId, iat, exp: iat + 3600 }));
  const sig = b64url(crypto.createHmac("sha256", SECRET).update(`${head}.${body}`).digest());
  return `${head}.${body}.${sig}`;
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function summary(values) {
  const s = Float64Array.from(values).sort();
  return { n: s.length, p50: pct(s, 50), p99: pct(s, 99), max: s.length ? s[s.length - 1] : null };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TICK_MS = 100; // soak: the ping and churn timer

function open(url, namespace, userId) {
  return io(url + namespace, {
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
    timeout: 20000,
    // opts.recover: opt in to connection state recovery, as an app would
    auth: opts.recover ? { token: token(userId), recover: true } : { token: token(userId) },
  });
}

// Connect n sockets with at most `concurrency` handshakes in flight; returns sockets and latencies.
async function connectMany(url, namespace, prefix, n, concurrency, onSocket) {
  const sockets = new Array(n);
  const latencies = [];
  let failures = 0;
  let next = 0;
  const started = now();
  async function worker() {
    while (next < n) {
      const i = next++;
      const t0 = now();
      const sock = open(url, namespace, `${prefix}${i}`);
      if (onSocket) onSocket(sock, i);
      sockets[i] = sock;
      const ok = await new Promise((resolve) => {
        sock.once("connect", () => resolve(true));
        sock.once("connect_error", () => resolve(false));
      });
      if (ok) latencies.push(now() - t0);
      else failures++;
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  const seconds = (now() - started) / 1000;
  return { sockets, latencies, failures, seconds };
}

function closeAll(sockets) {
  for (const s of sockets) if (s) s.disconnect();
}

function waitLine(expected, ms) {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    const timer = setTimeout(() => { rl.close(); resolve(false); }, ms);
    rl.on("line", (line) => {
      if (line.trim() === expected) { clearTimeout(timer); rl.close(); resolve(true); }
    });
    rl.on("close", () => { clearTimeout(timer); resolve(false); });
  });
}

// (1) Connection storm: connect, report, hold idle until the driver has read the RSS.
async function storm() {
  const r = await connectMany(opts.url, opts.namespace, opts.prefix, opts.n, opts.concurrency);
  const lat = summary(r.latencies);
  emit({
    event: "connected",
    connected: r.latencies.length,
    failures: r.failures,
    seconds: r.seconds,
    connects_per_s: r.latencies.length / r.seconds,
    p50_ms: lat.p50,
    p99_ms: lat.p99,
  });
  await waitLine("close", opts.holdSeconds * 1000);
  closeAll(r.sockets);
  emit({ event: "done" });
}

// (2) Back-to-back acked pings from every connection; a warm-up, then a measured window.
async function pings() {
  const r = await connectMany(opts.url, opts.namespace, opts.prefix, opts.n, opts.concurrency);
  const connectLat = summary(r.latencies);
  emit({
    event: "ready",
    connected: r.latencies.length,
    failures: r.failures,
    seconds: r.seconds,
    connects_per_s: r.latencies.length / r.seconds,
    p50_ms: connectLat.p50,
    p99_ms: connectLat.p99,
  });
  // opts.holdSeconds: stay idle until the driver, having read the server's idle RSS, sends "go"
  // (bounded: the pings start anyway after holdSeconds).
  if (opts.holdSeconds) await waitLine("go", opts.holdSeconds * 1000);
  let measuring = false;
  let running = true;
  let acks = 0;
  let errors = 0;
  let timeouts = 0;
  const latencies = [];
  const errorCodes = {};
  let answered = 0; // clients that have had at least one answer
  async function loop(sock) {
    let first = true;
    while (running && sock.connected) {
      const t0 = now();
      let res;
      try {
        res = await sock.timeout(opts.ackTimeoutMs).emitWithAck("ping", {});
      } catch (e) {
        if (measuring) timeouts++;
        continue;
      }
      if (first) { first = false; answered++; }
      if (!measuring) continue;
      if (res && res.ok) {
        acks++;
        latencies.push(now() - t0);
      } else {
        errors++;
        const code = (res && res.error && res.error.code) || "unknown";
        errorCodes[code] = (errorCodes[code] || 0) + 1;
      }
    }
  }
  const loops = r.sockets.filter((s) => s && s.connected).map(loop);
  const warmupStart = now();
  await sleep(opts.warmupSeconds * 1000);
  // opts.warmupMaxSeconds: with 10,000 clients one round trip can outlast the warm-up; keep
  // warming up until every client has had an answer (bounded), so the window sees a steady state.
  if (opts.warmupMaxSeconds) {
    const deadline = warmupStart + opts.warmupMaxSeconds * 1000;
    while (answered < loops.length && now() < deadline) await sleep(50);
  }
  measuring = true;
  const t0 = now();
  emit({ event: "measuring", warmup_seconds: (t0 - warmupStart) / 1000, answered });
  await sleep(opts.seconds * 1000);
  measuring = false;
  const seconds = (now() - t0) / 1000;
  const lat = summary(latencies);
  emit({
    event: "result",
    clients: loops.length,
    acks,
    errors,
    error_codes: errorCodes,
    timeouts,
    seconds,
    acks_per_s: acks / seconds,
    p50_ms: lat.p50,
    p99_ms: lat.p99,
  });
  running = false;
  await Promise.race([Promise.all(loops), sleep(opts.ackTimeoutMs)]);
  closeAll(r.sockets);
  emit({ event: "done" });
}

// (3) Presence fan-out: n subscribers watch the target users; each round one target connects
// (-> online at every subscriber), then disconnects (-> offline after the grace).
async function fanout() {
  const targets = Array.from({ length: opts.rounds }, (_, i) => `${opts.prefix}target${i}`);
  const arrivals = new Map(); // "user:online" -> [arrival times]
  const onSocket = (sock) => {
    sock.on("presence:update", (u) => {
      const key = `${u.user_id}:${u.online}`;
      if (!arrivals.has(key)) arrivals.set(key, []);
      arrivals.get(key).push(now());
    });
  };
  const r = await connectMany(opts.url, opts.namespace, `${opts.prefix}sub`, opts.n, opts.concurrency, onSocket);
  const subs = r.sockets.filter((s) => s && s.connected);
  // 10,000 subscribes in flight queue up at the server: give each its share of time.
  const subscribeMs = Math.max(30000, subs.length * 10);
  await Promise.all(subs.map((s) => s.timeout(subscribeMs).emitWithAck("presence:subscribe", { user_ids: targets })));
  emit({ event: "ready", subscribers: subs.length });
  const online = [];
  const offline = [];
  let missing = 0;
  async function waitFor(key, count, ms) {
    const deadline = now() + ms;
    while (now() < deadline && (arrivals.get(key) || []).length < count) await sleep(2);
    return arrivals.get(key) || [];
  }
  for (const user of targets) {
    const t0 = now();
    const sock = open(opts.url, opts.namespace, user);
    const on = await waitFor(`${user}:true`, subs.length, opts.roundTimeoutMs);
    missing += subs.length - on.length;
    for (const t of on) online.push(t - t0);
    await sleep(50);
    const tDisconnect = now();
    sock.disconnect();
    const graceEnd = tDisconnect + opts.graceSeconds * 1000;
    const off = await waitFor(`${user}:false`, subs.length, opts.graceSeconds * 1000 + opts.roundTimeoutMs);
    missing += subs.length - off.length;
    for (const t of off) offline.push(t - graceEnd);
  }
  const a = summary(online);
  const b = summary(offline);
  emit({
    event: "result",
    subscribers: subs.length,
    rounds: targets.length,
    missing,
    online_p50_ms: a.p50,
    online_p99_ms: a.p99,
    offline_p50_ms: b.p50,
    offline_p99_ms: b.p99,
  });
  closeAll(r.sockets);
  emit({ event: "done" });
}

// (5) Cross-node latency: a sender on node B, a receiver on node A, in one conversation
// (chat:message); without the chats plugin's chat:message, a presence:update across nodes.
async function crossNode() {
  const conv = `${opts.prefix}conv`;
  const receiver = open(opts.urlA, "/chats", `${opts.prefix}rx`);
  const sender = open(opts.urlB, "/chats", `${opts.prefix}tx`);
  await Promise.all([receiver, sender].map((s) => new Promise((res, rej) => {
    s.once("connect", res);
    s.once("connect_error", rej);
  })));
  const joinA = await receiver.timeout(5000).emitWithAck("chat:join", { conversation_id: conv });
  const joinB = await sender.timeout(5000).emitWithAck("chat:join", { conversation_id: conv });
  const latencies = [];
  let mode = "chat:message";
  let missing = 0;
  if (joinA && joinA.ok && joinB && joinB.ok) {
    const pending = new Map();
    receiver.on("chat:message", (m) => {
      const resolve = pending.get(m.client_id);
      if (resolve) resolve();
    });
    for (let i = 0; i < opts.messages; i++) {
      const clientId = `m${i}`;
      const t0 = now();
      const got = new Promise((resolve) => pending.set(clientId, resolve));
      const ack = await sender.timeout(5000).emitWithAck("chat:message", {
        conversation_id: conv, text: "hello", client_id: clientId,
      });
      if (!(ack && ack.ok)) { mode = `chat:message refused: ${JSON.stringify(ack.error)}`; break; }
      const ok = await Promise.race([got.then(() => true), sleep(opts.roundTimeoutMs).then(() => false)]);
      pending.delete(clientId);
      if (ok) latencies.push(now() - t0);
      else missing++;
    }
  } else {
    mode = "presence:update";
    const reason = (joinA && joinA.error && joinA.error.code) || "no ack";
    const users = Array.from({ length: opts.messages }, (_, i) => `${opts.prefix}p${i}`);
    const seen = new Map();
    receiver.on("presence:update", (u) => { if (u.online) seen.set(u.user_id, now()); });
    await receiver.timeout(5000).emitWithAck("presence:subscribe", { user_ids: users });
    for (const user of users) {
      const t0 = now();
      const sock = open(opts.urlB, "/chats", user);
      const deadline = t0 + opts.roundTimeoutMs;
      while (!seen.has(user) && now() < deadline) await sleep(1);
      if (seen.has(user)) latencies.push(seen.get(user) - t0);
      else missing++;
      sock.disconnect();
    }
    emit({ event: "note", message: `chat:join answered ${reason}; measured cross-node presence:update` });
  }
  const s = summary(latencies);
  emit({ event: "result", mode, samples: s.n, missing, p50_ms: s.p50, p99_ms: s.p99 });
  if (opts.burst && mode === "chat:message") {
    await burst(sender, receiver, conv);
  }
  receiver.disconnect();
  sender.disconnect();
  emit({ event: "done" });
}

// After the latency loop, opts.burst messages with opts.inFlight acked sends in flight:
// the driver samples both nodes' CPU between "burst_start" and "burst_done".
async function burst(sender, receiver, conv) {
  let received = 0;
  let acked = 0;
  receiver.on("chat:message", () => { received++; });
  emit({ event: "burst_start" });
  const t0 = now();
  let next = 0;
  async function lane() {
    while (next < opts.burst) {
      next++;
      const ack = await sender.timeout(5000).emitWithAck("chat:message", {
        conversation_id: conv, text: "hello",
      }).catch(() => null);
      if (ack && ack.ok) acked++;
    }
  }
  await Promise.all(Array.from({ length: opts.inFlight }, lane));
  const deadline = now() + opts.roundTimeoutMs;
  while (received < acked && now() < deadline) await sleep(1);
  emit({ event: "burst_done", acked, received, seconds: (now() - t0) / 1000 });
}

// Like waitLine("close"), but answers each "count" line with a "count" report from count().
function serveUntilClose(count, ms) {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin });
    const timer = setTimeout(() => { rl.close(); resolve(false); }, ms);
    rl.on("line", (line) => {
      const cmd = line.trim();
      if (cmd === "count") emit({ event: "count", ...count() });
      if (cmd === "close") { clearTimeout(timer); rl.close(); resolve(true); }
    });
    rl.on("close", () => { clearTimeout(timer); resolve(false); });
  });
}

// (5) Soak: n clients, churn (connects and disconnects per second), a ping from every client
// every pingSeconds, a fraction of them chatting; a "tick" line every reportSeconds. At the end
// the churn and pings stop, the connects still in flight are waited for (up to
// opts.settleSeconds; the ones still unanswered then are closed), "final" says how many are
// connected, and the driver (which then compares that with the server's presence stats,
// asking "count" for the current figure) sends "close".
async function soak() {
  const live = new Map(); // userId -> socket, connected ones only
  // Connects sent and not yet answered (connect or connect_error). On a starved server they
  // take seconds: a client connected after "final" but not counted in it would look like a
  // connection the server kept.
  const pending = new Set();
  let connectAttempts = 0;
  const slots = Math.max(1, Math.round((opts.pingSeconds * 1000) / TICK_MS));
  const rooms = 10;
  let counter = 0;
  let acks = 0, errors = 0, timeouts = 0, connects = 0, connectFailures = 0, disconnects = 0;
  let unexpectedDisconnects = 0, chats = 0;
  let tickLatencies = [];
  const allLatencies = [];
  const leaving = []; // sockets we disconnected: is their engine closed by the end?
  const errorCodes = {};

  function track(sock, userId, chatting, index) {
    sock.on("disconnect", (reason) => {
      live.delete(userId);
      if (reason !== "io client disconnect") unexpectedDisconnects++;
    });
    live.set(userId, sock);
    sock.soakSlot = index % slots; // spread the pings over the period
    sock.soakRoom = chatting ? `soak-room-${index % rooms}` : null;
    if (sock.soakRoom) sock.emit("chat:join", { conversation_id: sock.soakRoom });
  }

  function connectOne() {
    const i = counter++;
    const userId = `${opts.prefix}${i}`;
    const sock = open(opts.url, opts.namespace, userId);
    connectAttempts++;
    pending.add(sock);
    sock.once("connect", () => {
      pending.delete(sock);
      connects++;
      track(sock, userId, Math.random() < opts.chatFraction, i);
    });
    sock.once("connect_error", () => { pending.delete(sock); connectFailures++; sock.close(); });
  }

  async function ping(sock) {
    const t0 = now();
    try {
      const res = await sock.timeout(opts.ackTimeoutMs).emitWithAck("ping", {});
      if (res && res.ok) {
        acks++;
        const ms = now() - t0;
        tickLatencies.push(ms);
        allLatencies.push(ms);
      } else {
        errors++;
        const code = (res && res.error && res.error.code) || "unknown";
        errorCodes[code] = (errorCodes[code] || 0) + 1;
      }
    } catch (e) {
      if (sock.connected) timeouts++;
    }
    if (sock.soakRoom && sock.connected) {
      sock.emit("chat:message", { conversation_id: sock.soakRoom, text: "soak" });
      chats++;
    }
  }

  // Ramp up: n clients, `concurrency` handshakes in flight.
  const ramp = await connectMany(opts.url, opts.namespace, opts.prefix, opts.n, opts.concurrency);
  counter = opts.n;
  ramp.sockets.forEach((sock, i) => {
    if (sock && sock.connected) track(sock, `${opts.prefix}${i}`, Math.random() < opts.chatFraction, i);
  });
  emit({ event: "ready", connected: live.size, failures: ramp.failures, seconds: ramp.seconds });

  const started = now();
  let slot = 0;
  let churnDebt = 0;
  const pinger = setInterval(() => {
    for (const sock of live.values()) if (sock.soakSlot === slot) ping(sock);
    slot = (slot + 1) % slots;
    churnDebt += (opts.churnPerSecond * TICK_MS) / 1000;
    const ids = churnDebt >= 1 ? Array.from(live.keys()) : [];
    for (; churnDebt >= 1; churnDebt--) {
      if (ids.length) {
        const [userId] = ids.splice(Math.floor(Math.random() * ids.length), 1);
        const gone = live.get(userId);
        gone.disconnect();
        leaving.push(gone);
        disconnects++;
      }
      connectOne();
    }
  }, TICK_MS);
  const reporter = setInterval(() => {
    const lat = summary(tickLatencies);
    tickLatencies = [];
    emit({
      event: "tick", t: (now() - started) / 1000, connected: live.size, acks, errors, timeouts,
      connects, connect_failures: connectFailures, disconnects, unexpected_disconnects: unexpectedDisconnects,
      chats, ack_p99_ms: lat.p99, connect_attempts: connectAttempts, connects_pending: pending.size,
    });
  }, opts.reportSeconds * 1000);
  await sleep(opts.seconds * 1000);
  clearInterval(pinger);
  clearInterval(reporter);
  await sleep(Math.min(opts.ackTimeoutMs, 3000)); // let connects and acks in flight land
  const seconds = (now() - started) / 1000;
  // Every connect in flight must end connected or refused before the count is final.
  const pendingAtStop = pending.size;
  const connectedAtStop = live.size; // what "final" reported before the connects settled
  const settleStarted = now();
  const settleMs = (opts.settleSeconds ?? 30) * 1000;
  while (pending.size && now() - settleStarted < settleMs) await sleep(100);
  const abandoned = pending.size; // still unanswered: given up on, like a client timing out
  for (const sock of pending) sock.close();
  pending.clear();
  const lat = summary(allLatencies);
  const engines = {};
  for (const sock of leaving) {
    const e = sock.io.engine;
    const key = `${e.readyState}/wb${e.writeBuffer.length}/w${e.transport && e.transport.writable}`;
    engines[key] = (engines[key] || 0) + 1;
  }
  emit({
    event: "final",
    disconnected_engines: engines, connected: live.size, acks, errors, error_codes: errorCodes, timeouts,
    connects, connect_failures: connectFailures, disconnects, unexpected_disconnects: unexpectedDisconnects,
    chats, ack_p50_ms: lat.p50, ack_p99_ms: lat.p99, seconds,
    connect_attempts: connectAttempts, connected_at_stop: connectedAtStop, connects_pending_at_stop: pendingAtStop,
    connects_abandoned: abandoned, connects_settle_s: (now() - settleStarted) / 1000,
  });
  await serveUntilClose(() => ({ connected: live.size, unexpected_disconnects: unexpectedDisconnects }),
    opts.holdSeconds * 1000);
  closeAll(Array.from(live.values()));
  emit({ event: "done" });
}

const modes = { storm, pings, fanout, crossNode, soak };
modes[opts.mode]()
  .then(() => process.exit(0))
  .catch((err) => {
    emit({ event: "error", message: String(err && err.stack || err) });
    process.exit(1);
  });

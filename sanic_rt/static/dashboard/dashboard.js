// The sanic-rt presence dashboard. It uses the public HTTP API and the /dashboard
// Socket.IO feed, both with the API key; the key lives in sessionStorage only.
"use strict";

const KEY_STORE = "sanic_rt_dashboard_key";
const STATS_EVERY_MS = 2000;
const PAGE_SIZE = 20;
const FEED_MAX = 100;
const $ = (id) => document.getElementById(id);

let apiKey = sessionStorage.getItem(KEY_STORE);
let feed = null;
let statsTimer = null;
let pageCursors = [null];

class Unauthorized extends Error {}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${apiKey}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401) throw new Unauthorized("missing or wrong API key");
  const envelope = await resp.json();
  if (!envelope.ok) throw new Error(`${envelope.error.code}: ${envelope.error.message}`);
  return envelope.data;
}

function showError(err) {
  if (err instanceof Unauthorized) return signOut("The API key was refused.");
  $("error").textContent = String(err.message || err);
}

function text(id, value) { $(id).textContent = value; }

async function refreshStats() {
  const stats = await api("GET", "/api/v1/presence/stats");
  text("online-users", stats.online_users);
  text("connections", stats.connections);
  const rows = Object.entries(stats.by_namespace).sort();
  const body = $("by-namespace").querySelector("tbody");
  body.replaceChildren(...rows.map(([ns, n]) => {
    const tr = document.createElement("tr");
    for (const value of [ns, n]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    return tr;
  }));
}

async function showPage(index) {
  const cursor = pageCursors[index];
  const query = `limit=${PAGE_SIZE}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
  const page = await api("GET", `/api/v1/presence/online?${query}`);
  $("online-list").replaceChildren(...page.user_ids.map((userId) => {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = userId;
    link.onclick = (e) => { e.preventDefault(); lookUp(userId).catch(showError); };
    const button = document.createElement("button");
    button.className = "disconnect";
    button.dataset.user = userId;
    button.textContent = "disconnect";
    button.onclick = () => disconnectUser(userId).catch(showError);
    li.append(link, " ", button);
    return li;
  }));
  pageCursors = pageCursors.slice(0, index + 1);
  if (page.next_cursor) pageCursors.push(page.next_cursor);
  $("next-page").disabled = !page.next_cursor;
  $("next-page").onclick = () => showPage(index + 1).catch(showError);
}

async function lookUp(userId) {
  const record = await api("GET", `/api/v1/presence/${encodeURIComponent(userId)}`);
  text("detail-user", record.user_id);
  text("detail-status", record.online ? record.status : "offline");
  const lastSeen = record.last_seen ? new Date(record.last_seen * 1000).toISOString() : "never";
  text("detail-last-seen", record.online ? "now" : lastSeen);
  text("detail-namespaces", record.namespaces.join(", ") || "-");
  text("detail-devices", record.devices.join(", ") || "-");
  text("detail-connections", record.connections);
  if ($("user-detail").dataset.user !== record.user_id) text("disconnect-result", "");
  $("disconnect-button").onclick = () => disconnectUser(record.user_id).catch(showError);
  $("user-detail").hidden = false;
  $("user-detail").dataset.user = record.user_id;
}

async function disconnectUser(userId) {
  const result = await api("POST", `/api/v1/users/${encodeURIComponent(userId)}/disconnect`);
  text("disconnect-result", `closed ${result.connections} connection(s)`);
}

function addToFeed(change) {
  const li = document.createElement("li");
  const at = new Date().toISOString().slice(11, 19);
  li.textContent = `${at} ${change.user_id} ${change.online ? change.status : "offline"}`;
  li.dataset.user = change.user_id;
  li.dataset.status = change.online ? change.status : "offline";
  $("feed").prepend(li);
  while ($("feed").children.length > FEED_MAX) $("feed").lastChild.remove();
}

function onPresence(changes) {
  changes.forEach(addToFeed);
  refreshStats().catch(showError);
  showPage(pageCursors.length > 1 ? pageCursors.length - 2 : 0).catch(showError);
  const shown = $("user-detail").dataset.user;
  if (!$("user-detail").hidden && changes.some((c) => c.user_id === shown)) lookUp(shown).catch(showError);
}

function openFeed() {
  feed = io("/dashboard", { auth: { api_key: apiKey }, transports: ["websocket", "polling"] });
  feed.on("connect", () => text("feed-state", "live"));
  feed.on("disconnect", () => text("feed-state", "reconnecting"));
  feed.on("connect_error", (err) => text("feed-state", `refused: ${err.message}`));
  feed.on("presence", onPresence);
}

async function signIn(key) {
  apiKey = key;
  await refreshStats(); // throws Unauthorized for a wrong key
  sessionStorage.setItem(KEY_STORE, key);
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  $("signin-error").textContent = "";
  await showPage(0);
  openFeed();
  statsTimer = setInterval(() => refreshStats().catch(showError), STATS_EVERY_MS);
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  apiKey = null;
  if (feed) feed.disconnect();
  feed = null;
  clearInterval(statsTimer);
  $("app").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
}

$("signin").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($("api-key").value).catch((err) =>
    signOut(err instanceof Unauthorized ? "The API key was refused." : String(err.message || err)));
  $("api-key").value = "";
});
$("search").addEventListener("submit", (e) => {
  e.preventDefault();
  lookUp($("search-id").value.trim()).catch(showError);
});
$("first-page").onclick = () => showPage(0).catch(showError);
$("signout").onclick = () => signOut("");
if (apiKey) signIn(apiKey).catch(() => signOut("The stored API key was refused."));

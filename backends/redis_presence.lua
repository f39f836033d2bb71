-- The presence rules of sanic_rt/presence_model.py (UserState), in Lua.
--
-- backends/redis.py loads this whole file once as one script and runs it by
-- EVALSHA; ARGV[1] names the operation (the dispatch at the end of the file).
-- Each call loads the users it names, applies the rule and writes them back
-- inside the one atomic script, so every online/offline transition is decided
-- here, once, for the whole cluster. tests/backends/test_rules_equivalence.py
-- drives this file and UserState side by side with random operation sequences
-- and requires identical answers and stored records: change both together.
--
-- Keys. A user lives in shard crc32(user_id) % index_shards; every key of a
-- shard carries the hash tag {<prefix>:<shard>} (one slot, Redis Cluster safe),
-- written <tag> below as "<prefix>:{<prefix>:<shard>}":
--   KEYS[1] <tag>:online  ZSET online user ids, score 0 (lex order for paging)
--   KEYS[2] <tag>:due     ZSET user id by UserState.deadline() (the sweeper's)
--   KEYS[3] <tag>:ns      HASH namespace -> stored connection entries (stats)
--   KEYS[4..] <tag>:u:<user_id>, the users an operation names; sweep and
--           drop_nodes get the prefix "<tag>:u:" in ARGV instead
--   <tag>:node:<node>     SET user ids with a connection entry of <node>
--                         (named from KEYS[3]; kept in step by commit())
--   <events key>:{<prefix>:<shard>}  STREAM of the shard's presence events, named
--                         by the second-to-last ARGV ('' = [events.stream] off;
--                         see set_events), one entry per visible change
-- The node liveness ZSET <prefix>:nodes is written by redis.py, not here.
--
-- User hash fields (UserState attributes; absent = nil/None):
--   s  chosen status (online | away | dnd | invisible)
--   o  online "1"/"0"            i  idle (auto away) "1"/"0"
--   a  last_active               l  last_seen
--   p  public_last_seen          g  grace_until (offline pending)
--   q  seq of the last visible change (presence_model.next_seq)
--   c:<sid>  one connection: "<expires_at>|<len(ns)>,<len(node)>|<ns><node><device>"
--            (lengths in bytes; entries written before node ids have no
--            ",<len(node)>" and no node)
-- Native expiry (PEXPIRE, ARGV[6]) is only a clean-up net far beyond ttl.
--
-- Times are the caller's clock passed in ARGV ("now"), never Redis TIME, so
-- tests drive them. Numbers go back to the caller as strings (%.17g, exact):
-- Redis truncates Lua numbers in replies to integers.

local TTL, GRACE, IDLE, EXPIRE_MS
-- The shard's node index: the ns key's name with "ns" replaced (same hash tag).
local NODE_KEY_PREFIX = string.sub(KEYS[3], 1, -3) .. 'node:'

local function fmt(x)
  return string.format('%.17g', x)
end

local function set_timings(ttl, grace, idle, expire_ms)
  TTL, GRACE, IDLE, EXPIRE_MS = tonumber(ttl), tonumber(grace), tonumber(idle), expire_ms
end

-- connection entries ----------------------------------------------------------

local function decode_conn(v)
  local p1 = string.find(v, '|', 1, true)
  local p2 = string.find(v, '|', p1 + 1, true)
  local lengths = string.sub(v, p1 + 1, p2 - 1)
  local comma = string.find(lengths, ',', 1, true)
  local len, node_len = tonumber(lengths), 0
  if comma ~= nil then
    len, node_len = tonumber(string.sub(lengths, 1, comma - 1)), tonumber(string.sub(lengths, comma + 1))
  end
  local node_at = p2 + len + 1
  return {
    tonumber(string.sub(v, 1, p1 - 1)),
    string.sub(v, p2 + 1, p2 + len),
    string.sub(v, node_at + node_len),
    string.sub(v, node_at, node_at + node_len - 1),
  }
end

local function encode_conn(c)
  return fmt(c[1]) .. '|' .. #c[2] .. ',' .. #c[4] .. '|' .. c[2] .. c[4] .. c[3]
end

-- node index (which users each node holds connections of) ---------------------

local function conn_nodes(st)
  local nodes = {}
  for _, c in pairs(st.conns) do
    if c[4] ~= '' then
      nodes[c[4]] = true
    end
  end
  return nodes
end

-- Re-index the user in its nodes' sets after a change of its connections.
local function index_nodes(st)
  local now_nodes = conn_nodes(st)
  for node in pairs(st.old_nodes) do
    if not now_nodes[node] then
      redis.call('SREM', NODE_KEY_PREFIX .. node, st.uid)
    end
  end
  for node in pairs(now_nodes) do
    if not st.old_nodes[node] then
      redis.call('SADD', NODE_KEY_PREFIX .. node, st.uid)
    end
  end
  st.old_nodes = now_nodes
end

-- Namespace counters of this shard, applied once at the end of a script.
local ns_delta = {}

local function count_ns(ns, n)
  ns_delta[ns] = (ns_delta[ns] or 0) + n
end

local function flush_ns(ns_key)
  for ns, n in pairs(ns_delta) do
    if n ~= 0 and redis.call('HINCRBY', ns_key, ns, n) <= 0 then
      redis.call('HDEL', ns_key, ns)
    end
  end
  ns_delta = {}
end

-- a user's state ----------------------------------------------------------------

local deadline, public_view

local function load(key, uid)
  local flat = redis.call('HGETALL', key)
  local st = {
    key = key, uid = uid, conns = {}, status = 'online', online = false, idle = false,
    last_active = 0, exists = #flat > 0, dirty = {}, removed = {},
  }
  for i = 1, #flat, 2 do
    local f, v = flat[i], flat[i + 1]
    if string.sub(f, 1, 2) == 'c:' then
      st.conns[string.sub(f, 3)] = decode_conn(v)
    elseif f == 's' then
      st.status = v
    elseif f == 'o' then
      st.online = v == '1'
    elseif f == 'i' then
      st.idle = v == '1'
    elseif f == 'a' then
      st.last_active = tonumber(v)
    elseif f == 'l' then
      st.last_seen = tonumber(v)
    elseif f == 'p' then
      st.public_last_seen = tonumber(v)
    elseif f == 'g' then
      st.grace_until = tonumber(v)
    elseif f == 'q' then
      st.seq = tonumber(v)
    end
  end
  st.was_online = st.online
  st.old_nodes = conn_nodes(st)
  st.old_deadline = deadline(st)
  st.before = public_view(st)
  return st
end

local function set_conn(st, sid, c)
  local old = st.conns[sid]
  if old == nil then
    count_ns(c[2], 1)
  elseif old[2] ~= c[2] then
    count_ns(old[2], -1)
    count_ns(c[2], 1)
  end
  st.conns[sid] = c
  st.dirty[sid] = true
  st.removed[sid] = nil
end

local function del_conn(st, sid)
  local old = st.conns[sid]
  if old ~= nil then
    count_ns(old[2], -1)
    st.conns[sid] = nil
    st.dirty[sid] = nil
    st.removed[sid] = true
  end
end

local function nconns(st)
  local n = 0
  for _ in pairs(st.conns) do
    n = n + 1
  end
  return n
end

-- views --------------------------------------------------------------------------

local function effective_status(st)
  if not st.online then
    return 'offline'
  end
  if st.status == 'online' and st.idle then
    return 'away'
  end
  return st.status
end

public_view = function(st)
  if not st.online or st.status == 'invisible' then
    return {false, 'offline', st.public_last_seen}
  end
  return {true, effective_status(st), st.public_last_seen}
end

deadline = function(st)
  local d = nil
  for _, c in pairs(st.conns) do
    if d == nil or c[1] < d then
      d = c[1]
    end
  end
  if st.grace_until ~= nil and (d == nil or st.grace_until < d) then
    d = st.grace_until
  end
  if st.online and st.status == 'online' and not st.idle then
    local t = st.last_active + IDLE
    if d == nil or t < d then
      d = t
    end
  end
  return d
end

-- operations (UserState methods) ------------------------------------------------

local function prune(st, now)
  local gone = {}
  for sid, c in pairs(st.conns) do
    if c[1] <= now then
      gone[#gone + 1] = sid
    end
  end
  for _, sid in ipairs(gone) do
    del_conn(st, sid)
  end
end

local function come_online(st, now)
  st.grace_until = nil
  if not st.online then
    st.online = true
    st.idle = false
    st.last_active = now
  end
end

local function go_offline(st, now)
  st.online = false
  st.idle = false
  st.grace_until = nil
  st.last_seen = now
  if st.status ~= 'invisible' then
    st.public_last_seen = now
  end
end

local function op_connect(st, sid, ns, device, node, now, max_connections)
  prune(st, now)
  if st.conns[sid] == nil and nconns(st) >= max_connections then
    return false
  end
  set_conn(st, sid, {now + TTL, ns, device, node})
  come_online(st, now)
  st.last_active = now
  st.idle = false
  return true
end

local function op_touch(st, sid, ns, device, node, now, activity)
  prune(st, now)
  set_conn(st, sid, {now + TTL, ns, device, node})
  come_online(st, now)
  if activity then
    st.last_active = now
    st.idle = false
  end
end

local function op_settle(st, now)
  prune(st, now)
  if st.online and next(st.conns) == nil then
    if st.grace_until == nil or st.grace_until <= now then
      go_offline(st, now)
      return
    end
  end
  if st.online and st.status == 'online' and not st.idle and st.last_active + IDLE <= now then
    st.idle = true
  end
end

local function op_disconnect(st, sid, now)
  prune(st, now)
  del_conn(st, sid)
  if st.online and next(st.conns) == nil and st.grace_until == nil then
    st.grace_until = now + GRACE
  end
  op_settle(st, now)
end

-- Outage and node-crash rules (UserState.disconnect_after_outage, drop_nodes) ----

local function op_disconnect_after_outage(st, sid, now)
  if not st.exists then
    go_offline(st, now) -- the storage lost the record: see UserState
  else
    op_disconnect(st, sid, now)
  end
end

local function op_drop_nodes(st, dead, now)
  for sid, c in pairs(st.conns) do
    if dead[c[4]] then
      del_conn(st, sid)
    end
  end
  op_settle(st, now)
end

local function op_set_status(st, status, now)
  if status == 'invisible' and st.status ~= 'invisible' and st.online then
    -- Going invisible must look exactly like going offline.
    st.public_last_seen = now
  end
  st.status = status
  st.last_active = now
  st.idle = false
end

-- presence events -----------------------------------------------------------------
-- Every operation's last two arguments are this shard's event stream ('' when
-- off) and its approximate maxlen (backends/redis.py appends them).

local EVENTS_KEY, EVENTS_MAXLEN

local function set_events(key, maxlen)
  EVENTS_KEY, EVENTS_MAXLEN = key, maxlen
end

-- presence_model.next_seq: grows with every change, from the clock (ms) up.
local function next_seq(seq, now)
  return math.max((seq or 0) + 1, math.floor(now * 1000))
end

local function json_num(x)
  return x and fmt(x) or 'null'
end

-- The event of sanic_rt/events.py presence_event(), as JSON.
local function event_json(st, after, before, seq, now)
  local kind = 'presence.status'
  if not after[1] then
    kind = 'presence.offline'
  elseif not before[1] then
    kind = 'presence.online'
  end
  return '{"id":' .. cjson.encode(st.uid .. ':' .. seq) .. ',"type":"' .. kind
    .. '","user_id":' .. cjson.encode(st.uid) .. ',"online":' .. tostring(after[1])
    .. ',"status":"' .. after[2] .. '","last_seen":' .. json_num(after[3])
    .. ',"seq":' .. seq .. ',"at":' .. fmt(now) .. '}'
end

-- Number a visible change, store its seq and append its event to the stream,
-- in the script that decides it: no change without its event, none twice.
-- Returns the seq (a string).
local function emit_event(st, after, before)
  local now = tonumber(ARGV[2])
  st.seq = next_seq(st.seq, now)
  local seq = string.format('%.0f', st.seq)
  redis.call('HSET', st.key, 'q', seq)
  if EVENTS_KEY ~= '' then
    redis.call('XADD', EVENTS_KEY, 'MAXLEN', '~', EVENTS_MAXLEN, '*',
      'event', event_json(st, after, before, seq, now))
  end
  return seq
end

-- write-back ----------------------------------------------------------------------

local function bool(b)
  return b and '1' or '0'
end

-- Write the state back, re-index it, and append the visible change (if any)
-- to `changes` as {user_id, online "1"/"0", status, last_seen or "", seq,
-- online before "1"/"0"}.
local function commit(st, online_key, due_key, changes)
  local set = {
    's', st.status, 'o', bool(st.online), 'i', bool(st.idle), 'a', fmt(st.last_active),
  }
  local del = {}
  for _, name in ipairs({'l', 'p', 'g'}) do
    local value = ({l = st.last_seen, p = st.public_last_seen, g = st.grace_until})[name]
    if value == nil then
      del[#del + 1] = name
    else
      set[#set + 1] = name
      set[#set + 1] = fmt(value)
    end
  end
  for sid in pairs(st.dirty) do
    set[#set + 1] = 'c:' .. sid
    set[#set + 1] = encode_conn(st.conns[sid])
  end
  for sid in pairs(st.removed) do
    del[#del + 1] = 'c:' .. sid
  end
  if #del > 0 then
    redis.call('HDEL', st.key, unpack(del))
  end
  redis.call('HSET', st.key, unpack(set))
  -- Only a clean-up net: presence is decided from the timestamps above.
  redis.call('PEXPIRE', st.key, EXPIRE_MS)
  st.dirty, st.removed = {}, {}
  index_nodes(st)

  if st.online ~= st.was_online then
    if st.online then
      redis.call('ZADD', online_key, 0, st.uid)
    else
      redis.call('ZREM', online_key, st.uid)
    end
    st.was_online = st.online
  end
  local d = deadline(st)
  if d ~= st.old_deadline then
    if d == nil then
      redis.call('ZREM', due_key, st.uid)
    else
      redis.call('ZADD', due_key, fmt(d), st.uid)
    end
    st.old_deadline = d
  end
  local after = public_view(st)
  local before = st.before
  if after[1] ~= before[1] or after[2] ~= before[2] or after[3] ~= before[3] then
    local seq = emit_event(st, after, before)
    changes[#changes + 1] = {
      st.uid, bool(after[1]), after[2], after[3] and fmt(after[3]) or '', seq, bool(before[1]),
    }
  end
  st.before = after
end

-- What the caller turns back into a UserState: the hash as HGETALL would return it.
local function snapshot(st)
  return redis.call('HGETALL', st.key)
end

-- ============================== operation ==================================
-- ARGV[1] operation, ARGV[2] now, ARGV[3..6] ttl, offline_grace, idle_timeout,
-- key expiry (ms); KEYS[1..3] the shard's online, due and ns keys; the rest
-- per operation, then the two event arguments (see set_events). Returns
-- {result, changes}.

local op = ARGV[1]
local now = tonumber(ARGV[2])
set_timings(ARGV[3], ARGV[4], ARGV[5], ARGV[6])
set_events(ARGV[#ARGV - 1], ARGV[#ARGV])
local online_key, due_key, ns_key = KEYS[1], KEYS[2], KEYS[3]
local changes = {}
local result = {}

if op == 'connect' then
  -- KEYS[4] user; ARGV[7..12] user id, sid, namespace, device, max connections, node
  local st = load(KEYS[4], ARGV[7])
  if op_connect(st, ARGV[8], ARGV[9], ARGV[10], ARGV[12], now, tonumber(ARGV[11])) then
    commit(st, online_key, due_key, changes)
    result = {'1'}
  else
    -- Refused: nothing is written, so the pruning above is simply dropped.
    ns_delta = {}
    result = {'0'}
  end
elseif op == 'touch' then
  -- KEYS[4..] users; ARGV[7] activity; then (user index, user id, sid, namespace, device, node)
  local activity = ARGV[7] == '1'
  local states, order = {}, {}
  for i = 8, #ARGV - 2, 6 do
    local idx = tonumber(ARGV[i])
    local st = states[idx]
    if st == nil then
      st = load(KEYS[3 + idx], ARGV[i + 1])
      states[idx] = st
      order[#order + 1] = st
    end
    op_touch(st, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], now, activity)
  end
  for _, st in ipairs(order) do
    commit(st, online_key, due_key, changes)
    result[#result + 1] = st.uid
    result[#result + 1] = effective_status(st)
  end
elseif op == 'settle' then
  -- KEYS[4..] users; ARGV[7..] their ids
  for i = 4, #KEYS do
    local st = load(KEYS[i], ARGV[i + 3])
    if st.exists then
      op_settle(st, now)
      commit(st, online_key, due_key, changes)
    end
  end
elseif op == 'disconnect' then
  -- KEYS[4] user; ARGV[7..8] user id, sid. Returns {grace_until or ""}.
  local st = load(KEYS[4], ARGV[7])
  if st.exists then
    op_disconnect(st, ARGV[8], now)
    commit(st, online_key, due_key, changes)
    result = {st.grace_until and fmt(st.grace_until) or ''}
  else
    result = {''}
  end
elseif op == 'sweep' then
  -- ARGV[7] limit, ARGV[8] user key prefix of this shard (same hash tag).
  local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[7]))
  for _, uid in ipairs(due) do
    redis.call('ZREM', due_key, uid)
    local st = load(ARGV[8] .. uid, uid)
    if st.exists then
      st.old_deadline = nil -- just removed: commit re-adds it if there is still one
      op_settle(st, now)
      commit(st, online_key, due_key, changes)
    else
      -- The record was dropped by its clean-up expiry; drop its index entry too.
      redis.call('ZREM', online_key, uid)
    end
  end
elseif op == 'disconnect_after_outage' then
  -- KEYS[4] user; ARGV[7..8] user id, sid. Returns {grace_until or ""}.
  local st = load(KEYS[4], ARGV[7])
  op_disconnect_after_outage(st, ARGV[8], now)
  commit(st, online_key, due_key, changes)
  result = {st.grace_until and fmt(st.grace_until) or ''}
elseif op == 'drop_nodes' then
  -- ARGV[7] limit, ARGV[8] user key prefix of this shard, ARGV[9..] dead nodes (then the
  -- two event arguments).
  -- Returns the dead nodes that still hold connections here (the limit was hit).
  local dead, budget = {}, tonumber(ARGV[7])
  for i = 9, #ARGV - 2 do
    dead[ARGV[i]] = true
  end
  for i = 9, #ARGV - 2 do
    local node = ARGV[i]
    local node_key = NODE_KEY_PREFIX .. node
    if budget > 0 then
      -- Popped whatever the record says: a stale member must not stay.
      local users = redis.call('SPOP', node_key, budget)
      for _, uid in ipairs(users) do
        local st = load(ARGV[8] .. uid, uid)
        st.old_nodes[node] = nil
        if st.exists then
          op_drop_nodes(st, dead, now)
          commit(st, online_key, due_key, changes)
        end
      end
      budget = budget - #users
    end
    if redis.call('EXISTS', node_key) == 1 then
      result[#result + 1] = node
    end
  end
elseif op == 'set_status' then
  -- KEYS[4] user; ARGV[7..8] user id, status. Returns the record's hash.
  local st = load(KEYS[4], ARGV[7])
  op_set_status(st, ARGV[8], now)
  commit(st, online_key, due_key, changes)
  result = snapshot(st)
else
  return redis.error_reply('unknown presence operation ' .. tostring(op))
end

flush_ns(ns_key)
return {result, changes}

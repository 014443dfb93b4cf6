-- Merges one task event into its run record and trims the target's history
-- (state::runs; docs/state.md "Run history").
-- KEYS: 1 runs:<entry> (zset id -> fired), 2 runs:<entry>:records (hash id -> JSON),
--       3 runs::index (zset id -> fired), 4 runs::entry (hash id -> entry),
--       5 runs::latest (hash entry -> latest JSON)
-- ARGV: 1 the update (JSON), 2 keep, 3 max age (s), 4 now (s), 5 trim batch
-- Returns 1 when recorded, 0 when ignored (no run was opened for this id).
local u = cjson.decode(ARGV[1])
local keep, maxage, now, batch = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local id, entry, kind, ts = u.id, u.entry, u.kind, tonumber(u.timestamp)
local rank = {sent = 1, received = 2, started = 3, retried = 3,
              succeeded = 4, failed = 4, revoked = 4, rejected = 4}
if not rank[kind] then return 0 end

local raw = redis.call('HGET', KEYS[2], id)
local r
if raw then
  r = cjson.decode(raw)
else
  if kind ~= 'sent' and kind ~= 'received' then return 0 end
  r = {id = id, state = kind, fired = ts, retries = 0}
end

for _, f in ipairs({'schedule', 'target', 'task', 'host', 'worker', 'retries', 'runtime',
                    'exception', 'message', 'resultSize', 'expired'}) do
  if u[f] ~= nil and u[f] ~= cjson.null then r[f] = u[f] end
end
if kind == 'sent' then
  if r.sent == nil or ts < r.sent then r.sent = ts end
elseif kind == 'received' then
  if r.received == nil then r.received = ts end
elseif kind == 'started' then
  r.started = ts
elseif kind == 'retried' then
  r.retried = ts
else
  if r.finished == nil then r.finished = ts end
end
local fired = r.sent or r.received or ts
if r.received ~= nil and r.received < fired then fired = r.received end
r.fired = fired

if raw then
  local cur = rank[r.state] or 0
  if cur >= 4 then
    -- final: a late event changes no state
  elseif r.state == 'retried' and kind ~= 'sent' then
    r.state = kind
  elseif rank[kind] > cur then
    r.state = kind
  end
end

redis.call('HSET', KEYS[2], id, cjson.encode(r))
redis.call('ZADD', KEYS[1], fired, id)
redis.call('ZADD', KEYS[3], fired, id)
redis.call('HSET', KEYS[4], id, entry)
redis.call('EXPIRE', KEYS[1], maxage)
redis.call('EXPIRE', KEYS[2], maxage)

-- The latest run of this target, and when one last succeeded.
local lraw = redis.call('HGET', KEYS[5], entry)
local l = lraw and cjson.decode(lraw) or nil
local success = nil
if r.state == 'succeeded' and r.finished ~= nil then success = r.finished end
local function later(a, b)
  if a == nil then return b end
  if b == nil or tonumber(a) >= tonumber(b) then return a end
  return b
end
local started = nil
if r.started ~= nil then started = fired end
if l == nil or l.id == id or fired >= tonumber(l.fired) then
  redis.call('HSET', KEYS[5], entry, cjson.encode({
    id = id, state = r.state, fired = fired, started = r.started,
    finished = r.finished, host = r.host,
    lastSuccess = later(l and l.lastSuccess or nil, success),
    lastStarted = later(l and l.lastStarted or nil, started)}))
elseif success ~= nil or started ~= nil then
  l.lastSuccess = later(l.lastSuccess, success)
  l.lastStarted = later(l.lastStarted, started)
  redis.call('HSET', KEYS[5], entry, cjson.encode(l))
end

-- Retention: none older than max age, at most `keep` per target.
local function forget(ids)
  for _, old in ipairs(ids) do
    redis.call('ZREM', KEYS[1], old)
    redis.call('HDEL', KEYS[2], old)
    redis.call('ZREM', KEYS[3], old)
    redis.call('HDEL', KEYS[4], old)
  end
end
local cutoff = '(' .. tostring(now - maxage)
forget(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, batch))
local n = redis.call('ZCARD', KEYS[1])
if n > keep then
  forget(redis.call('ZRANGE', KEYS[1], 0, math.min(n - keep, batch) - 1))
end
-- Ids of targets that stopped firing (their own keys expire after max age).
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', cutoff, 'LIMIT', 0, 100)
for _, old in ipairs(stale) do
  redis.call('ZREM', KEYS[3], old)
  redis.call('HDEL', KEYS[4], old)
end
return 1

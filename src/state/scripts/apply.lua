-- Applies one reconcile atomically: either every write happens or none does.
-- KEYS[1] generation, KEYS[2] lock, KEYS[3] applied, KEYS[4] history, KEYS[5] events, KEYS[6] layout,
-- KEYS[7] leader
-- ARGV[1] expected generation, ARGV[2] lease id, ARGV[3] writes (JSON list),
-- ARGV[4] applied fields (JSON object), ARGV[5] history entry (JSON), ARGV[6] event fields
-- (JSON object), ARGV[7] layout version, ARGV[8] events max length, ARGV[9] history max length,
-- ARGV[10] the watch daemon's leader token ('' when not a daemon): the fencing check,
-- ARGV[11] the pub/sub channel told about every applied generation (agents listen)
-- KEYS[8...] every key a write touches, each once: a script touches only declared keys,
-- so that Redis Cluster can route it and refuse it (-ASK, -TRYAGAIN) while the slot moves.
local gen = tonumber(redis.call('GET', KEYS[1]) or '0')
if gen ~= tonumber(ARGV[1]) then
  return redis.error_reply('CONFLICT live state changed during the reconcile (generation ' .. gen .. ', expected ' .. ARGV[1] .. ')')
end
local lock = redis.call('GET', KEYS[2])
local ok, lease = pcall(cjson.decode, lock or '')
if not lock or not ok or type(lease) ~= 'table' or lease['id'] ~= ARGV[2] then
  return redis.error_reply('LEASE the reconcile lease was lost (expired or taken over); nothing was written')
end
if ARGV[10] ~= '' then
  local ok2, leader = pcall(cjson.decode, redis.call('GET', KEYS[7]) or '')
  if not ok2 or type(leader) ~= 'table' or leader['token'] ~= ARGV[10] then
    return redis.error_reply('FENCED this daemon is no longer the leader; nothing was written')
  end
end
local ops = cjson.decode(ARGV[3])
local declared = {}
for i = 8, #KEYS do
  declared[KEYS[i]] = true
end
for _, op in ipairs(ops) do
  if not declared[op['key']] then
    return redis.error_reply('UNDECLARED key ' .. op['key'] .. ' was not passed in KEYS; nothing was written')
  end
end
-- Check every key's type before the first write: a script that fails halfway is not
-- rolled back, so anything that could fail must fail here.
local need = {hset = 'hash', hdel = 'hash', hsetnx = 'hash', sadd = 'set', srem = 'set', zadd = 'zset', zrem = 'zset'}
local deleted = {}
for _, op in ipairs(ops) do
  local kind = op['op']
  if kind == 'del' or kind == 'set' then
    deleted[op['key']] = true
  elseif need[kind] and not deleted[op['key']] then
    local t = redis.call('TYPE', op['key'])['ok']
    if t ~= 'none' and t ~= need[kind] then
      return redis.error_reply('CONFLICT key ' .. op['key'] .. ' has type ' .. t .. ', expected ' .. need[kind] .. '; nothing was written')
    end
  end
end
for _, op in ipairs(ops) do
  local kind = op['op']
  if kind == 'del' then
    redis.call('DEL', op['key'])
  elseif kind == 'set' then
    redis.call('SET', op['key'], op['value'])
  elseif kind == 'hset' then
    redis.call('HSET', op['key'], unpack(op['args']))
  elseif kind == 'hdel' then
    redis.call('HDEL', op['key'], unpack(op['args']))
  elseif kind == 'sadd' then
    redis.call('SADD', op['key'], unpack(op['args']))
    elseif kind == 'srem' then
    redis.call('SREM', op['key'], unpack(op['args']))
  elseif kind == 'hsetnx' then
    redis.call('HSETNX', op['key'], op['args'][1], op['args'][2])
  elseif kind == 'zadd' then
    redis.call('ZADD', op['key'], unpack(op['args']))
  elseif kind == 'zrem' then
    redis.call('ZREM', op['key'], unpack(op['args']))
  end
end
redis.call('SET', KEYS[6], ARGV[7])
local newgen = redis.call('INCR', KEYS[1])
local applied = cjson.decode(ARGV[4])
local flat = {'generation', tostring(newgen)}
for k, v in pairs(applied) do
  table.insert(flat, k)
  table.insert(flat, v)
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], unpack(flat))
local entry = cjson.decode(ARGV[5])
entry['generation'] = newgen
redis.call('LPUSH', KEYS[4], cjson.encode(entry))
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[9]) - 1)
local ev = cjson.decode(ARGV[6])
local evflat = {'generation', tostring(newgen)}
for k, v in pairs(ev) do
  table.insert(evflat, k)
  table.insert(evflat, v)
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[8], '*', unpack(evflat))
redis.call('PUBLISH', ARGV[11], tostring(newgen))
return newgen

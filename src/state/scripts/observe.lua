-- Reads the whole managed state of one cluster in a single round trip.
-- KEYS[1] layout, KEYS[2] generation, KEYS[3] applied, KEYS[4] digests, KEYS[5] lock,
-- KEYS[6...] the managed keys to read: those the digests hash named when the caller read
-- it (HKEYS) and those the desired state will write. Only declared keys are read (Redis
-- Cluster routes and guards a script by its keys). When the digests hash now names a key
-- under the cluster's prefix (the digests key without its `digests` suffix) that was not
-- declared, another writer changed it in between: the reply is 'changed' and the caller
-- asks again. A field outside the prefix is never read: celeroot owns nothing there
-- (docs/security.md).
-- Returns {layout, generation, applied (flat hash), lock, entries}, where each entry is
-- {key, type, data}: data is HGETALL for hashes, SMEMBERS for sets, {value} for strings,
-- the members (without scores) for sorted sets.
local function read(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'hash' then
    return {key, 'hash', redis.call('HGETALL', key)}
  elseif t == 'set' then
    return {key, 'set', redis.call('SMEMBERS', key)}
  elseif t == 'string' then
    return {key, 'string', {redis.call('GET', key)}}
  elseif t == 'zset' then
    return {key, 'zset', redis.call('ZRANGE', key, 0, -1)}
  else
    return {key, t, {}}
  end
end
local declared = {}
for i = 4, #KEYS do
  declared[KEYS[i]] = true
end
local prefix = string.sub(KEYS[4], 1, #KEYS[4] - #'digests')
local digests = redis.call('HKEYS', KEYS[4])
for i = 1, #digests do
  local k = digests[i]
  if not declared[k] and string.sub(k, 1, #prefix) == prefix then
    return 'changed'
  end
end
local out = {}
out[1] = redis.call('GET', KEYS[1]) or ''
out[2] = redis.call('GET', KEYS[2]) or '0'
out[3] = redis.call('HGETALL', KEYS[3])
out[4] = redis.call('GET', KEYS[5]) or ''
local entries = {}
table.insert(entries, read(KEYS[4]))
for i = 6, #KEYS do
  table.insert(entries, read(KEYS[i]))
end
out[5] = entries
return out

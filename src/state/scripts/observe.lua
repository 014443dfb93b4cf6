-- Reads the whole managed state of one cluster in a single round trip.
-- KEYS[1] layout, KEYS[2] generation, KEYS[3] applied, KEYS[4] digests, KEYS[5] lock
-- A field of the digests hash outside the cluster's prefix (the digests key without its
-- `digests` suffix) is never read: celeroot owns nothing there (docs/security.md).
-- ARGV: further keys to read (the keys the desired state will write).
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
local out = {}
out[1] = redis.call('GET', KEYS[1]) or ''
out[2] = redis.call('GET', KEYS[2]) or '0'
out[3] = redis.call('HGETALL', KEYS[3])
out[4] = redis.call('GET', KEYS[5]) or ''
local seen = {}
local entries = {}
seen[KEYS[4]] = true
table.insert(entries, read(KEYS[4]))
local prefix = string.sub(KEYS[4], 1, #KEYS[4] - #'digests')
local digests = redis.call('HGETALL', KEYS[4])
for i = 1, #digests, 2 do
  local k = digests[i]
  if not seen[k] and string.sub(k, 1, #prefix) == prefix then
    seen[k] = true
    table.insert(entries, read(k))
  end
end
for i = 1, #ARGV do
  local k = ARGV[i]
  if not seen[k] then
    seen[k] = true
    table.insert(entries, read(k))
  end
end
out[5] = entries
return out

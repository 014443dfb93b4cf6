-- Takes or renews the leader lease of the watch daemons (compare-and-extend).
-- KEYS[1] leader, KEYS[2] leader-epoch
-- ARGV[1] token, ARGV[2] ttl in ms, ARGV[3] holder, ARGV[4] now (RFC 3339)
-- Returns {1, epoch} when the caller leads (taken or renewed), {0, current value} otherwise.
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, v = pcall(cjson.decode, cur)
  if ok and type(v) == 'table' and v['token'] == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tostring(v['epoch'])}
  end
  return {0, cur}
end
local epoch = redis.call('INCR', KEYS[2])
local value = cjson.encode({token = ARGV[1], holder = ARGV[3], epoch = epoch, since = ARGV[4]})
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, tostring(epoch)}

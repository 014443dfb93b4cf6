-- Extends the reconcile lease only if it is still ours.
-- KEYS[1] lock; ARGV[1] lease id, ARGV[2] ttl in ms
-- Returns 1 when extended, 0 when the lease is gone or held by someone else.
local lock = redis.call('GET', KEYS[1])
if not lock then
  return 0
end
local ok, v = pcall(cjson.decode, lock)
if ok and type(v) == 'table' and v['id'] == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0

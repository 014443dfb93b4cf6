-- Releases the reconcile lease only if it is still ours.
-- KEYS[1] lock; ARGV[1] lease id
local lock = redis.call('GET', KEYS[1])
if lock and cjson.decode(lock)['id'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

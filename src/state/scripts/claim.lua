-- Claims this Redis database for one cluster: KEYS[1] = celeroot:owner, ARGV[1] = the
-- cluster. Returns the owner (the cluster itself when it claimed it now).
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return owner

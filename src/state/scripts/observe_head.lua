-- Reads what an incremental reconcile needs to trust its baseline, in one round trip:
-- no managed key is read.
-- KEYS[1] layout, KEYS[2] generation, KEYS[3] applied, KEYS[4] lock
-- Returns {layout, generation, applied (flat hash), lock}.
local out = {}
out[1] = redis.call('GET', KEYS[1]) or ''
out[2] = redis.call('GET', KEYS[2]) or '0'
out[3] = redis.call('HGETALL', KEYS[3])
out[4] = redis.call('GET', KEYS[4]) or ''
return out

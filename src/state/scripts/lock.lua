-- Takes the reconcile lease.
-- KEYS[1] lock, KEYS[2] leader, KEYS[3] lock-epoch
-- ARGV[1] lease (JSON), ARGV[2] ttl in ms, ARGV[3] the caller's leader token ('' for none)
-- Returns 1 when taken, 2 when taken over from a daemon that is no longer the leader,
-- or the holder's value. Every take increments lock-epoch (a renewal does not), which a
-- pipelined transaction watches to notice a takeover.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('INCR', KEYS[3])
  return 1
end
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('INCR', KEYS[3])
  return 1
end
if ARGV[3] ~= '' then
  local ok, held = pcall(cjson.decode, cur)
  if ok and type(held) == 'table' and type(held['leader']) == 'string' and held['leader'] ~= ARGV[3] then
    -- Held by a daemon: void when that daemon is no longer the leader and the caller is.
    local ok2, lead = pcall(cjson.decode, redis.call('GET', KEYS[2]) or '')
    if ok2 and type(lead) == 'table' and lead['token'] == ARGV[3] then
      redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
      redis.call('INCR', KEYS[3])
      return 2
    end
  end
end
return cur

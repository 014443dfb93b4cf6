-- Releases the reconcile lease only if it is still ours.
-- KEYS[1] lock; ARGV[1] lease id ('unreadable' removes a value that is not celeroot's JSON)
local lock = redis.call('GET', KEYS[1])
if not lock then
  return 0
end
local ok, v = pcall(cjson.decode, lock)
if ok and type(v) == 'table' and v['id'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
if (not ok or type(v) ~= 'table') and ARGV[1] == 'unreadable' then
  return redis.call('DEL', KEYS[1])
end
return 0

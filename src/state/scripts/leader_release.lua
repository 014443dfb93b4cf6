-- Gives up the leader lease if it is still ours.
-- KEYS[1] leader; ARGV[1] token
local cur = redis.call('GET', KEYS[1])
if not cur then
  return 0
end
local ok, v = pcall(cjson.decode, cur)
if ok and type(v) == 'table' and v['token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

-- Swaps a rebuilt agent view (ARGV[2], the shadow's base) in for the live one (ARGV[1]) in
-- one step, if the rebuilt view has reached the live checkpoint; else returns {0, live}.
-- KEYS[1] = <live>checkpoint, KEYS[2] = <shadow>checkpoint. Returns {1, position}.
-- The projected keys (a record per agent, ids, states, kinds) are replaced. Pings are the
-- heartbeats' own, fresher than the log: a live ping is kept for an agent the rebuilt view
-- holds as active, and never moves back. The live `watch_since` stays.
local live, shadow = ARGV[1], ARGV[2]
local at = tonumber(redis.call('GET', KEYS[1]) or '0')
local reached = tonumber(redis.call('GET', KEYS[2]) or '0')
if reached < at then return {0, at} end

for _, id in ipairs(redis.call('ZRANGE', live .. 'ids', 0, -1)) do
  redis.call('DEL', live .. 'a:' .. id)
end
local fresh = redis.call('ZRANGE', live .. 'pings', 0, -1, 'WITHSCORES')
redis.call('DEL', live .. 'ids', live .. 'states', live .. 'kinds', live .. 'pings')

for _, id in ipairs(redis.call('ZRANGE', shadow .. 'ids', 0, -1)) do
  redis.call('RENAME', shadow .. 'a:' .. id, live .. 'a:' .. id)
end
for _, key in ipairs({'ids', 'states', 'kinds', 'pings'}) do
  if redis.call('EXISTS', shadow .. key) == 1 then
    redis.call('RENAME', shadow .. key, live .. key)
  end
end
for i = 1, #fresh, 2 do
  if redis.call('ZSCORE', live .. 'pings', fresh[i]) then
    redis.call('ZADD', live .. 'pings', 'GT', fresh[i + 1], fresh[i])
  end
end
redis.call('SET', KEYS[1], reached)
redis.call('DEL', KEYS[2], shadow .. 'watch_since')
return {1, reached}

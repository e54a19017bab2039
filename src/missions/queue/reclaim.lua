-- Puts back missions whose claim expired while they are still 'ready' (the claimer died
-- between pop and start). KEYS[1] = {ns}:q:gen. ARGV: base, now_ms.
local base, now = ARGV[1], tonumber(ARGV[2])
local gen = redis.call('GET', KEYS[1]) or '1'
local p = base .. gen .. ':'
local claims = base .. 'claims'
local expired = redis.call('ZRANGEBYSCORE', claims, '-inf', now, 'LIMIT', 0, 1000)
local back = 0
for _, id in ipairs(expired) do
  redis.call('ZREM', claims, id)
  redis.call('HDEL', base .. 'claimer', id)
  local m = p .. 'm:' .. id
  local state = redis.call('HMGET', m, 'state', 'agent', 'bonus', 'ready_at')
  if state[1] == 'ready' then
    redis.call('ZADD', p .. 'ready:' .. state[2], tonumber(state[4]) - tonumber(state[3]), id)
    back = back + 1
  end
end
return back

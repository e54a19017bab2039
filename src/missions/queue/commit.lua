-- The mission_queue projection's commit: applies a batch of queue changes and moves the
-- checkpoint from ARGV[3] to ARGV[4] in one step (invariant 4), or returns {0, actual}.
-- KEYS[1] = {ns}:q:gen. ARGV: base, generation ('' = live), after, up_to, then the changes.
local base, gen, after, up_to = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if gen == '' then gen = redis.call('GET', KEYS[1]) or '1' end
local p = base .. gen .. ':'
local actual = tonumber(redis.call('GET', p .. 'checkpoint') or '0')
if actual ~= after then return {0, actual} end

local function unplace(m, id)
  local agent = redis.call('HGET', m, 'agent')
  if agent then
    redis.call('ZREM', p .. 'ready:' .. agent, id)
    redis.call('ZREM', p .. 'delayed:' .. agent, id)
  end
  redis.call('ZREM', p .. 'leases', id)
  return agent
end

local function ready(m, id, at)
  local agent = unplace(m, id)
  if not agent then return end
  local bonus = tonumber(redis.call('HGET', m, 'bonus'))
  redis.call('ZADD', p .. 'ready:' .. agent, at - bonus, id)
  redis.call('HSET', m, 'state', 'ready', 'ready_at', at)
  redis.call('HDEL', m, 'due_at', 'worker', 'lease')
end

local function delay(m, id, at)
  local agent = unplace(m, id)
  if not agent then return end
  redis.call('ZADD', p .. 'delayed:' .. agent, at, id)
  redis.call('HSET', m, 'state', 'delayed', 'due_at', at)
  redis.call('HDEL', m, 'ready_at', 'worker', 'lease')
end

local i = 5
while i <= #ARGV do
  local op, id = ARGV[i], ARGV[i + 1]
  local m = p .. 'm:' .. id
  if op == 'E' then
    local agent = ARGV[i + 2]
    redis.call('HSET', m, 'agent', agent, 'bonus', ARGV[i + 3])
    redis.call('SADD', p .. 'kinds', agent)
    if ARGV[i + 5] == '1' then delay(m, id, tonumber(ARGV[i + 4]))
    else ready(m, id, tonumber(ARGV[i + 4])) end
    i = i + 6
  elseif op == 'R' then
    ready(m, id, tonumber(ARGV[i + 2]))
    i = i + 3
  elseif op == 'D' then
    delay(m, id, tonumber(ARGV[i + 2]))
    i = i + 3
  elseif op == 'L' then
    if unplace(m, id) then
      redis.call('ZADD', p .. 'leases', ARGV[i + 3], id)
      redis.call('HSET', m, 'state', 'running', 'lease', ARGV[i + 3])
      if ARGV[i + 2] ~= '' then redis.call('HSET', m, 'worker', ARGV[i + 2]) end
      redis.call('HDEL', m, 'ready_at', 'due_at')
    end
    i = i + 4
  elseif op == 'X' then
    unplace(m, id)
    if ARGV[i + 2] == '1' then
      redis.call('HSET', m, 'state', 'failed')
      redis.call('HDEL', m, 'ready_at', 'due_at', 'worker', 'lease')
    else
      redis.call('DEL', m)
    end
    i = i + 3
  else
    return redis.error_reply('unknown queue change ' .. op)
  end
end
redis.call('SET', p .. 'checkpoint', up_to)
return {1, tonumber(up_to)}

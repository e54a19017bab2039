-- The agent_view projection's commit: applies a batch of changes and moves the checkpoint
-- from ARGV[2] to ARGV[3] in one step (invariant 4), or returns {0, actual}.
-- KEYS[1] = <base>checkpoint. ARGV: base, after, up_to, now (ms), then the changes.
-- Every change applied again over a record that has it already (a refill from a checkpoint
-- that lost its data) leaves the record and the counts by state and kind as they were.
local base, after, up_to = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local actual = tonumber(redis.call('GET', KEYS[1]) or '0')
if actual ~= after then return {0, actual} end
-- A view filled from nothing (new, or lost and refilled) knows no agent's last heartbeat
-- better than the log does: the supervisor gives agents one window from here to be heard.
if after == 0 then redis.call('SET', base .. 'watch_since', ARGV[4], 'NX') end

local function place(a, id)
  -- Only active agents are candidates for the supervisor's sweep. A ping never moves back:
  -- the heartbeat route may have put a later one there already.
  if redis.call('HGET', a, 'state') == 'active' then
    redis.call('ZADD', base .. 'pings', 'GT', tonumber(redis.call('HGET', a, 'seen_at')), id)
  else
    redis.call('ZREM', base .. 'pings', id)
  end
end

local function seen(a, at)
  local known = tonumber(redis.call('HGET', a, 'seen_at') or '0')
  if at > known then redis.call('HSET', a, 'seen_at', at) end
end

local i = 5
while i <= #ARGV do
  local op, id = ARGV[i], ARGV[i + 1]
  local a = base .. 'a:' .. id
  if op == 'R' then
    if redis.call('EXISTS', a) == 0 then
      redis.call('HSET', a, 'name', ARGV[i + 2], 'kind', ARGV[i + 3], 'owner', ARGV[i + 4],
        'version', ARGV[i + 5], 'registered_at', ARGV[i + 6], 'seen_at', ARGV[i + 6],
        'state', 'active', 'restarts', 0, 'restart_requested', 0)
      if ARGV[i + 7] ~= '' then redis.call('HSET', a, 'key_id', ARGV[i + 7]) end
      redis.call('ZADD', base .. 'ids', 0, id)
      redis.call('HINCRBY', base .. 'states', 'active', 1)
      redis.call('HINCRBY', base .. 'kinds', ARGV[i + 3], 1)
      place(a, id)
    end
    i = i + 8
  elseif op == 'S' then
    local old = redis.call('HGET', a, 'state')
    if old then
      local new = ARGV[i + 2]
      if old ~= new then
        redis.call('HINCRBY', base .. 'states', old, -1)
        redis.call('HINCRBY', base .. 'states', new, 1)
        redis.call('HSET', a, 'state', new)
      end
      if ARGV[i + 3] ~= '' then seen(a, tonumber(ARGV[i + 3])) end
      place(a, id)
    end
    i = i + 4
  elseif op == 'T' then
    if redis.call('EXISTS', a) == 1 then
      redis.call('HSET', a, 'restart_requested', ARGV[i + 2])
      -- Counted once per event, however often a refill applies it.
      local version = tonumber(ARGV[i + 3])
      if ARGV[i + 2] == '0' and version > tonumber(redis.call('HGET', a, 'restart_v') or '0') then
        redis.call('HINCRBY', a, 'restarts', 1)
        redis.call('HSET', a, 'restart_v', version)
      end
    end
    i = i + 4
  elseif op == 'B' then
    if redis.call('EXISTS', a) == 1 then
      redis.call('HSET', a, 'status', ARGV[i + 2], 'load', ARGV[i + 3], 'running', ARGV[i + 4],
        'beat_at', ARGV[i + 5])
      seen(a, tonumber(ARGV[i + 5]))
      place(a, id)
    end
    i = i + 6
  else
    return redis.error_reply('unknown agent view change ' .. op)
  end
end
redis.call('SET', KEYS[1], up_to)
return {1, tonumber(up_to)}

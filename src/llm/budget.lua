-- Budgets of LLM spend, atomic in Redis for every process. Each key is one budget's hash:
-- seeded (1 once its spend was loaded from the log's usage table), spent_t (tokens),
-- spent_c (cost in nano-US-dollars), and one field r:<call id> = "tokens cost expires_ms"
-- per call in flight, whose worst case is held until it settles (or its process is presumed
-- dead at expires_ms).
--
-- ARGV[1] is the operation:
--   reserve id tokens cost hold_ms  then per key: tokens_max cost_max (-1: none) keep_s
--           -> {'ok'} | {'unseeded', i} | {'exceeded', i, 'tokens'|'cost', spent, held}
--   seed    tokens cost keep_s (KEYS[1] only)  -> 1 when this call seeded it
--   settle  id tokens cost  then per key: keep_s  -> number of budgets settled
-- Each key is kept keep_s after its last use: days for a day's budget, minutes for a
-- minute's.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]

if op == 'reserve' then
  local id, tokens, cost, expires = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), now + tonumber(ARGV[5])
  for i, key in ipairs(KEYS) do
    local fields = redis.call('HGETALL', key)
    local spent_t, spent_c, held_t, held_c, seeded = 0, 0, 0, 0, false
    for f = 1, #fields, 2 do
      local name, value = fields[f], fields[f + 1]
      if name == 'seeded' then seeded = true
      elseif name == 'spent_t' then spent_t = tonumber(value)
      elseif name == 'spent_c' then spent_c = tonumber(value)
      elseif string.sub(name, 1, 2) == 'r:' then
        local rt, rc, rx = string.match(value, '(%S+) (%S+) (%S+)')
        if tonumber(rx) <= now then
          redis.call('HDEL', key, name)
        else
          held_t, held_c = held_t + tonumber(rt), held_c + tonumber(rc)
        end
      end
    end
    if not seeded then return {'unseeded', i} end
    local tokens_max, cost_max = tonumber(ARGV[3 + 3 * i]), tonumber(ARGV[4 + 3 * i])
    if tokens_max >= 0 and spent_t + held_t + tokens > tokens_max then
      return {'exceeded', i, 'tokens', string.format('%.0f', spent_t), string.format('%.0f', held_t)}
    end
    if cost_max >= 0 and spent_c + held_c + cost > cost_max then
      return {'exceeded', i, 'cost', string.format('%.0f', spent_c), string.format('%.0f', held_c)}
    end
  end
  for i, key in ipairs(KEYS) do
    redis.call('HSET', key, 'r:' .. id, tokens .. ' ' .. cost .. ' ' .. expires)
    redis.call('EXPIRE', key, tonumber(ARGV[5 + 3 * i]))
  end
  return {'ok'}
end

if op == 'seed' then
  local key = KEYS[1]
  if redis.call('HSETNX', key, 'seeded', 1) == 0 then return 0 end
  redis.call('HSET', key, 'spent_t', ARGV[2], 'spent_c', ARGV[3])
  redis.call('EXPIRE', key, tonumber(ARGV[4]))
  return 1
end

if op == 'settle' then
  local id, tokens, cost = ARGV[2], ARGV[3], ARGV[4]
  local settled = 0
  for i, key in ipairs(KEYS) do
    -- A budget lost meanwhile is seeded again from the log, which will hold this call.
    if redis.call('HEXISTS', key, 'seeded') == 1 then
      redis.call('HDEL', key, 'r:' .. id)
      redis.call('HINCRBY', key, 'spent_t', tokens)
      redis.call('HINCRBY', key, 'spent_c', cost)
      redis.call('EXPIRE', key, tonumber(ARGV[4 + i]))
      settled = settled + 1
    end
  end
  return settled
end

return redis.error_reply('unknown operation ' .. tostring(op))

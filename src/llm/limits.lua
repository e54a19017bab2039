-- The shared limiter of one provider+model, atomic in Redis for every process. Time is the
-- Redis server's, so the processes' clocks need not agree.
--
-- KEYS[1] the state hash; KEYS[2] the zset of calls in flight (member: call id, score: when
-- its slot lapses if its process died holding it).
-- State: rate (requests/s now allowed, absent until configured or learned), tat (ms: when
-- the next request slot is free), ttat (the same for tokens), paused_until (ms), cut_at (ms
-- of the last decrease), limited_at (ms a caller last had to wait), win/n/prev (successes
-- counted per one-second window), pauses, cuts (counts).
--
-- ARGV[1] is the operation:
--   take  ceiling_rps tpm tokens horizon_ms   -> {1, wait_ms, rate} a reserved slot to start
--                                               after wait_ms; {0, retry_ms, why} none yet
--   enter concurrency call_id slot_ttl_ms     -> {1, 0, ''} in; {0, retry_ms, why}
--   done  outcome retry_after_ms tokens_est tokens_used tpm ceiling_rps call_id
--                                             -> {rate or -1, paused_ms}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state, flying = KEYS[1], KEYS[2]
local op = ARGV[1]
local TOKEN_BURST_MS = 6000
local RATE_MIN = 0.1
local DECREASE = 0.9
local KEEP_S = 86400

local function num(field, default)
  local value = redis.call('HGET', state, field)
  if value then return tonumber(value) end
  return default
end

local paused = num('paused_until', 0)

if op == 'take' then
  local ceiling, tpm, tokens, horizon = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  if paused > now then return {0, paused - now, 'paused'} end
  local rate = num('rate', -1)
  if ceiling > 0 and (rate < 0 or rate > ceiling) then
    rate = ceiling
    redis.call('HSET', state, 'rate', tostring(rate))
  end
  local wait, slot, tslot, ttat = 0, nil, nil, nil
  if rate > 0 then
    slot = math.max(num('tat', 0), now)
    if slot - now > horizon then return {0, math.floor(slot - now - horizon) + 1, 'rate'} end
    wait = slot - now
  end
  if tpm > 0 then
    ttat = num('ttat', 0)
    tslot = math.max(now, ttat - TOKEN_BURST_MS)
    if tslot - now > horizon then return {0, math.floor(tslot - now - horizon) + 1, 'tokens'} end
    wait = math.max(wait, tslot - now)
  end
  if slot then redis.call('HSET', state, 'tat', tostring(math.max(slot, now + wait) + 1000 / rate)) end
  if tslot then
    redis.call('HSET', state, 'ttat', tostring(math.max(ttat, now + wait) + tokens * 60000 / tpm))
  end
  if wait > 0 then redis.call('HSET', state, 'limited_at', now) end
  redis.call('EXPIRE', state, KEEP_S)
  return {1, math.floor(wait), tostring(rate)}
end

if op == 'enter' then
  local concurrency, id, ttl = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
  if paused > now then return {0, paused - now, 'paused'} end
  if concurrency > 0 then
    redis.call('ZREMRANGEBYSCORE', flying, '-inf', now)
    if redis.call('ZCARD', flying) >= concurrency then
      redis.call('HSET', state, 'limited_at', now)
      return {0, 0, 'concurrency'}
    end
    redis.call('ZADD', flying, now + ttl, id)
    redis.call('EXPIRE', flying, KEEP_S)
  end
  return {1, 0, ''}
end

if op == 'done' then
  local outcome, retry_after = ARGV[2], tonumber(ARGV[3])
  local estimated, used, tpm, ceiling, id = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
  redis.call('ZREM', flying, id)
  if tpm > 0 and used >= 0 then
    -- The reservation was the estimate; the bucket keeps what was really used.
    redis.call('HSET', state, 'ttat', tostring(num('ttat', now) + (used - estimated) * 60000 / tpm))
  end
  local rate = num('rate', -1)
  local win, n = num('win', 0), num('n', 0)
  if now - win >= 1000 then
    local prev = 0
    if now - win < 2000 then prev = n end
    redis.call('HSET', state, 'prev', prev, 'win', now, 'n', 0)
    win, n = now, 0
  end
  if outcome == 'ok' then
    redis.call('HINCRBY', state, 'n', 1)
    -- Additive increase, only while the limit is what holds callers back: about 2 % of
    -- the rate per second of such traffic, 10 % once ten seconds passed without a 429
    -- (the provider may allow more than was learned; probe for it sooner).
    if rate > 0 and now - num('limited_at', 0) < 2000 then
      local step = math.max(0.5, rate * 0.02)
      if now - num('cut_at', 0) > 10000 then step = rate * 0.1 end
      rate = rate + step / rate
      if ceiling > 0 and rate > ceiling then rate = ceiling end
      redis.call('HSET', state, 'rate', tostring(rate))
    end
  elseif outcome == 'limited' then
    if retry_after > 0 and now + retry_after > paused then
      paused = now + retry_after
      redis.call('HSET', state, 'paused_until', paused)
      redis.call('HSET', state, 'tat', tostring(math.max(num('tat', 0), paused)))
      redis.call('HINCRBY', state, 'pauses', 1)
    end
    -- Multiplicative decrease, once a second however many calls met the same 429s, from
    -- what the provider was really answering: the answers per second over the last second
    -- (the previous window's share of it and the current window's count), or the current
    -- window's pace once it has run a quarter of a second. With no such measure yet, a set
    -- rate is cut by the factor; an unset one stays unset (the pause alone holds callers)
    -- rather than being guessed from nothing.
    if now - num('cut_at', 0) >= 1000 then
      local elapsed = now - win
      local prev = num('prev', 0)
      local answered = 0
      if prev > 0 then
        answered = prev * (1000 - elapsed) / 1000 + n
      elseif elapsed >= 250 then
        answered = n * 1000 / elapsed
      end
      local base = -1
      if answered > 0 then base = answered end
      if rate > 0 and (base <= 0 or rate < base) then base = rate end
      if base > 0 then
        rate = math.max(RATE_MIN, base * DECREASE)
        redis.call('HSET', state, 'rate', tostring(rate), 'cut_at', now)
        redis.call('HINCRBY', state, 'cuts', 1)
      end
    end
  end
  redis.call('EXPIRE', state, KEEP_S)
  local paused_ms = 0
  if paused > now then paused_ms = paused - now end
  return {tostring(rate), paused_ms}
end

return redis.error_reply('unknown operation ' .. tostring(op))

-- A worker's claim: pops up to ARGV[5] best missions over the kinds ARGV[6..], best first,
-- and records a claim on each until ARGV[4]. KEYS[1] = {ns}:q:gen.
-- ARGV: base, now_ms, worker, claim_until_ms, max, kinds.
-- Returns {id1, kind1, id2, kind2, ...}, empty when nothing is ready.
local base, now, worker, claim_until = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local max = tonumber(ARGV[5])
local gen = redis.call('GET', KEYS[1]) or '1'
local p = base .. gen .. ':'
local claims = base .. 'claims'
local function held(id)
  local until_ = redis.call('ZSCORE', claims, id)
  return until_ and tonumber(until_) > now
end
-- The best mission over every kind, or nil: each pop looks again, so that the next best
-- of any kind (ready, or delayed and due) competes for the next place.
local function best()
  local best_id, best_set, best_score, best_kind, best_at = nil, nil, nil, nil, nil
  for k = 6, #ARGV do
    local kind = ARGV[k]
    local ready, delayed = p .. 'ready:' .. kind, p .. 'delayed:' .. kind
    -- A mission still under a live claim can reappear here when the projector applies an
    -- older event after the pop; the claimer has it, so drop it from the ready set (the
    -- claim's expiry puts it back if the claimer lets it go).
    while true do
      local top = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
      if #top == 0 then break end
      if held(top[1]) then
        redis.call('ZREM', ready, top[1])
      else
        local score = tonumber(top[2])
        if best_score == nil or score < best_score then
          best_id, best_set, best_score, best_kind, best_at = top[1], ready, score, kind, nil
        end
        break
      end
    end
    local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 256)
    for j = 1, #due, 2 do
      local id, at = due[j], tonumber(due[j + 1])
      if not held(id) then
        local bonus = tonumber(redis.call('HGET', p .. 'm:' .. id, 'bonus') or '0')
        local score = at - bonus
        if best_score == nil or score < best_score then
          best_id, best_set, best_score, best_kind, best_at = id, delayed, score, kind, at
        end
      end
    end
  end
  return best_id, best_set, best_kind, best_at
end
local popped = {}
for _ = 1, max do
  local id, set, kind, at = best()
  if id == nil then break end
  redis.call('ZREM', set, id)
  if at then
    -- Taken straight from the delayed set: recorded as ready, so that a claim that expires
    -- unstarted is put back by the reclaim.
    redis.call('HSET', p .. 'm:' .. id, 'state', 'ready', 'ready_at', at)
    redis.call('HDEL', p .. 'm:' .. id, 'due_at')
  end
  -- Recorded at once, so that the next look skips it as held.
  redis.call('ZADD', claims, claim_until, id)
  redis.call('HSET', base .. 'claimer', id, worker)
  popped[#popped + 1] = id
  popped[#popped + 1] = kind
end
return popped

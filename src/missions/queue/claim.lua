-- A worker's claim: pops the best mission over the kinds ARGV[5..] and records a claim
-- until ARGV[4]. KEYS[1] = {ns}:q:gen. ARGV: base, now_ms, worker, claim_until_ms, kinds.
local base, now, worker, claim_until = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local gen = redis.call('GET', KEYS[1]) or '1'
local p = base .. gen .. ':'
local claims = base .. 'claims'
local function held(id)
  local until_ = redis.call('ZSCORE', claims, id)
  return until_ and tonumber(until_) > now
end
local best_id, best_set, best_score, best_kind, best_at = nil, nil, nil, nil, nil
for k = 5, #ARGV do
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
if best_id == nil then return false end
redis.call('ZREM', best_set, best_id)
if best_at then
  -- Taken straight from the delayed set: recorded as ready, so that a claim that expires
  -- unstarted is put back by the reclaim.
  redis.call('HSET', p .. 'm:' .. best_id, 'state', 'ready', 'ready_at', best_at)
  redis.call('HDEL', p .. 'm:' .. best_id, 'due_at')
end
redis.call('ZADD', claims, claim_until, best_id)
redis.call('HSET', base .. 'claimer', best_id, worker)
return {best_id, best_kind}

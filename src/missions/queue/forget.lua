-- Forgets a mission the log does not know (the queue outlived its database): takes it out of
-- every set of the live generation and drops its hash and claim, so that the supervisor does
-- not try to expire its lease every tick. KEYS[1] = {ns}:q:gen. ARGV: base, mission id.
local base, id = ARGV[1], ARGV[2]
local gen = redis.call('GET', KEYS[1]) or '1'
local p = base .. gen .. ':'
local m = p .. 'm:' .. id
local agent = redis.call('HGET', m, 'agent')
if agent then
  redis.call('ZREM', p .. 'ready:' .. agent, id)
  redis.call('ZREM', p .. 'delayed:' .. agent, id)
end
redis.call('ZREM', p .. 'leases', id)
redis.call('DEL', m)
redis.call('ZREM', base .. 'claims', id)
redis.call('HDEL', base .. 'claimer', id)
return 1

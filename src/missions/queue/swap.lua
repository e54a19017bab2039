-- Switches the live generation to ARGV[2] once it has reached the live checkpoint.
-- KEYS[1] = {ns}:q:gen. ARGV: base, generation.
local base, gen = ARGV[1], ARGV[2]
local live = redis.call('GET', KEYS[1]) or '1'
local live_at = tonumber(redis.call('GET', base .. live .. ':checkpoint') or '0')
local reached = tonumber(redis.call('GET', base .. gen .. ':checkpoint') or '0')
if reached < live_at then return {0, live_at} end
redis.call('SET', KEYS[1], gen)
return {1, tonumber(live)}

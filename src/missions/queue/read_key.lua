-- One key of the live generation (or of a scratch queue), with the generation, its
-- checkpoint and the open claims, in one atomic read: what `brain events verify` compares.
-- KEYS[1] = {ns}:q:gen. ARGV: base, the key's name inside the generation.
-- Returns {generation, checkpoint, claimed ids, type, flat contents}.
local base, name = ARGV[1], ARGV[2]
local gen = redis.call('GET', KEYS[1]) or '1'
local p = base .. gen .. ':'
local checkpoint = redis.call('GET', p .. 'checkpoint') or '0'
local claims = redis.call('ZRANGE', base .. 'claims', 0, -1)
local key = p .. name
local kind = redis.call('TYPE', key)['ok']
local contents = {}
if kind == 'string' then contents = {redis.call('GET', key)}
elseif kind == 'hash' then contents = redis.call('HGETALL', key)
elseif kind == 'zset' then contents = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
elseif kind == 'set' then contents = redis.call('SMEMBERS', key)
end
return {gen, checkpoint, claims, kind, contents}

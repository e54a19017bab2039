-- One API key's request rate, shared by every process of the deployment: a GCRA schedule
-- (the time, in microseconds on the Redis server's clock, at which the key would be back to
-- a full minute's allowance), one string per key that expires once it is back there.
--
-- KEYS[1] the key's schedule
-- ARGV[1] the interval between two requests at the key's rate (µs)
-- ARGV[2] how far the schedule may run ahead of now (µs): one interval less than a minute's
--         requests, so a key may send that many at once
-- -> {wait, lead}: wait 0 when the request passes (and is counted), else the µs until one
--    would; lead, how far the schedule is ahead of now after it (µs), which the process
--    keeps to go on from should Redis stop answering
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, ahead = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > ahead then return {tat - now - ahead, tat - now} end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
return {0, tat - now}

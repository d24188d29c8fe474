-- reserve_rate_slot: reserves the next slot of a task type's rate budget (a GCRA: the key holds the theoretical
-- arrival time of the next slot). The key expires once its last reserved slot has passed, so an idle type costs
-- nothing.
-- KEYS[1]  the type's TAT key
-- ARGV[1]  now_ms
-- ARGV[2]  interval_ms between two slots
-- Returns the ms to wait for the reserved slot (0 = now).
local tat_key = KEYS[1]
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])

local tat = tonumber(redis.call('GET', tat_key) or '0')
if tat < now then tat = now end
redis.call('SET', tat_key, tostring(tat + interval), 'PX', math.ceil(tat + interval - now) + 1000)
return math.floor(tat - now)

-- remove_delayed: takes one task's entry out of a service's delayed set (cancel, a timed-out scheduled task).
-- KEYS[1]  the delayed entries hash
-- KEYS[2...]  the due-time zsets
-- ARGV[1]  task id
-- Returns 1 when the entry was there (and is now gone), else 0.
local entries_hash = KEYS[1]
local id = ARGV[1]
local FIRST_ZSET = 2

local had = redis.call('HDEL', entries_hash, id)
for k = FIRST_ZSET, #KEYS do redis.call('ZREM', KEYS[k], id) end
return had

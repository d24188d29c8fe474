-- claim_callback: claims a callback outbox entry only while it is due, so racing pumps never both take it; the
-- lease lets another pump retry it if this one dies.
-- KEYS[1]  the callback outbox zset
-- ARGV[1]  the entry ('t:<task id>' or 'b:<batch id>')
-- ARGV[2]  now_s
-- ARGV[3]  lease_until_s: the entry's new score, when another pump may take it
-- Returns 1 if claimed, 0 if the entry is gone or not due.
local outbox = KEYS[1]
local entry, now, lease_until = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local due = redis.call('ZSCORE', outbox, entry)
if not due or tonumber(due) > now then return 0 end
redis.call('ZADD', outbox, lease_until, entry)
return 1

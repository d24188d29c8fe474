-- set_cancel_flag: the cancel flag, and its copy in the status record (field cancel_requested_at), which the
-- worker's fetch reads in the read of the record it does anyway. Only an existing record gets the copy (a record
-- holding nothing but it would have no status); its lifetime is renewed with the flag's, so the copy lasts at
-- least as long.
-- KEYS[1]  the task's cancel flag
-- KEYS[2]  the task's status hash
-- ARGV[1]  time_s of the request
-- ARGV[2]  ttl_s of the flag (and the record)
-- Returns nothing.
local flag, status_key = KEYS[1], KEYS[2]
local now, ttl_s = ARGV[1], ARGV[2]

redis.call('SET', flag, now, 'EX', ttl_s)
if redis.call('EXISTS', status_key) == 1 then
  redis.call('HSET', status_key, 'cancel_requested_at', now)
  redis.call('EXPIRE', status_key, ttl_s)
end

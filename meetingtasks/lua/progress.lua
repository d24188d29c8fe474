-- progress: records and publishes a running task's progress; the status and its history are left alone. Only a
-- task that is STARTED reports.
-- KEYS[1]  the task's status hash
-- ARGV[1]  percent
-- ARGV[2]  message
-- ARGV[3]  time_s
-- ARGV[4]  ttl_s: the record's lifetime after this change
-- ARGV[5]  the status channel
-- ARGV[6]  the event JSON to publish
-- Returns 1 if recorded, 0 if the task is not STARTED.
local status_key = KEYS[1]
local percent, message, now, ttl_s, channel, event = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

if redis.call('HGET', status_key, 'status') ~= 'STARTED' then return 0 end
redis.call('HSET', status_key, 'progress', percent, 'progress_message', message, 'updated_at', now)
redis.call('EXPIRE', status_key, ttl_s)
redis.call('PUBLISH', channel, event)
return 1

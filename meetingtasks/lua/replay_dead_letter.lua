-- replay_dead_letter: takes a letter out of a service's dead letters and pushes its message back onto its queue.
-- The task's record (when it still exists) is reset to QUEUED, attempt 1, before the push, so a worker never sees
-- the old terminal status; its error, result and delivery count are cleared.
-- KEYS[1]  the dead-letter hash
-- KEYS[2]  the dead-letter index zset
-- KEYS[3]  the target queue
-- KEYS[4]  the task's status hash
-- KEYS[5]  the service's wake list
-- ARGV[1]  letter id
-- ARGV[2]  the message to push (renewed envelope)
-- ARGV[3]  now_s
-- ARGV[4]  status channel
-- ARGV[5]  the QUEUED status event JSON
-- ARGV[6]  status ttl_s
-- Returns 1 if replayed, 0 if the letter was not there (replayed or purged already).
-- prelude: record, wake
local letters, letter_index, queue, status_key, wake_list = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local letter_id, message, now, channel, event, ttl_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

if redis.call('HDEL', letters, letter_id) == 0 then return 0 end
redis.call('ZREM', letter_index, letter_id)
if redis.call('EXISTS', status_key) == 1 then
  local history = redis.call('HGET', status_key, 'history') or ''
  redis.call('HSET', status_key, 'status', 'QUEUED', 'attempt', '1', 'updated_at', now,
             'history', history .. mt_history_line('QUEUED', now, 1), 'deliveries', '0')
  redis.call('HDEL', status_key, 'error', 'error_type', 'result')
  redis.call('EXPIRE', status_key, ttl_s)
  redis.call('PUBLISH', channel, event)
end
mt_wake(wake_list, 1)
redis.call('LPUSH', queue, message)
return 1

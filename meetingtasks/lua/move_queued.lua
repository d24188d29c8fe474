-- move_queued: moves a queued task's message to another priority's queue (the back of its line) with a wake token
-- and the transition that re-enters its status (see meetingtasks.store.moves), if the record still reads what the caller
-- saw.
-- KEYS[1]  the task's status hash
-- KEYS[2]  the old queue
-- KEYS[3]  the new queue
-- KEYS[4]  the service's wake list
-- KEYS[5]  the timeout deadlines zset
-- KEYS[6]  the callback outbox zset
-- ARGV[1]  the message as it is in the old queue
-- ARGV[2]  the message rewritten for the new queue
-- ARGV[3]  its index in the old queue (from the newest end) when found
-- ARGV[4]  status: the one the caller saw, re-entered
-- ARGV[5]  time_s
-- ARGV[6]  attempt the caller saw
-- ARGV[7]  ttl_s: the record's lifetime after this change
-- ARGV[8]  the status channel
-- ARGV[9]  the event JSON to publish
-- ARGV[10] task id
-- ARGV[11] batch hash key prefix
-- ARGV[12...]  field, value, ... written with the transition
-- Returns {'outcome', 'moved' | 'gone' (not in the old queue) | 'changed' (the record moved on), 'status', s}.
-- prelude: record, rollup, transition, wake, move_guard
local status_key, old_queue, new_queue, wake_list, deadlines, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6]
local old_message, new_message, found_at = ARGV[1], ARGV[2], tonumber(ARGV[3])
local status, now, attempt, ttl_s, channel, event, id, batch_prefix = unpack(ARGV, 4, 11)
local fields = {unpack(ARGV, 12)}

local refused = mt_move_guard(status_key, status, attempt)
if refused then return refused end
-- LREM compares entries from the end it starts at until the message: start at the end it was found nearer to.
local from = found_at * 2 > redis.call('LLEN', old_queue) and -1 or 1
if redis.call('LREM', old_queue, from, old_message) == 0 then return {'outcome', 'gone', 'status', status} end
mt_wake(wake_list, 1)
redis.call('LPUSH', new_queue, new_message)
local ctx = {deadlines=deadlines, outbox=outbox, ttl=ttl_s, channel=channel, batch_prefix=batch_prefix}
transition(ctx, status_key, id, status, now, attempt, event, '0', fields)
mt_rollup_flush()
return {'outcome', 'moved', 'status', status}

-- move_delayed: moves a delayed task's entry to another priority's delayed zset with its due time, and records the
-- transition that re-enters its status (see meetingtasks.store.moves), if the record still reads what the caller saw.
-- The record keeps living until ttl_s after the due time (as DelayedSet.schedule set it).
-- KEYS[1]  the task's status hash
-- KEYS[2]  the service's delayed messages hash
-- KEYS[3]  the old priority's delayed zset
-- KEYS[4]  the new priority's delayed zset
-- KEYS[5]  the timeout deadlines zset
-- KEYS[6]  the callback outbox zset
-- ARGV[1]  the entry as it is in the delayed messages hash
-- ARGV[2]  the entry rewritten for the new priority
-- ARGV[3]  status: the one the caller saw, re-entered
-- ARGV[4]  time_s
-- ARGV[5]  attempt the caller saw
-- ARGV[6]  ttl_s: the record's lifetime after its due time
-- ARGV[7]  the status channel
-- ARGV[8]  the event JSON to publish
-- ARGV[9]  task id
-- ARGV[10] batch hash key prefix
-- ARGV[11...]  field, value, ... written with the transition
-- Returns {'outcome', 'moved' | 'gone' (no longer delayed there) | 'changed' (the record moved on), 'status', s}.
-- prelude: record, rollup, transition, move_guard
local status_key, messages, old_zset, new_zset, deadlines, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6]
local old_entry, new_entry = ARGV[1], ARGV[2]
local status, now, attempt, ttl_s, channel, event, id, batch_prefix = unpack(ARGV, 3, 10)
local fields = {unpack(ARGV, 11)}

local refused = mt_move_guard(status_key, status, attempt)
if refused then return refused end
local due_ms = redis.call('ZSCORE', old_zset, id)
if redis.call('HGET', messages, id) ~= old_entry or not due_ms then return {'outcome', 'gone', 'status', status} end
redis.call('ZREM', old_zset, id)
redis.call('ZADD', new_zset, due_ms, id)
redis.call('HSET', messages, id, new_entry)
local ttl = math.max(tonumber(ttl_s), math.ceil(tonumber(due_ms) / 1000 - tonumber(now)) + tonumber(ttl_s))
local ctx = {deadlines=deadlines, outbox=outbox, ttl=ttl, channel=channel, batch_prefix=batch_prefix}
transition(ctx, status_key, id, status, now, attempt, event, '0', fields)
mt_rollup_flush()
return {'outcome', 'moved', 'status', status}

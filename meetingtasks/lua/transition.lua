-- transition: records and publishes one status transition of one task (see prelude/transition.lua for the rules).
-- KEYS[1]  the task's status hash
-- KEYS[2]  the timeout deadlines zset
-- KEYS[3]  the callback outbox zset
-- ARGV[1]  status
-- ARGV[2]  time_s
-- ARGV[3]  attempt
-- ARGV[4]  ttl_s: the record's lifetime after this change
-- ARGV[5]  the status channel
-- ARGV[6]  the event JSON to publish
-- ARGV[7]  force: '1' passes the terminal guard (dead-letter replay), '0' does not
-- ARGV[8]  task id
-- ARGV[9]  batch hash key prefix
-- ARGV[10...]  field, value, ... written with the transition
-- Returns 1 if accepted, 0 if refused (the record is terminal). An accepted transition of a run is counted for
-- `top` (see meetingtasks.store.rollup).
-- prelude: record, rollup, transition
local status_key, deadlines, outbox = KEYS[1], KEYS[2], KEYS[3]
local status, now, attempt, ttl_s, channel, event, force, id, batch_prefix =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local fields = {unpack(ARGV, 10)}

local ctx = {deadlines=deadlines, outbox=outbox, ttl=ttl_s, channel=channel, batch_prefix=batch_prefix}
local accepted = transition(ctx, status_key, id, status, now, attempt, event, force, fields)
mt_rollup_flush()  -- counted for `top` and the charts
return accepted

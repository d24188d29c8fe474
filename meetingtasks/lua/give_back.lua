-- give_back: puts fetched messages that the worker will not run after all back at the head of their queues,
-- undoing what fetch recorded for them (unacked entry, delivery count; they were never STARTED), and wakes an idle
-- worker. Only this worker's own delivery goes back. If its lease ran out meanwhile, kombu's restore sweep put the
-- message back already (its unacked entry is gone), and another worker may have fetched it since, under the same
-- delivery tag: that worker's unacked entry must stay and the message must not be pushed a second time. The
-- delivery count (field 'deliveries' of the task's status record) tells the deliveries apart (every fetch
-- increments it; a transition that ends the run resets it), and for a message with no task id (so no count), the
-- entry's text (fetch stores the message as popped; a restore rewrites it).
-- KEYS[1]  the unacked hash
-- KEYS[2]  the unacked index zset
-- KEYS[3]  the service's wake list
-- ARGV[1]  status key prefix
-- ARGV[2...]  per message, in fetch order, five values: queue, message, delivery tag, task id or '', the delivery
--             count this worker's fetch returned
-- Returns how many messages went back.
-- prelude: wake
local unacked, unacked_index, wake_list = KEYS[1], KEYS[2], KEYS[3]
local status_prefix = ARGV[1]
local FIRST_MESSAGE, PER_MESSAGE = 2, 5

local n = 0
-- Last first: each goes back to the head of its queue, so the first fetched is again the first popped.
for i = #ARGV - PER_MESSAGE + 1, FIRST_MESSAGE, -PER_MESSAGE do
  local queue, message, tag, id, count = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local mine
  if id ~= '' then
    mine = redis.call('HGET', status_prefix .. id, 'deliveries') == count
  else
    local entry = redis.call('HGET', unacked, tag)
    mine = entry and string.sub(entry, 1, #message + 2) == '[' .. message .. ','
  end
  if mine and redis.call('HDEL', unacked, tag) == 1 then
    redis.call('ZREM', unacked_index, tag)
    if id ~= '' then redis.call('HINCRBY', status_prefix .. id, 'deliveries', -1) end
    redis.call('RPUSH', queue, message)
    n = n + 1
  end
end
if n > 0 then mt_wake(wake_list, 1) end
return n

-- claim_profile_run: claims one profiled run of a task type (see meetingtasks.worker.profiling): an atomic decrement of the
-- runs still requested, so that N requested runs profile N runs whatever the number of workers.
-- KEYS[1]  the profile-requests hash (task type -> runs still to profile)
-- ARGV[1]  task type
-- Returns {'claimed', 0|1, 'left', runs still requested after this claim}.
local requests = KEYS[1]
local task_type = ARGV[1]

local left = tonumber(redis.call('HGET', requests, task_type) or '0') or 0
if left <= 0 then
  redis.call('HDEL', requests, task_type)
  return {'claimed', 0, 'left', 0}
end
if left == 1 then
  redis.call('HDEL', requests, task_type)
else
  redis.call('HINCRBY', requests, task_type, -1)
end
return {'claimed', 1, 'left', left - 1}

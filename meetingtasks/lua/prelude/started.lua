-- mt_started: STARTED as a function that the worker's fetch embeds, to record the start atomically with the pop.
-- The same rule as transition() for a non-terminal status: refused (started = 0) once the task is terminal.
-- Returns started (1, or 0 when the task is terminal already), deliveries, cancelled (1/0). Counts the delivery
-- (field 'deliveries', the poison guard's count) in the same write, also for a terminal task (whose run is skipped).
-- Counts the start for `top` and the charts (the script calls mt_rollup_flush() before it returns). Needs: record, rollup.
local function mt_started(key, id, now, attempt, ttl, channel, task, service, priority, worker, wait)
  local cur = redis.call('HMGET', key, 'status', 'history', 'deliveries', 'cancel_requested_at')
  local deliveries = (tonumber(cur[3]) or 0) + 1
  local cancelled = cur[4] and 1 or 0
  if cur[1] and MT_TERMINAL[cur[1]] then
    redis.call('HSET', key, 'deliveries', deliveries)
    return 0, deliveries, cancelled
  end
  local event = {op=MT_EVENT_OP, id=id, status='STARTED', time=tonumber(now), attempt=attempt, type=task,
                 service=service, priority=priority}
  local write = {'status', 'STARTED', 'updated_at', now, 'attempt', attempt, 'type', task, 'service', service,
                 'priority', priority, 'worker', worker, 'deliveries', deliveries,
                 'history', (cur[2] or '') .. mt_history_line('STARTED', now, attempt)}
  if wait then
    event.wait_s = wait
    write[#write + 1] = 'wait_s'
    write[#write + 1] = tostring(wait)
  end
  redis.call('HSET', key, unpack(write))
  -- A record the dispatcher wrote has its lifetime already; one a foreign producer's task starts gets one.
  if not cur[1] then redis.call('EXPIRE', key, ttl) end
  redis.call('PUBLISH', channel, cjson.encode(event))
  mt_rollup(channel, now, task, 'STARTED', wait, service, priority)
  return 1, deliveries, cancelled
end

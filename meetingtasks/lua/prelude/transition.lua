-- transition(ctx, key, id, status, now, attempt, event, force, fields, pre): records one status transition;
-- shared by the one-task script (transition.lua) and the scripts that record transitions together with their own
-- work (the worker's fetch). Needs: record, rollup.
--
-- ctx, the same for every transition of one script call:
--   deadlines     the timeout deadlines zset
--   outbox        the callback outbox zset
--   ttl           the record's lifetime (s) after this change
--   channel       the status channel
--   batch_prefix  the batch hash key prefix
--   batches       optional: a table collecting batch counts; the caller then calls
--                 mt_count_batches(ctx.batches, ctx.batch_prefix, ctx.outbox) before it returns, so each batch is
--                 counted with one read and one write for all of its tasks (otherwise counted at once)
-- the transition (positional: the fetch records up to a batch of them per call, and a table per transition
-- would be work on the hottest path):
--   key           the status hash
--   id            the task id
--   status, now, attempt   as written to the record (now and attempt as the caller got them)
--   event         the published event JSON
--   force         '1' to pass the terminal guard (dead-letter replay only), else '0'
--   fields        {field, value, ...} written with the transition
--   pre           optional {history line, event JSON}: a transition that happened just before this one (a
--                 deferred STARTED), written and published with it
-- Returns 1 if accepted, 0 if refused (the record is terminal and force is not '1').
--
-- The first terminal transition of a task (guarded by the field 'finalized', which replay leaves in place) drops
-- its deadline, files its callbacks in the outbox and counts it in its batch, all in one atomic call: so callbacks
-- fire exactly once whoever ends the task (worker, dead-lettering, watchdog, cancel).
-- Every accepted transition of a run is counted for `top` and the charts (prelude/rollup.lua; its type, service and
-- priority from the record or the fields, its duration from the fields wait_s/run_s): the calling script calls mt_rollup_flush() before it returns.

-- Counts finalised tasks in their batches: acc maps a batch id to {count=, by={status=count}, now=}. A batch
-- whose hash expired (no total) is left alone; its on_complete is filed once, when done reaches total.
local function mt_count_batches(acc, bprefix, outbox)
  for batch, a in pairs(acc) do
    local bk = bprefix .. batch
    local read, statuses = {'total', 'done', 'on_complete'}, {}
    for status in pairs(a.by) do statuses[#statuses + 1] = status; read[#read + 1] = 'n:' .. status end
    local b = redis.call('HMGET', bk, unpack(read))
    if b[1] then
      local before = tonumber(b[2]) or 0
      local done = before + a.count
      local write = {'done', done}
      for i, status in ipairs(statuses) do
        write[#write + 1] = 'n:' .. status
        write[#write + 1] = (tonumber(b[3 + i]) or 0) + a.by[status]
      end
      redis.call('HSET', bk, unpack(write))
      local total = tonumber(b[1]) or 0
      if b[3] and before < total and done >= total then redis.call('ZADD', outbox, a.now, 'b:' .. batch) end
    end
  end
end
local function transition(ctx, key, id, status, now, attempt, event, force, fields, pre)
  -- One read for the guard, the history and what finalising needs; one write for all of it.
  local cur = redis.call('HMGET', key, 'status', 'history', 'finalized', 'on_success', 'on_failure', 'batch',
                        'deadline', 'deliveries', 'type', 'service', 'priority')
  if cur[1] and MT_TERMINAL[cur[1]] and force ~= '1' then return 0 end
  local finalize = MT_TERMINAL[status] and not cur[3]
  local callbacks, batch = cur[4] or cur[5], cur[6]
  local ty, service, priority, wait_s, run_s = cur[9], cur[10], cur[11], nil, nil
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == 'on_success' or name == 'on_failure' then callbacks = true
    elseif name == 'batch' then batch = fields[i + 1]
    elseif name == 'type' then ty = fields[i + 1]
    elseif name == 'service' then service = fields[i + 1]
    elseif name == 'priority' then priority = fields[i + 1]
    elseif name == 'wait_s' then wait_s = fields[i + 1]
    elseif name == 'run_s' then run_s = fields[i + 1] end
  end
  local write = {'status', status, 'updated_at', now, 'attempt', attempt,
                 'history', (cur[2] or '') .. (pre and pre[1] or '') .. mt_history_line(status, now, attempt)}
  if finalize then write[#write + 1] = 'finalized'; write[#write + 1] = now end
  -- The poison guard's delivery count starts again once a run has ended (retry, terminal, replay, cancel).
  if status ~= 'STARTED' and cur[8] and cur[8] ~= '0' then write[#write + 1] = 'deliveries'; write[#write + 1] = '0' end
  -- Every transition carries the task's type, service and priority (its event needs them); the record keeps them
  -- from the dispatch, and setting a hash field to the value it has still costs Redis a search of the hash.
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    if not ((name == 'type' and value == cur[9]) or (name == 'service' and value == cur[10])
            or (name == 'priority' and value == cur[11])) then
      write[#write + 1] = name
      write[#write + 1] = value
    end
  end
  redis.call('HSET', key, unpack(write))
  redis.call('EXPIRE', key, ctx.ttl)
  if pre then redis.call('PUBLISH', ctx.channel, pre[2]) end
  redis.call('PUBLISH', ctx.channel, event)
  if pre then mt_rollup(ctx.channel, now, ty, 'STARTED', wait_s, service, priority) end
  -- Each start is a run; another status counts when the task enters it (a priority move re-enters its status).
  if status == 'STARTED' then mt_rollup(ctx.channel, now, ty, status, wait_s, service, priority)
  elseif cur[1] ~= status then mt_rollup(ctx.channel, now, ty, status, run_s, service, priority) end
  if MT_TERMINAL[status] then
    -- Only a task dispatched with a timeout has a deadline entry, and its record says so (or is gone).
    if cur[7] or not cur[1] then redis.call('ZREM', ctx.deadlines, id) end
    if finalize then
      if callbacks then redis.call('ZADD', ctx.outbox, now, 't:' .. id) end
      if batch then
        local acc = ctx.batches or {}
        local a = acc[batch]
        if not a then a = {count=0, by={}}; acc[batch] = a end
        a.count = a.count + 1
        a.by[status] = (a.by[status] or 0) + 1
        a.now = now
        if not ctx.batches then mt_count_batches(acc, ctx.batch_prefix, ctx.outbox) end
      end
    end
  end
  return 1
end

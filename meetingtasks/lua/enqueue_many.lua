-- enqueue_many: the first transition (QUEUED) of new tasks and their pushes, in one call; the dispatcher's one
-- publish path for tasks due now. A new record has no history and cannot be terminal, so this is transition()
-- without its guards: one HSET (history included) and EXPIRE, or a COPY of the run's record; PUBLISH; an optional
-- deadline; LPUSH. The event is assembled here from identifier-safe parts (the dispatcher sends only ids and type
-- names matching its _SAFE pattern here). Wake tokens for the service go before its first message.
-- KEYS[1]  the timeout deadlines zset
-- KEYS[2]  the wake list key prefix (+ service)
-- ARGV[1]  status key prefix
-- ARGV[2]  now_s
-- ARGV[3]  status ttl_s
-- ARGV[4]  status channel
-- ARGV[5]  the QUEUED history line
-- ARGV[6]  c: how many common field/value strings follow
-- ARGV[7 ... 6 + c]  common field/value strings, written to every record
-- ARGV[7 + c ...]  groups of consecutive tasks of one type and queue: type, queue, n, kind, then
--          kind '0' (no own fields, no deadline): the n ids, then the n messages (pushed with one LPUSH);
--          kind '1', per task: id, deadline ms or '', k, the message, k field/value strings
-- Returns 1.
-- prelude: record, wake
local deadlines, wake_prefix = KEYS[1], KEYS[2]
local prefix, now, ttl, channel, history = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local common_n = tonumber(ARGV[6])
local FIRST_COMMON = 7

local woken = {}
local template = prefix .. '~enqueue'  -- no task id has a '~' (see _SAFE)
local event_head = MT_EVENT_START .. '"'
local i = FIRST_COMMON + common_n
while i <= #ARGV do
  local ty, q, n, kind = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local svc, prio = string.match(q, '^(.*)%.([^.]*)$')
  local record = {'status', 'QUEUED', 'updated_at', now, 'attempt', '1', 'history', history, 'type', ty,
                  'service', svc, 'priority', prio, 'queue', q, 'created_at', now, unpack(ARGV, FIRST_COMMON, FIRST_COMMON - 1 + common_n)}
  local event_tail = '"' .. mt_event_after_id('QUEUED', now, 1) .. ',"type":"' .. ty .. '","service":"' .. svc ..
                     '","priority":"' .. prio .. '"}'
  -- A service's tokens go before its first message: Redis serves waiting workers key by key in the order the
  -- keys became ready, and a worker must be woken by a token, not handed a message by BRPOP.
  local tokens = woken[svc] or 0
  if tokens < MT_WAKE_TOKENS_MAX then
    mt_wake(wake_prefix .. svc, math.min(n, MT_WAKE_TOKENS_MAX - tokens))
    woken[svc] = tokens + n
  end
  i = i + 4
  if kind == '0' then
    -- Every record of the run is the same: write it once and COPY it (with its TTL) to each task's key, half
    -- the work of an HSET of ten fields and an EXPIRE per task. The template key lives only inside this call.
    -- (A run of one task, a single dispatch, writes its record directly.)
    local copying = n > 1
    if copying then
      redis.call('HSET', template, unpack(record))
      redis.call('EXPIRE', template, ttl)
    end
    for j = i, i + n - 1 do
      local skey = prefix .. ARGV[j]
      if not copying or redis.call('COPY', template, skey) == 0 then  -- 0: the id has a record: add to it
        redis.call('HSET', skey, unpack(record))
        redis.call('EXPIRE', skey, ttl)
      end
      redis.call('PUBLISH', channel, event_head .. ARGV[j] .. event_tail)
    end
    if copying then redis.call('DEL', template) end
    redis.call('LPUSH', q, unpack(ARGV, i + n, i + 2 * n - 1))
    i = i + 2 * n
  else
    for _ = 1, n do
      local id, dl, k = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
      local skey = prefix .. id
      redis.call('HSET', skey, unpack(record))
      if k > 0 then redis.call('HSET', skey, unpack(ARGV, i + 4, i + 3 + k)) end
      redis.call('EXPIRE', skey, ttl)
      redis.call('PUBLISH', channel, event_head .. id .. event_tail)
      if dl ~= '' then redis.call('ZADD', deadlines, dl, id) end
      redis.call('LPUSH', q, ARGV[i + 3])
      i = i + 4 + k
    end
  end
end
return 1

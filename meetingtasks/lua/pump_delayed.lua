-- pump_delayed: moves due entries of one service's delayed set onto their queues. Critical entries move first;
-- idle workers get a wake token per moved task (the first before the first message). Per zset one batch:
-- ZRANGEBYSCORE returns the lowest scores, ranks 0..n-1, so one ZREMRANGEBYRANK drops it; messages are read,
-- pushed (in due order) and deleted with one call per 1,000 (Lua's unpack limit). A SCHEDULED status becomes
-- QUEUED, published with type/service/priority like every transition (the event is concatenated, cjson only for
-- strings that need escaping: it runs 100,000 times a second); no EXPIRE is needed, the record's TTL already runs
-- to status_ttl_s after the due time (see DelayedSet.schedule).
-- KEYS[1]  the delayed entries hash (task id -> "<queue>\n<message>")
-- KEYS[2...]  the due-time zsets, in priority order
-- ARGV[1]  now_ms
-- ARGV[2]  limit: most entries to move
-- ARGV[3]  status key prefix
-- ARGV[4]  status channel
-- ARGV[5]  now_s
-- ARGV[6]  the service's wake list
-- ARGV[7]  service
-- ARGV[8...]  the priority names, in zset order
-- Returns how many entries moved.
-- prelude: record, wake
local entries_hash = KEYS[1]
local now_ms, limit, status_prefix, channel, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local wake_list, service = ARGV[6], ARGV[7]
local FIRST_ZSET, FIRST_PRIORITY = 2, 8

local function each_chunk(items, fn)
  for i = 1, #items, 1000 do fn(unpack(items, i, math.min(i + 999, #items))) end
end
local function js(s)  -- a JSON string; cjson only when escaping is needed (ids and names rarely do)
  if not s then return 'null' end
  if string.find(s, '[%c"\\]') then return cjson.encode(s) end
  return '"' .. s .. '"'
end
local left = limit
local moved = 0
local woken = false
for k = FIRST_ZSET, #KEYS do
  if left <= 0 then break end
  local ids = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', now_ms, 'LIMIT', 0, left)
  local n = #ids
  if n > 0 then
    -- service and priority are this call's and this zset's: no need to read them per task
    local event_tail = ',"service":' .. js(service) .. ',"priority":' .. js(ARGV[FIRST_PRIORITY + k - FIRST_ZSET]) .. '}'
    left = left - n
    moved = moved + n
    local entries = {}
    each_chunk(ids, function(...)
      for _, e in ipairs(redis.call('HMGET', entries_hash, ...)) do entries[#entries + 1] = e end
    end)
    local queues = {}
    for i = 1, n do
      local e = entries[i]
      if e then
        local nl = string.find(e, '\n', 1, true)
        local q = string.sub(e, 1, nl - 1)
        queues[q] = queues[q] or {}
        table.insert(queues[q], string.sub(e, nl + 1))
        local id = ids[i]
        local sk = status_prefix .. id
        local st = redis.call('HMGET', sk, 'status', 'attempt', 'history', 'type')
        if st[1] == 'SCHEDULED' then
          local attempt = st[2] or '1'
          redis.call('HSET', sk, 'status', 'QUEUED', 'updated_at', now,
            'history', (st[3] or '') .. mt_history_line('QUEUED', now, attempt))
          redis.call('PUBLISH', channel, MT_EVENT_START .. js(id) .. mt_event_after_id('QUEUED', now, attempt) ..
            ',"type":' .. js(st[4]) .. event_tail)
        end
      end
    end
    for q, messages in pairs(queues) do
      -- The first token goes before the first message: Redis serves waiting workers in the order keys became
      -- ready, and an idle worker must be woken by the token, not handed a message by its BRPOP.
      if not woken then mt_wake(wake_list, 1); woken = true end
      each_chunk(messages, function(...) redis.call('LPUSH', q, ...) end)
    end
    each_chunk(ids, function(...) redis.call('HDEL', entries_hash, ...) end)
    redis.call('ZREMRANGEBYRANK', KEYS[k], 0, n - 1)
  end
end
if moved > 1 then mt_wake(wake_list, moved - 1) end
return moved

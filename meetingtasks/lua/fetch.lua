-- fetch: the worker's one call per batch. Applies the buffered outcomes (and deferred STARTEDs) and acks of this
-- worker, then pops up to max_messages from the service's queues in strict priority order and, atomically with the
-- pop, records each message as unacked (kombu's hash/index format), counts its delivery, reads its cancel flag and
-- records STARTED (see meetingtasks.worker.transport); the starts and outcomes are counted for `top` and the
-- charts (meetingtasks.store.rollup): written by this call when ARGV[13] says so or nothing was popped, else
-- handed back to the worker, which adds them up and has a later call write them (no Redis command per task for the
-- counts). Outcomes are applied before the acks, both before anything is fetched. The script never fails after a
-- pop, whatever a message holds.
-- KEYS[1]  the unacked hash
-- KEYS[2]  the unacked index zset
-- KEYS[3]  the service's wake list (absent: only apply the outcomes and acks)
-- KEYS[4...]  the service's queues, in priority order
-- ARGV[1]  max_messages to take
-- ARGV[2]  now_s
-- ARGV[3]  max_message_bytes
-- ARGV[4]  status key prefix
-- ARGV[5]  status ttl_s
-- ARGV[6]  status channel
-- ARGV[7]  worker name
-- ARGV[8]  deadlines zset key
-- ARGV[9]  callback outbox key
-- ARGV[10] batch hash key prefix
-- ARGV[11] start_now: how many of the messages are STARTED now
-- ARGV[12] n_acks
-- ARGV[13] write_counts: '1' writes the traffic counts of this call and the carried ones now; '0' hands this call's
--          counts back (when it popped something) for the worker to carry to a later call
-- ARGV[14] probe topic: '' for none; else a pub/sub topic to publish ARGV[15] on, handing back how many received it
--          (the worker's task events probe, see meetingtasks.worker.task_events)
-- ARGV[15] probe message
-- ARGV[16] n_counts: how many carried counts follow
-- ARGV[17 ... 16 + 4 * n_counts]  carried counts, each: slot index key, task type, field, n (see mt_rollup_take)
-- then n_acks delivery tags to ack
-- then buffered outcomes to the end (see meetingtasks.worker.outcomes), each: task id, status, time_s, attempt,
--          event JSON, n, then n field/value strings
-- Returns a flat list, five values per message (flat, not a table per message: this is the hottest script; the
-- worker's Channel reads it in steps of five): queue, message, deliveries, cancelled, started; then, when there is
-- a probe or (with write_counts '0') counts to hand back, one more element at the end: {receivers, slot, type,
-- field, n, ...}, receivers = -1 without a probe.
--   deliveries = -1: not a readable envelope (popped, not recorded: the worker dead-letters it); the reason
--                    comes in place of cancelled, and in place of started the tag it is leased under (see
--                    mt_refused_entry and unrecord), '' if the lease could not be written
--   started = 1: STARTED now; 0: the task is terminal already; -1: no task id (a foreign message);
--             -2: deferred, recorded unacked but not STARTED (the worker records STARTED when it runs it, see
--                 DEFERRED_START)
-- prelude: record, rollup, transition, started, refused
local unacked, unacked_index, wake_list = KEYS[1], KEYS[2], KEYS[3]
local max_messages, now, max_bytes = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local status_prefix, status_ttl, channel, worker = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local deadlines, outbox, batch_prefix = ARGV[8], ARGV[9], ARGV[10]
local nstart, nacks = tonumber(ARGV[11]), tonumber(ARGV[12])
-- Leases are scored by their start in whole seconds, rounded up (see meetingtasks.worker.loops.lease_score), made a
-- string once: a number argument of redis.call is formatted again for each use.
local lease_score = string.format('%.0f', math.ceil(tonumber(now)))  -- not %d: no cast to a C long
local write_counts, probe_topic, probe_message, ncounts = ARGV[13] == '1', ARGV[14], ARGV[15], tonumber(ARGV[16])
for i = 17, 16 + 4 * ncounts, 4 do mt_rollup_add(ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])) end
local FIRST_ACK = 17 + 4 * ncounts

local j = FIRST_ACK + nacks
-- The batch counts of the outcomes below are written once per batch (see mt_count_batches).
local ctx = {deadlines=deadlines, outbox=outbox, ttl=status_ttl, channel=channel, batch_prefix=batch_prefix,
             batches={}}
while j <= #ARGV do
  local id, nf = ARGV[j], tonumber(ARGV[j + 5])
  local fields, pre = {unpack(ARGV, j + 6, j + 5 + nf)}, nil
  local k = j + 6 + nf
  if ARGV[j + 1] == 'STARTED' and ARGV[k] == id and ARGV[k + 1] ~= 'STARTED' then
    -- A deferred start and the outcome of the same task (it ran between two fetches): one write for both.
    pre = {mt_history_line('STARTED', ARGV[j + 2], ARGV[j + 3]), ARGV[j + 4]}
    j, nf = k, tonumber(ARGV[k + 5])
    for i = j + 6, j + 5 + nf do fields[#fields + 1] = ARGV[i] end
  end
  transition(ctx, status_prefix .. id, id, ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4], '0', fields, pre)
  j = j + 6 + nf
end
mt_count_batches(ctx.batches, batch_prefix, outbox)
-- All the acks in one ZREM and one HDEL (in slices: unpack's stack is limited).
for i = FIRST_ACK, FIRST_ACK - 1 + nacks, 1000 do
  local last = math.min(i + 999, FIRST_ACK - 1 + nacks)
  redis.call('ZREM', unacked_index, unpack(ARGV, i, last))
  redis.call('HDEL', unacked, unpack(ARGV, i, last))
end
-- Redis 7 (whose scripts see redis.REDIS_VERSION_NUM) serves RPOP with a count from the list's tail; Redis 6.2
-- walks the list from its head to find the tail first: a fetch of 12 behind a 50,000-message backlog took ~215 us
-- there, against ~10 us as 12 single pops.
local POP_WITH_COUNT = redis.REDIS_VERSION_NUM ~= nil
local out = {}
local left = max_messages
local popped = 0
local null = cjson.null
-- True if v is present (not nil, not JSON null) and not a string.
local function nostr(v) return v ~= nil and v ~= null and type(v) ~= 'string' end
-- Why a decoded message cannot be recorded, or nil. Only the fields this script reads: the worker checks the
-- whole envelope (meetingtasks.core.message.check_envelope) and refuses (UNRECORD) what gets past this one.
local function refusal(env)
  if type(env) ~= 'table' then return 'not a message envelope' end
  local props = env.properties
  if type(props) ~= 'table' then return "envelope has no 'properties' object" end
  local tag = props.delivery_tag
  if type(tag) ~= 'string' or tag == '' then return 'properties.delivery_tag must be a non-empty string' end
  local info = props.delivery_info
  if info ~= nil and info ~= null then
    if type(info) ~= 'table' then return 'envelope properties.delivery_info is not an object' end
    if nostr(info.exchange) then return 'properties.delivery_info.exchange must be a string' end
    if nostr(info.routing_key) then return 'properties.delivery_info.routing_key must be a string' end
  end
  local headers = env.headers
  if headers == nil or headers == null then return nil end
  if type(headers) ~= 'table' then return "envelope 'headers' is not an object" end
  if nostr(headers.id) then return 'headers.id must be a string' end
  if nostr(headers.task) then return 'headers.task must be a string' end
  local r = headers.retries
  if r ~= nil and r ~= null and not (type(r) == 'number' and r >= 0 and r <= 2147483647 and r == math.floor(r)) then
    return 'headers.retries must be an integer from 0 to 2147483647'
  end
  local e = headers.mt_enqueued_at
  if e ~= nil and e ~= null and not (type(e) == 'number' and e == e and e > -math.huge and e < math.huge) then
    return 'headers.mt_enqueued_at must be a number'
  end
  return nil
end
-- The unacked entries and lease index members of this fetch, written with one HSET and one ZADD at the end.
local entries, leases = {}, {}
-- Keeps the books of a message that passed refusal() (its delivery count and cancel flag ride in its status
-- record, see meetingtasks.store.status); returns deliveries, cancelled, started.
local function record(q, m, env, service, priority)
  -- started = -1: no task id to keep books on (a foreign message); the worker does its own.
  local deliveries, cancelled, started = 0, 0, -1
  local headers = type(env.headers) == 'table' and env.headers or {}
  local id = headers.id
  if type(id) == 'string' then
    local skey = status_prefix .. id
    local attempt = (type(headers.retries) == 'number' and headers.retries or 0) + 1
    local task = type(headers.task) == 'string' and headers.task or ''
    local cur = nil
    if popped > nstart then
      cur = redis.call('HMGET', skey, 'status', 'deliveries', 'cancel_requested_at')
    end
    if cur and cur[1] then
      -- Deferred: STARTED is recorded when it runs (DEFERRED_START); the delivery counts now, before it runs.
      deliveries = (tonumber(cur[2]) or 0) + 1
      cancelled = cur[3] and 1 or 0
      redis.call('HSET', skey, 'deliveries', deliveries)
      started = MT_TERMINAL[cur[1]] and 0 or -2
    else
      -- Starts now; so does a deferred one without a status record (a foreign producer's task), which gets its
      -- record (and so its delivery count) here rather than a record holding nothing but the count.
      local wait = type(headers.mt_enqueued_at) == 'number' and headers.mt_enqueued_at or nil
      if wait then wait = math.max(0, tonumber(now) - wait) end
      started, deliveries, cancelled = mt_started(skey, id, now, attempt, status_ttl, channel, task,
                                                  service or '', priority or '', worker, wait)
    end
  end
  return deliveries, cancelled, started
end
-- The unacked entry of a recorded message (kombu's format), queued for the one HSET/ZADD at the end.
local function lease(q, m, env)
  local props = env.properties
  local tag = props.delivery_tag
  local info = type(props.delivery_info) == 'table' and props.delivery_info or {}
  local ex = type(info.exchange) == 'string' and info.exchange or ''
  local rk = type(info.routing_key) == 'string' and info.routing_key or q
  entries[#entries + 1] = tag
  entries[#entries + 1] = '[' .. m .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']'
  leases[#leases + 1] = lease_score
  leases[#leases + 1] = tag
end
for k = 4, #KEYS do
  if left <= 0 then break end
  local q = KEYS[k]
  local service, priority = string.match(q, '^(.*)%.(%a+)$')
  -- The messages in pop order: one RPOP with a count where it is served from the tail (see POP_WITH_COUNT), else
  -- one plain RPOP each (also for a single message, which Redis serves faster than a count of 1).
  local popped_here
  if POP_WITH_COUNT and left > 1 then
    popped_here = redis.call('RPOP', q, left) or {}
  else
    popped_here = {}
    while #popped_here < left do
      local m = redis.call('RPOP', q)
      if not m then break end
      popped_here[#popped_here + 1] = m
    end
  end
  for _, m in ipairs(popped_here) do
    left = left - 1
    popped = popped + 1
    -- Nothing may raise from here on: the message is popped, and an error would lose it and fail the worker's
    -- fetch. What cannot be recorded goes back to the worker with deliveries = -1 and the reason, to dead-letter.
    local why
    if #m > max_bytes then
      why = 'message exceeds max_message_bytes'
    else
      local ok, env = pcall(cjson.decode, m)
      if not ok then
        why = 'not JSON: ' .. tostring(env)
      else
        why = refusal(env)
        if not why then
          local done, deliveries, cancelled, started = pcall(record, q, m, env, service, priority)
          if done then
            done, why = pcall(lease, q, m, env)
            if done then
              why = nil
              table.insert(out, q); table.insert(out, m); table.insert(out, deliveries)
              table.insert(out, cancelled); table.insert(out, started)
            else
              why = 'cannot record: ' .. tostring(type(why) == 'table' and why.err or why)
            end
          else
            why = 'cannot record: ' .. tostring(type(deliveries) == 'table' and deliveries.err or deliveries)
          end
        end
      end
    end
    if why then
      -- Leased like any other message, under a tag of its own (it may have none; see mt_refused_entry).
      local tag = mt_refused_tag(unacked, worker, now, popped)
      entries[#entries + 1] = tag
      entries[#entries + 1] = mt_refused_entry(q, m, why)
      leases[#leases + 1] = lease_score
      leases[#leases + 1] = tag
      table.insert(out, q); table.insert(out, m); table.insert(out, -1); table.insert(out, why); table.insert(out, tag)
    end
  end
end
if #entries > 0 then
  local ok, err = pcall(function()
    redis.call('HSET', unacked, unpack(entries))
    redis.call('ZADD', unacked_index, unpack(leases))
  end)
  if not ok then
    -- The lease could not be written (the unacked keys hold something else): nothing is leased, so every message
    -- goes back to the worker to dead-letter (with no lease tag) rather than be lost.
    local why = 'cannot record: ' .. tostring(type(err) == 'table' and err.err or err)
    local tags = {}
    for i = 1, #entries, 2 do tags[#tags + 1] = entries[i] end
    pcall(redis.call, 'HDEL', unacked, unpack(tags))
    for i = 1, #out, 5 do
      if out[i + 2] ~= -1 then out[i + 2] = -1; out[i + 3] = why end
      out[i + 4] = ''
    end
  end
end
-- All four queues empty: every wake token of the service is stale (a producer pushes its token with its message,
-- atomically), and an idle worker would otherwise spend one empty fetch on each of them.
if popped == 0 and #KEYS >= 7 then redis.call('DEL', wake_list) end
-- The starts and outcomes of this call, counted for `top` and the charts: written now by an idle worker's call
-- (nothing popped) or when the worker says it is time; else handed back, to be written with the counts of the calls
-- that follow.
local tail = {}
if write_counts or popped == 0 then
  mt_rollup_flush()
else
  tail = mt_rollup_take()
end
if probe_topic ~= '' then
  table.insert(tail, 1, redis.call('PUBLISH', probe_topic, probe_message))
elseif #tail > 0 then
  table.insert(tail, 1, -1)
end
if #tail > 0 then out[#out + 1] = tail end
return out

-- mt_rollup(channel, now, type, status, seconds, service, priority): counts one transition of a run in both views of
-- the traffic record (meetingtasks.store.rollup): per type for `top` (seconds: the queue wait of a STARTED, the
-- run time of another status, or nil) and, given the service and priority, per service and priority for the
-- console's charts. mt_rollup_flush() writes what the script counted: call it before the script returns. The
-- worker's fetch instead hands its counts back (mt_rollup_take) and a later call writes those of many calls at
-- once (mt_rollup_add, then mt_rollup_flush): see PendingCounts. The constants are generated from that module.
local mt_racc = {}
local function mt_bucket(seconds)
  local micros = tonumber(seconds)
  if not micros then return nil end
  micros = micros * 1e6
  if micros < 1 then return 0 end
  return math.floor(math.log(micros) / math.log(2) * MT_ROLLUP_BUCKETS_PER_DOUBLING) + 1
end
-- Adds n to field `name` of type `ty` in slot index key `slot` (<prefix>top:<slot start s>).
local function mt_rollup_add(slot, ty, name, n)
  local types = mt_racc[slot]
  if not types then types = {}; mt_racc[slot] = types end
  local acc = types[ty]
  if not acc then acc = {}; types[ty] = acc end
  acc[name] = (acc[name] or 0) + n
end
-- What the script counted, unwritten, as a flat list {slot, type, name, n, ...} (for the caller to add up and hand
-- back to mt_rollup_add in a later call); forgets it.
local function mt_rollup_take()
  local flat = {}
  for slot, types in pairs(mt_racc) do
    for ty, acc in pairs(types) do
      for name, n in pairs(acc) do
        flat[#flat + 1] = slot; flat[#flat + 1] = ty; flat[#flat + 1] = name; flat[#flat + 1] = n
      end
    end
  end
  mt_racc = {}
  return flat
end
-- The index of the charts' wait bucket holding `seconds` (0-based, as Python's bisect_left over the bounds).
local function mt_wait_bucket(seconds)
  for i, bound in ipairs(MT_ROLLUP_WAIT_BOUNDS) do
    if seconds <= bound then return i - 1 end
  end
  return #MT_ROLLUP_WAIT_BOUNDS
end
-- Names built once per script call and reused: a fetch counts up to a batch of transitions, most of them in the same
-- second, of the same few statuses, buckets and series, and building a name (numbers formatted, strings joined and
-- interned) costs more than finding it again (measured with python -m bench.fetch_replay).
local mt_rkeys = {}    -- channel -> whole second -> {top slot key, chart minute key}
local mt_rfields = {}  -- status -> run-time bucket (or '-') -> field name in a type's hash
local mt_rseries = {}  -- service -> priority -> series -> field name in a minute's hash
local mt_rwaits = {}   -- service -> wait bucket index -> field name in a minute's hash
local function mt_memo(t, k)
  local v = t[k]
  if not v then v = {}; t[k] = v end
  return v
end
local function mt_rollup(channel, now, ty, status, seconds, service, priority)
  if not MT_ROLLUP_COUNTED[status] then return end
  -- The keys derive from the status channel (<prefix>status -> <prefix>top:<slot>, <prefix>rollup:<minute>): the
  -- names of Keys.top_slot and Keys.rollup. floor(floor(t) / n) = floor(t / n) for a whole n.
  local second = math.floor(tonumber(now))
  local at = mt_memo(mt_rkeys, channel)
  local keys = at[second]
  if not keys then
    local prefix = string.sub(channel, 1, -7)
    keys = {prefix .. 'top:' .. math.floor(second / MT_ROLLUP_SLOT_S) * MT_ROLLUP_SLOT_S,
            prefix .. 'rollup:' .. math.floor(second / 60)}
    at[second] = keys
  end
  if ty and ty ~= '' then
    local bucket = mt_bucket(seconds) or '-'
    local names = mt_memo(mt_rfields, status)
    local name = names[bucket]
    if not name then name = status .. '|' .. bucket; names[bucket] = name end
    mt_rollup_add(keys[1], ty, name, 1)
  end
  local series = MT_ROLLUP_CHART_SERIES[status]
  if series and service and service ~= '' and priority and priority ~= '' then
    -- A minute of the charts: counted under the type '' (a hash of its own, no index).
    local names = mt_memo(mt_memo(mt_rseries, service), priority)
    local name = names[series]
    if not name then name = service .. '|' .. priority .. '|' .. series; names[series] = name end
    mt_rollup_add(keys[2], '', name, 1)
    local wait = status == 'STARTED' and tonumber(seconds)
    if wait then
      local index = mt_wait_bucket(math.max(0, wait))
      local waits = mt_memo(mt_rwaits, service)
      name = waits[index]
      if not name then name = service .. '|wait|' .. index; waits[index] = name end
      mt_rollup_add(keys[2], '', name, 1)
    end
  end
end
local function mt_rollup_flush()
  for slot, types in pairs(mt_racc) do
    for ty, acc in pairs(types) do
      if ty == '' then
        -- A minute of the charts: its lifetime set with every write (one EXPIRE per key and call).
        for name, n in pairs(acc) do redis.call('HINCRBY', slot, name, n) end
        redis.call('EXPIRE', slot, MT_ROLLUP_KEEP_S)
      else
        local key = slot .. ':' .. ty
        -- The type's hash is written in the call that adds it to the index, and only while its slot is recent:
        -- both get their lifetime then, the index's renewed to outlive the type's hash.
        local new = redis.call('HSETNX', slot, ty, 1) == 1
        for name, n in pairs(acc) do redis.call('HINCRBY', key, name, n) end
        if new then
          redis.call('EXPIRE', key, MT_ROLLUP_RETENTION_S)
          redis.call('EXPIRE', slot, MT_ROLLUP_RETENTION_S)
        end
      end
    end
  end
  mt_racc = {}
end

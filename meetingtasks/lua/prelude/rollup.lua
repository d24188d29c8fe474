-- mt_rollup(channel, now, type, status, seconds): counts one transition of a run for `top` (seconds: the queue wait
-- of a STARTED, the run time of another status, or nil); mt_rollup_flush() writes what the script counted: call it
-- before the script returns. The worker's fetch instead hands its counts back (mt_rollup_take) and writes those of
-- many calls at once (mt_rollup_add, then mt_rollup_flush): see meetingtasks.metrics.rollups.PendingCounts.
-- The constants come generated from meetingtasks.metrics.rollups, which reads the counts.
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
local function mt_rollup(channel, now, ty, status, seconds)
  if not ty or ty == '' or not MT_ROLLUP_COUNTED[status] then return end
  -- The keys derive from the status channel (<prefix>status -> <prefix>top:<slot>): Keys.top_slot's names.
  local slot = string.sub(channel, 1, -7) .. 'top:' .. math.floor(tonumber(now) / MT_ROLLUP_SLOT_S) * MT_ROLLUP_SLOT_S
  mt_rollup_add(slot, ty, status .. '|' .. (mt_bucket(seconds) or '-'), 1)
end
local function mt_rollup_flush()
  for slot, types in pairs(mt_racc) do
    for ty, acc in pairs(types) do
      local key = slot .. ':' .. ty
      -- The type's hash is written in the call that adds it to the index, and only while its slot is recent: both
      -- get their lifetime then, the index's renewed to outlive the type's hash.
      local new = redis.call('HSETNX', slot, ty, 1) == 1
      for name, n in pairs(acc) do redis.call('HINCRBY', key, name, n) end
      if new then
        redis.call('EXPIRE', key, MT_ROLLUP_RETENTION_S)
        redis.call('EXPIRE', slot, MT_ROLLUP_RETENTION_S)
      end
    end
  end
  mt_racc = {}
end

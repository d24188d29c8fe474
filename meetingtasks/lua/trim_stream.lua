-- trim_stream: trims one event stream below the oldest entry some consumer group still needs, atomically (a group
-- cannot advance, nor a new one appear, between reading the groups and trimming).
-- KEYS[1]  the stream
-- ARGV[1]  groupless_retention_ms: how long a stream with no group keeps its entries (Redis clock)
-- ARGV[2]  replay_retention_ms: acknowledged entries younger than this stay, for `events replay`
-- ARGV[3]  replay_cap: at most this many entries are kept for replay (unacknowledged ones are never removed)
-- Returns {'trimmed', n, 'length', n, 'groups', n, 'min_id', oldest id kept ('' when there is no stream)}.
local stream = KEYS[1]
local groupless_retention_ms = tonumber(ARGV[1])
local replay_retention_ms = tonumber(ARGV[2])
local replay_cap = tonumber(ARGV[3])

if redis.call('EXISTS', stream) == 0 then
  return {'trimmed', 0, 'length', 0, 'groups', 0, 'min_id', ''}
end

-- Ids are "<ms>-<seq>", both decimal strings of up to 20 digits: compare by length, then as text.
local function parts(id)
  return string.match(id, '^(%d+)-(%d+)$')
end
local function less_digits(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function older(a, b)
  local a_ms, a_seq = parts(a)
  local b_ms, b_seq = parts(b)
  if a_ms ~= b_ms then return less_digits(a_ms, b_ms) end
  return less_digits(a_seq, b_seq)
end
-- The id right after `id`. A sequence too long for a Lua number keeps `id` itself (one acknowledged
-- entry kept too many, never one unacknowledged too few).
local function after(id)
  local ms, seq = parts(id)
  if #seq > 15 then return id end
  return ms .. '-' .. string.format('%d', tonumber(seq) + 1)
end

local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

local min_id = nil
local groups = redis.call('XINFO', 'GROUPS', stream)
for _, fields in ipairs(groups) do
  local group = {}
  for i = 1, #fields, 2 do group[fields[i]] = fields[i + 1] end
  local needed
  if tonumber(group['pending']) > 0 then
    needed = redis.call('XPENDING', stream, group['name'])[2]
  else
    needed = after(group['last-delivered-id'])
  end
  if min_id == nil or older(needed, min_id) then min_id = needed end
end
local needed = min_id  -- nil when no group reads the stream
if needed == nil then
  min_id = string.format('%d', math.max(0, now_ms() - groupless_retention_ms)) .. '-0'
elseif replay_retention_ms > 0 then
  -- Acknowledged entries stay replay_retention_ms, for `events replay`.
  local floor = string.format('%d', math.max(0, now_ms() - replay_retention_ms)) .. '-0'
  if older(floor, min_id) then min_id = floor end
end
local trimmed = redis.call('XTRIM', stream, 'MINID', min_id)

-- Only the newest replay_cap entries are kept for replay: past it, the oldest acknowledged ones go
-- (never one a group still needs).
local excess = redis.call('XLEN', stream) - replay_cap
if needed ~= nil and excess > 0 and older(min_id, needed) then
  local oldest = redis.call('XRANGE', stream, '-', needed, 'COUNT', excess)
  if #oldest > 0 then
    local past_cap = after(oldest[#oldest][1])
    if older(needed, past_cap) then past_cap = needed end
    min_id = past_cap
    trimmed = trimmed + redis.call('XTRIM', stream, 'MINID', min_id)
  end
end
return {'trimmed', trimmed, 'length', redis.call('XLEN', stream), 'groups', #groups, 'min_id', min_id}

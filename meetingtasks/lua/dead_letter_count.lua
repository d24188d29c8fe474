-- dead_letter_count: how many of a service's dead letters match a filter. Without needles it is one ZCOUNT; with
-- them it reads the letters in the score range in chunks of 1000, at most read_at_most of them.
-- KEYS[1]  the service's dead-letter hash (letter id -> record JSON)
-- KEYS[2]  the service's dead-letter index zset (score: last failure, ms)
-- ARGV[1]  max score (ms, inclusive; '+inf' for none)
-- ARGV[2]  min score (ms, inclusive; '-inf' for none)
-- ARGV[3]  read_at_most: most letters to read (0: no limit)
-- ARGV[4...]  needles (see prelude/letter_filter.lua), '' for none
-- Returns {matching, read, complete (1, or 0 when it stopped at read_at_most)}.
-- prelude: letter_filter
local hash, index = KEYS[1], KEYS[2]
local max_score, min_score, budget = ARGV[1], ARGV[2], tonumber(ARGV[3])
local FIRST_NEEDLE = 4

local needles = mt_needles(ARGV, FIRST_NEEDLE)
if #needles == 0 then return {redis.call('ZCOUNT', index, min_score, max_score), 0, 1} end
local rank = redis.call('ZCOUNT', index, '(' .. max_score, '+inf')
local last = redis.call('ZCOUNT', index, min_score, '+inf') - 1
local n, read = 0, 0
while rank <= last do
  if budget > 0 and read >= budget then return {n, read, 0} end
  local stop = math.min(rank + 999, last)
  local ids = redis.call('ZREVRANGE', index, rank, stop)
  if #ids == 0 then break end
  rank = stop + 1
  read = read + #ids
  for _, record in ipairs(redis.call('HMGET', hash, unpack(ids))) do
    if record and mt_holds_all(record, needles) then n = n + 1 end
  end
end
return {n, read, 1}

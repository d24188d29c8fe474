-- dead_letter_page: one page of a service's dead letters, newest first, matching a filter. Walks the index by rank
-- in chunks of 500 from the max score down (ZCOUNT finds the first rank: O(log N)), so a page costs
-- O(log N + what it reads), and it reads at most read_at_most letters.
-- KEYS[1]  the service's dead-letter hash (letter id -> record JSON)
-- KEYS[2]  the service's dead-letter index zset (score: last failure, ms)
-- ARGV[1]  max score (ms, inclusive; '+inf' for none)
-- ARGV[2]  cursor id ('' for none: letters at the max score with an id >= it were shown)
-- ARGV[3]  min score (ms; '-inf' for none)
-- ARGV[4]  limit: most letters on the page
-- ARGV[5]  read_at_most: most letters to read
-- ARGV[6...]  needles (see prelude/letter_filter.lua), '' for none
-- Returns {"<score> <id>" of the last letter read when it stopped at read_at_most, else '', then
-- "<score> <id>", record, ... per letter on the page}.
-- prelude: letter_filter
local hash, index = KEYS[1], KEYS[2]
local max_score, cursor_id, min_score = ARGV[1], ARGV[2], tonumber(ARGV[3])
local limit, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local FIRST_NEEDLE = 6

local needles = mt_needles(ARGV, FIRST_NEEDLE)
local top = tonumber(max_score)
local rank = redis.call('ZCOUNT', index, '(' .. max_score, '+inf')
local out = {''}
local finished = false
local read = 0
while #out < 2 * limit + 1 and not finished do
  if read >= budget then
    local last = redis.call('ZREVRANGE', index, rank - 1, rank - 1, 'WITHSCORES')
    if #last > 0 then out[1] = last[2] .. ' ' .. last[1] end
    break
  end
  local chunk = redis.call('ZREVRANGE', index, rank, rank + 499, 'WITHSCORES')
  if #chunk == 0 then break end
  rank = rank + #chunk / 2
  read = read + #chunk / 2
  local ids, scores = {}, {}
  for i = 1, #chunk, 2 do
    local id, score = chunk[i], tonumber(chunk[i + 1])
    if score < min_score then finished = true; break end
    if not (cursor_id ~= '' and score == top and id >= cursor_id) then
      ids[#ids + 1] = id
      scores[#scores + 1] = chunk[i + 1]
    end
  end
  if #ids > 0 then
    local records = redis.call('HMGET', hash, unpack(ids))
    for i = 1, #ids do
      local record = records[i]
      if record and #out < 2 * limit + 1 and mt_holds_all(record, needles) then
        out[#out + 1] = scores[i] .. ' ' .. ids[i]
        out[#out + 1] = record
      end
    end
  end
end
return out

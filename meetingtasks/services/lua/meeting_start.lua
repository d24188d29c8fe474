-- meeting_start: a scheduled meeting goes live, with its automatic end in the live zset, once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the meeting hash (Keys.meeting)
-- KEYS[3]  the live meetings zset (Keys.meetings_live: meeting id scored by its automatic end)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  time_s
-- ARGV[4]  the meeting id
-- Returns JSON {started = true, ends_at = epoch s}, {state = the meeting's state} when it is not scheduled, or
-- {refused = 'unknown'} for no such meeting.
-- prelude: once
local meeting_key, live = KEYS[2], KEYS[3]
local now, meeting_id = ARGV[3], ARGV[4]

return mt_once(function()
  local state = redis.call('HGET', meeting_key, 'state')
  if not state then return cjson.encode({refused = 'unknown'}) end
  if state ~= 'scheduled' then return cjson.encode({state = state}) end
  local ends = tonumber(now) + tonumber(redis.call('HGET', meeting_key, 'max_duration_s'))
  redis.call('HSET', meeting_key, 'state', 'live', 'started_at', now, 'ends_at', string.format('%.3f', ends))
  redis.call('ZADD', live, ends, meeting_id)
  return cjson.encode({started = true, ends_at = ends})
end)

-- meeting_leave: a user leaves a meeting that has not ended, once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the meeting hash (Keys.meeting)
-- KEYS[3]  its participants hash (Keys.meeting_participants)
-- KEYS[4]  its left hash (Keys.meeting_left: user id -> entry JSON)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the user id
-- ARGV[4]  the leaver's entry JSON
-- Returns JSON {left = true, count = participants left}, or {refused = 'unknown' | 'ended' | 'not_in'}.
-- prelude: once
local meeting_key, participants_key, left_key = KEYS[2], KEYS[3], KEYS[4]
local user_id, entry = ARGV[3], ARGV[4]

return mt_once(function()
  local state = redis.call('HGET', meeting_key, 'state')
  if not state then return cjson.encode({refused = 'unknown'}) end
  if state == 'ended' then return cjson.encode({refused = 'ended'}) end
  if redis.call('HDEL', participants_key, user_id) == 0 then return cjson.encode({refused = 'not_in'}) end
  redis.call('HSET', left_key, user_id, entry)
  return cjson.encode({left = true, count = redis.call('HLEN', participants_key)})
end)

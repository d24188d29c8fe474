-- meeting_join: a user joins a live meeting that has room, once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the meeting hash (Keys.meeting)
-- KEYS[3]  its participants hash (Keys.meeting_participants: user id -> entry JSON)
-- KEYS[4]  its left hash (Keys.meeting_left)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the user id
-- ARGV[4]  the participant's entry JSON
-- ARGV[5]  the most participants a meeting may have
-- Returns JSON {joined = true, count = participants}, {already = true, count} when the user is in it, or
-- {refused = 'unknown' | 'full' | the meeting's state when it is not live}.
-- prelude: once
local meeting_key, participants_key, left_key = KEYS[2], KEYS[3], KEYS[4]
local user_id, entry, max_participants = ARGV[3], ARGV[4], tonumber(ARGV[5])

return mt_once(function()
  local state = redis.call('HGET', meeting_key, 'state')
  if not state then return cjson.encode({refused = 'unknown'}) end
  if state ~= 'live' then return cjson.encode({refused = state}) end
  if redis.call('HEXISTS', participants_key, user_id) == 1 then
    return cjson.encode({already = true, count = redis.call('HLEN', participants_key)})
  end
  if redis.call('HLEN', participants_key) >= max_participants then return cjson.encode({refused = 'full'}) end
  redis.call('HSET', participants_key, user_id, entry)
  redis.call('HDEL', left_key, user_id)
  return cjson.encode({joined = true, count = redis.call('HLEN', participants_key)})
end)

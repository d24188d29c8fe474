-- media_recording_start: a meeting's recording starts, if none is active, once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the meeting's media hash (Keys.meeting_media: field 'recording' names the active one)
-- KEYS[3]  the recording hash (Keys.recording)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the recording id
-- ARGV[4]  the meeting id
-- ARGV[5]  time_s
-- Returns JSON {started = true}, {busy = the active recording's id}, or {refused = 'exists'} when a recording
-- with this id exists.
-- prelude: once
local media_key, recording_key = KEYS[2], KEYS[3]
local recording_id, meeting_id, now = ARGV[3], ARGV[4], ARGV[5]

return mt_once(function()
  local active = redis.call('HGET', media_key, 'recording')
  if active then return cjson.encode({busy = active}) end
  if redis.call('EXISTS', recording_key) == 1 then return cjson.encode({refused = 'exists'}) end
  redis.call('HSET', recording_key, 'meeting_id', meeting_id, 'state', 'recording', 'started_at', now)
  redis.call('HSET', media_key, 'recording', recording_id)
  return cjson.encode({started = true})
end)

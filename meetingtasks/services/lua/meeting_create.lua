-- meeting_create: a new meeting hash, once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the meeting hash (Keys.meeting)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3...]  the meeting's fields, as field, value, ...
-- Returns JSON {created = true}, or {taken = true} when the meeting exists.
-- prelude: once
local meeting_key = KEYS[2]
local FIRST_FIELD = 3

return mt_once(function()
  if redis.call('EXISTS', meeting_key) == 1 then return cjson.encode({taken = true}) end
  redis.call('HSET', meeting_key, unpack(ARGV, FIRST_FIELD))
  return cjson.encode({created = true})
end)

-- meeting_store_ai: keeps an AI result on a meeting, as long as the meeting is kept, once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the meeting hash (Keys.meeting)
-- KEYS[3]  its AI results hash (Keys.meeting_ai: kind -> result JSON)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the result's kind
-- ARGV[4]  the result JSON
-- Returns JSON {stored = true}, or {refused = 'unknown'} for no such meeting.
-- prelude: once
local meeting_key, ai_key = KEYS[2], KEYS[3]
local kind, result = ARGV[3], ARGV[4]

return mt_once(function()
  if redis.call('EXISTS', meeting_key) == 0 then return cjson.encode({refused = 'unknown'}) end
  redis.call('HSET', ai_key, kind, result)
  local ttl = redis.call('TTL', meeting_key)
  if ttl > 0 then redis.call('EXPIRE', ai_key, ttl) end
  return cjson.encode({stored = true})
end)

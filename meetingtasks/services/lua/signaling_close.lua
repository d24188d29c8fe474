-- signaling_close: a party closes a session, once per task; its keys expire after the retention.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the session hash (Keys.signal)
-- KEYS[3]  its ICE candidates hash (Keys.signal_ice)
-- KEYS[4]  the open sessions zset (Keys.signals_alive)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the session id
-- ARGV[4]  the user id
-- ARGV[5]  the reason
-- ARGV[6]  time_s
-- ARGV[7]  retention_s of the closed session's keys
-- Returns JSON {closed = true, meeting_id, user_id (the session's)}, {already = true} when it was closed, or
-- {refused = 'unknown' | 'not_party'}.
-- prelude: once, session
local session_key, ice_key, alive = KEYS[2], KEYS[3], KEYS[4]
local session_id, user_id, reason, now, retention_s = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]

return mt_once(function()
  local state = redis.call('HGET', session_key, 'state')
  if not state then return cjson.encode({refused = 'unknown'}) end
  if state == 'closed' then return cjson.encode({already = true}) end
  if not mt_party(session_key, user_id) then return cjson.encode({refused = 'not_party'}) end
  redis.call('HSET', session_key, 'state', 'closed', 'closed_at', now, 'reason', reason)
  redis.call('ZREM', alive, session_id)
  redis.call('EXPIRE', session_key, retention_s)
  redis.call('EXPIRE', ice_key, retention_s)
  return cjson.encode({closed = true, meeting_id = redis.call('HGET', session_key, 'meeting_id'),
                       user_id = redis.call('HGET', session_key, 'user_id')})
end)

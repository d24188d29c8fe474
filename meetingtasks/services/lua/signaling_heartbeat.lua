-- signaling_heartbeat: a party's sign of life on an open session, once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the session hash (Keys.signal)
-- KEYS[3]  the open sessions zset (Keys.signals_alive)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the session id
-- ARGV[4]  the user id
-- ARGV[5]  time_s
-- Returns JSON {alive = true, state}, or {refused = 'unknown' | 'closed' | 'not_party'}.
-- prelude: once, session
local session_key, alive = KEYS[2], KEYS[3]
local session_id, user_id, now = ARGV[3], ARGV[4], ARGV[5]

return mt_once(function()
  local state, refused = mt_party_of_open(session_key, user_id)
  if not state then return cjson.encode({refused = refused}) end
  mt_seen(session_key, alive, session_id, now)
  return cjson.encode({alive = true, state = state})
end)

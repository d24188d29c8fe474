-- signaling_ice: a party's ICE candidate on a session (each candidate once), once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the session hash (Keys.signal)
-- KEYS[3]  its ICE candidates hash (Keys.signal_ice: candidate -> entry JSON)
-- KEYS[4]  the open sessions zset (Keys.signals_alive)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the session id
-- ARGV[4]  the sending user
-- ARGV[5]  the candidate
-- ARGV[6]  its entry JSON
-- ARGV[7]  time_s
-- Returns JSON {added = true, meeting_id ('' for none)}, {duplicate = true} for a candidate the session has, or
-- {refused = 'unknown' | 'closed' | 'not_party'}.
-- prelude: once, session
local session_key, ice_key, alive = KEYS[2], KEYS[3], KEYS[4]
local session_id, from_user, candidate, entry, now = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]

return mt_once(function()
  local _, refused = mt_party_of_open(session_key, from_user)
  if refused then return cjson.encode({refused = refused}) end
  mt_seen(session_key, alive, session_id, now)
  if redis.call('HSETNX', ice_key, candidate, entry) == 0 then return cjson.encode({duplicate = true}) end
  return cjson.encode({added = true, meeting_id = redis.call('HGET', session_key, 'meeting_id') or ''})
end)

-- signaling_open: opens a signaling session (a closed one afresh, with no old candidates), once per task; an open
-- one is only kept alive.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the session hash (Keys.signal)
-- KEYS[3]  its ICE candidates hash (Keys.signal_ice)
-- KEYS[4]  the open sessions zset (Keys.signals_alive: session id scored by its last sign of life)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the session id
-- ARGV[4]  the user id
-- ARGV[5]  the meeting id, or ''
-- ARGV[6]  time_s
-- Returns JSON {opened = true}, or {already = true, state} when the session is not closed.
-- prelude: once, session
local session_key, ice_key, alive = KEYS[2], KEYS[3], KEYS[4]
local session_id, user_id, meeting_id, now = ARGV[3], ARGV[4], ARGV[5], ARGV[6]

return mt_once(function()
  local state = redis.call('HGET', session_key, 'state')
  if state and state ~= 'closed' then
    mt_seen(session_key, alive, session_id, now)
    return cjson.encode({already = true, state = state})
  end
  redis.call('DEL', session_key, ice_key)
  redis.call('HSET', session_key, 'user_id', user_id, 'meeting_id', meeting_id, 'state', 'open', 'opened_at', now,
             'last_seen', now)
  redis.call('ZADD', alive, now, session_id)
  return cjson.encode({opened = true})
end)

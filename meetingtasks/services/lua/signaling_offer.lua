-- signaling_offer: a WebRTC offer on a session, once per task. A session not opened yet is opened by its offer
-- (the offerer its user); a connected one may renegotiate (a new offer drops the answer).
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the session hash (Keys.signal)
-- KEYS[3]  the open sessions zset (Keys.signals_alive)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the session id
-- ARGV[4]  the offering user
-- ARGV[5]  the user offered to (the session's peer from now on)
-- ARGV[6]  the SDP
-- ARGV[7]  the meeting id, or ''
-- ARGV[8]  time_s
-- Returns JSON {offered = true, meeting_id ('' for none)}, or {refused = 'closed' | 'not_party'}.
-- prelude: once, session
local session_key, alive = KEYS[2], KEYS[3]
local session_id, from_user, to_user, sdp, meeting_id, now = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]

return mt_once(function()
  local state = redis.call('HGET', session_key, 'state')
  if state == 'closed' then return cjson.encode({refused = 'closed'}) end
  if state and not mt_party(session_key, from_user) then return cjson.encode({refused = 'not_party'}) end
  if not state then
    redis.call('HSET', session_key, 'user_id', from_user, 'opened_at', now)
  end
  if meeting_id ~= '' and (redis.call('HGET', session_key, 'meeting_id') or '') == '' then
    redis.call('HSET', session_key, 'meeting_id', meeting_id)
  end
  redis.call('HSET', session_key, 'state', 'offered', 'offer', sdp, 'offer_from', from_user, 'offer_to', to_user,
             'peer', to_user, 'last_seen', now)
  redis.call('HDEL', session_key, 'answer', 'answer_from')
  redis.call('ZADD', alive, now, session_id)
  return cjson.encode({offered = true, meeting_id = redis.call('HGET', session_key, 'meeting_id') or ''})
end)

-- signaling_answer: the answer to a session's pending offer, from the user it was offered to, once per task; the
-- session is then connected.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the session hash (Keys.signal)
-- KEYS[3]  the open sessions zset (Keys.signals_alive)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the session id
-- ARGV[4]  the answering user
-- ARGV[5]  the user answered to (must be the offerer)
-- ARGV[6]  the SDP
-- ARGV[7]  time_s
-- Returns JSON {connected = true, meeting_id ('' for none), offer_from}, {refused = 'no_offer', state},
-- {refused = 'mismatch', offer_from}, or {refused = 'unknown' | 'closed'}.
-- prelude: once
local session_key, alive = KEYS[2], KEYS[3]
local session_id, from_user, to_user, sdp, now = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]

return mt_once(function()
  local state = redis.call('HGET', session_key, 'state')
  if not state then return cjson.encode({refused = 'unknown'}) end
  if state == 'closed' then return cjson.encode({refused = 'closed'}) end
  if state ~= 'offered' then return cjson.encode({refused = 'no_offer', state = state}) end
  local offer_from = redis.call('HGET', session_key, 'offer_from')
  if offer_from ~= to_user or redis.call('HGET', session_key, 'offer_to') ~= from_user then
    return cjson.encode({refused = 'mismatch', offer_from = offer_from})
  end
  redis.call('HSET', session_key, 'state', 'connected', 'answer', sdp, 'answer_from', from_user, 'last_seen', now)
  redis.call('ZADD', alive, now, session_id)
  return cjson.encode({connected = true, meeting_id = redis.call('HGET', session_key, 'meeting_id') or '',
                       offer_from = offer_from})
end)

-- signaling_close_silent: the beat sweep: closes up to a limit of sessions silent since a time, once per task;
-- their keys expire after the retention.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the open sessions zset (Keys.signals_alive)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  silent since (epoch s): sessions last seen up to it close
-- ARGV[4]  the most sessions to close
-- ARGV[5]  the session key prefix (Keys.signal(''))
-- ARGV[6]  the ICE key suffix (what Keys.signal_ice appends to Keys.signal)
-- ARGV[7]  time_s
-- ARGV[8]  retention_s of the closed sessions' keys
-- Returns JSON {closed = [{session_id, meeting_id, user_id} closed]}.
-- prelude: once
local alive = KEYS[2]
local silent_since, limit, session_prefix, ice_suffix, now, retention_s = ARGV[3], tonumber(ARGV[4]), ARGV[5],
  ARGV[6], ARGV[7], ARGV[8]

return mt_once(function()
  local ids = redis.call('ZRANGEBYSCORE', alive, '-inf', silent_since, 'LIMIT', 0, limit)
  local closed = {}
  for _, id in ipairs(ids) do
    local session_key = session_prefix .. id
    redis.call('ZREM', alive, id)
    local state = redis.call('HGET', session_key, 'state')
    if state and state ~= 'closed' then
      redis.call('HSET', session_key, 'state', 'closed', 'closed_at', now, 'reason', 'timeout')
      redis.call('EXPIRE', session_key, retention_s)
      redis.call('EXPIRE', session_key .. ice_suffix, retention_s)
      closed[#closed + 1] = {session_id = id, meeting_id = redis.call('HGET', session_key, 'meeting_id') or '',
                             user_id = redis.call('HGET', session_key, 'user_id') or ''}
    end
  end
  return cjson.encode({closed = closed})
end)

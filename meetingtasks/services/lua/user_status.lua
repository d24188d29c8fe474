-- user_status: a user's presence, once per task. busy + meeting: in that meeting. online + meeting: back from that
-- meeting (only if busy in it). offline: out of any meeting; the outcome names the meeting left so that the
-- meeting service can act on it.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the user hash (Keys.user)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the new status (online, away, busy, offline)
-- ARGV[4]  the meeting id, or ''
-- ARGV[5]  time_s
-- ARGV[6]  the status the user must be in for the change to apply, or '' (any)
-- Returns JSON {changed = true|false, previous = status before, status = status after, meeting_id = the meeting
-- entered or left ('' for none)}, or {unknown = true} for no such user.
-- prelude: once
local user_key = KEYS[2]
local status, meeting, now, only_from = ARGV[3], ARGV[4], ARGV[5], ARGV[6]

return mt_once(function()
  if redis.call('EXISTS', user_key) == 0 then return cjson.encode({unknown = true}) end
  local prev = redis.call('HGET', user_key, 'status') or 'offline'
  local prev_meeting = redis.call('HGET', user_key, 'meeting_id') or ''
  local skip = (only_from ~= '' and prev ~= only_from) or
               (status == 'online' and meeting ~= '' and prev_meeting ~= meeting)
  if skip or prev == status and (status ~= 'busy' or prev_meeting == meeting) then
    return cjson.encode({changed = false, previous = prev, status = prev, meeting_id = prev_meeting})
  end
  local now_meeting = prev_meeting
  if status == 'busy' and meeting ~= '' then now_meeting = meeting
  elseif status == 'online' or status == 'offline' then now_meeting = '' end
  redis.call('HSET', user_key, 'status', status, 'meeting_id', now_meeting, 'updated_at', now)
  local told = meeting
  if told == '' then told = prev_meeting end
  return cjson.encode({changed = true, previous = prev, status = status, meeting_id = told})
end)

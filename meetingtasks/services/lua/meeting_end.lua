-- meeting_end: a meeting ends, once per task: everyone still in it leaves with it, it leaves the live zset, and
-- its keys expire after the retention.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the meeting hash (Keys.meeting)
-- KEYS[3]  the live meetings zset (Keys.meetings_live)
-- KEYS[4]  its participants hash (Keys.meeting_participants)
-- KEYS[5]  its left hash (Keys.meeting_left)
-- KEYS[6]  its AI results hash (Keys.meeting_ai)
-- KEYS[7]  its notices hash (Keys.meeting_notices)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  time_s
-- ARGV[4]  the reason
-- ARGV[5]  the user who ended it, or ''
-- ARGV[6]  the meeting id
-- ARGV[7]  retention_s of the ended meeting's keys
-- Returns JSON {ended = true, previous = state before, participants = [user ids who were in it], started_at},
-- {already = true, reason} when it had ended, or {refused = 'unknown'} for no such meeting.
-- prelude: once
local meeting_key, live, participants_key, left_key, ai_key, notices_key = KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6], KEYS[7]
local now, reason, ended_by, meeting_id, retention_s = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]

return mt_once(function()
  local state = redis.call('HGET', meeting_key, 'state')
  if not state then return cjson.encode({refused = 'unknown'}) end
  if state == 'ended' then
    return cjson.encode({already = true, reason = redis.call('HGET', meeting_key, 'reason')})
  end
  local participants = redis.call('HKEYS', participants_key)
  for _, user in ipairs(participants) do
    redis.call('HSET', left_key, user, cjson.encode({left_at = tonumber(now), reason = 'meeting ended'}))
  end
  redis.call('DEL', participants_key)
  redis.call('HSET', meeting_key, 'state', 'ended', 'ended_at', now, 'reason', reason, 'ended_by', ended_by,
             'previous_state', state)
  redis.call('ZREM', live, meeting_id)
  for _, key in ipairs({meeting_key, left_key, ai_key, notices_key}) do redis.call('EXPIRE', key, retention_s) end
  return cjson.encode({ended = true, previous = state, participants = participants,
                       started_at = redis.call('HGET', meeting_key, 'started_at')})
end)

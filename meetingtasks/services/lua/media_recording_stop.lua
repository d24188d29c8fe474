-- media_recording_stop: a meeting's recording stops (the named one or the active one), and with end_media all of
-- its live streams stop too, once per task. What stopped expires after the retention.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the meeting's media hash (Keys.meeting_media)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the recording id, or '' (the active one, if any)
-- ARGV[4]  the recording key prefix (Keys.recording(''))
-- ARGV[5]  time_s
-- ARGV[6]  retention_s of what stops
-- ARGV[7]  end_media: '1' when the meeting's media ends (its live streams stop too), else '0'
-- ARGV[8]  the stream key prefix (Keys.stream(''))
-- ARGV[9]  the meeting id
-- Returns JSON {recording = {recording_id, started_at} | {recording_id, already = true} | false (none),
-- streams = [{stream_id, user_id, kind} stopped]}, or {refused = 'unknown' | 'other_meeting', recording_id}.
-- prelude: once
local media_key = KEYS[2]
local named_id, recording_prefix, now, retention_s, end_media, stream_prefix, meeting_id = ARGV[3], ARGV[4], ARGV[5],
  ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local STREAM_FIELD = 'stream:'

return mt_once(function()
  local id = named_id
  if id == '' then id = redis.call('HGET', media_key, 'recording') or '' end
  local rec = false
  if id ~= '' then
    local recording_key = recording_prefix .. id
    local state = redis.call('HGET', recording_key, 'state')
    if not state then return cjson.encode({refused = 'unknown', recording_id = id}) end
    if redis.call('HGET', recording_key, 'meeting_id') ~= meeting_id then
      return cjson.encode({refused = 'other_meeting', recording_id = id})
    end
    if state == 'recording' then
      redis.call('HSET', recording_key, 'state', 'stopped', 'stopped_at', now)
      redis.call('EXPIRE', recording_key, retention_s)
      rec = {recording_id = id, started_at = tonumber(redis.call('HGET', recording_key, 'started_at'))}
    else
      rec = {recording_id = id, already = true}
    end
    if redis.call('HGET', media_key, 'recording') == id then redis.call('HDEL', media_key, 'recording') end
  end
  local streams = {}
  if end_media == '1' then
    for _, field in ipairs(redis.call('HKEYS', media_key)) do
      if string.sub(field, 1, #STREAM_FIELD) == STREAM_FIELD then
        local stream_id = string.sub(field, #STREAM_FIELD + 1)
        local stream_key = stream_prefix .. stream_id
        redis.call('HSET', stream_key, 'state', 'stopped', 'stopped_at', now)
        redis.call('EXPIRE', stream_key, retention_s)
        redis.call('HDEL', media_key, field)
        streams[#streams + 1] = {stream_id = stream_id, user_id = redis.call('HGET', stream_key, 'user_id'),
                                 kind = redis.call('HGET', stream_key, 'kind')}
      end
    end
  end
  return cjson.encode({recording = rec, streams = streams})
end)

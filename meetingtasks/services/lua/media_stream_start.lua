-- media_stream_start: a stream goes live and is listed on its meeting's media hash, once per task.
-- KEYS[1]  the task's operation hash (mt_once)
-- KEYS[2]  the stream hash (Keys.stream)
-- KEYS[3]  the meeting's media hash (Keys.meeting_media: 'recording', 'stream:<id>' -> started_at)
-- ARGV[1], ARGV[2]  the outcome's field and ttl_s (mt_once)
-- ARGV[3]  the stream id
-- ARGV[4]  the meeting id
-- ARGV[5]  the user id
-- ARGV[6]  the stream's kind
-- ARGV[7]  time_s
-- Returns JSON {started = true}, or {live = true} when the stream is live already.
-- prelude: once
local stream_key, media_key = KEYS[2], KEYS[3]
local stream_id, meeting_id, user_id, kind, now = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]

return mt_once(function()
  if redis.call('HGET', stream_key, 'state') == 'live' then return cjson.encode({live = true}) end
  -- A stopped stream started again lives until it stops again.
  redis.call('PERSIST', stream_key)
  redis.call('HSET', stream_key, 'meeting_id', meeting_id, 'user_id', user_id, 'kind', kind, 'state', 'live',
             'started_at', now, 'chunks', 0)
  redis.call('HSET', media_key, 'stream:' .. stream_id, now)
  return cjson.encode({started = true})
end)

-- append_event: appends an event to its channel's stream once per event id, and announces it on pub/sub. No
-- MAXLEN: see meetingtasks.events.publisher.
-- KEYS[1]  the event id key (the once-guard)
-- KEYS[2]  the channel's stream
-- ARGV[1]  id ttl_s: how long a second append of the same id is refused
-- ARGV[2]  the event JSON
-- ARGV[3]  the pub/sub channel, '' = do not publish
-- Returns the stream entry id, or false when the id was appended already.
local id_key, stream = KEYS[1], KEYS[2]
local id_ttl_s, event, announce_channel = ARGV[1], ARGV[2], ARGV[3]

if redis.call('SET', id_key, '1', 'NX', 'EX', id_ttl_s) then
  local entry = redis.call('XADD', stream, '*', 'event', event)
  if announce_channel ~= '' then redis.call('PUBLISH', announce_channel, event) end
  return entry
end
return false

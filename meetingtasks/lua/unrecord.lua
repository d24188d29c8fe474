-- unrecord: undoes fetch's unacked entry of a fetched message the worker refuses (see Channel.refuse), in the
-- transaction that files its dead letter. The tag is read the way fetch read it (cjson), so this works for a
-- message that only cjson can read; an entry under the same tag that holds another message is left alone.
-- KEYS[1]  the unacked hash
-- KEYS[2]  the unacked index zset
-- ARGV[1]  the message as fetched
-- ARGV[2]  (optional) the tag fetch leased a message it refused under (see mt_refused_entry): that entry goes if
--          it holds this message; no task id
-- Returns the message's task id ('' if it has none, was not recorded, or was a refused one).
local unacked, unacked_index = KEYS[1], KEYS[2]
local message, refused_tag = ARGV[1], ARGV[2]

local function drop(tag)
  redis.call('HDEL', unacked, tag)
  redis.call('ZREM', unacked_index, tag)
end

if refused_tag then
  local entry = redis.call('HGET', unacked, refused_tag)
  local newline = entry and string.find(entry, '\n', 1, true)
  if newline and string.sub(entry, newline + 1) == message then drop(refused_tag) end
  return ''
end
local ok, env = pcall(cjson.decode, message)
if not ok or type(env) ~= 'table' or type(env.properties) ~= 'table' then return '' end
local tag = env.properties.delivery_tag
if type(tag) ~= 'string' then return '' end
local entry = redis.call('HGET', unacked, tag)
if not entry or string.sub(entry, 1, #message + 2) ~= '[' .. message .. ',' then return '' end
drop(tag)
local headers = env.headers
if type(headers) == 'table' and type(headers.id) == 'string' then return headers.id end
return ''
